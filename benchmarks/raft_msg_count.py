#!/usr/bin/env python3
"""How many Raft messages the leader emits per loop iteration, in memory (no disk, no network).

Supporting evidence for benchmarks/README.md: `distsync.node.Node` calls
`Raft.propose([one_payload])` once per client request and `Raft.read_index(ctx)` once per
linearizable read. When k requests arrive between two iterations of the node's loop, this
counts the APPEND / HEARTBEAT messages that produces, and what one batched call would produce.

    python benchmarks/raft_msg_count.py
"""

from __future__ import annotations

import random

from distsync.raft.core import Config, Raft
from distsync.raft.types import MsgType, PersistedState, Role

IDS = ("n1", "n2", "n3")


def _pump(rs: dict[str, Raft]) -> None:
    for _ in range(100):
        moved = False
        for r in rs.values():
            while r.has_ready():
                rd = r.ready()
                r.advance(rd)
                for m in rd.messages:
                    rs[m.dst].step(m)
                    moved = True
        if not moved:
            return


def cluster() -> dict[str, Raft]:
    peers = {i: f"addr-{i}" for i in IDS}
    rs = {
        i: Raft(i, PersistedState(), Config(election_ticks=10, heartbeat_ticks=1),
                rng=random.Random(1))
        for i in IDS
    }
    for r in rs.values():
        r.bootstrap(peers)
    _pump(rs)
    rs["n1"].campaign()
    _pump(rs)
    assert rs["n1"].role == Role.LEADER
    return rs


def writes(k: int, batched: bool) -> tuple[int, int]:
    rs = cluster()
    lead = rs["n1"]
    if batched:
        lead.propose([b"x" * 120] * k)
    else:
        for _ in range(k):
            lead.propose([b"x" * 120])
    apps = [m for m in lead.ready().messages if m.type == MsgType.APPEND]
    for m in apps:
        rs[m.dst].step(m)
    resps = sum(
        1 for f in IDS[1:] for m in rs[f].ready().messages if m.type == MsgType.APPEND_RESP
    )
    return len(apps), resps


def reads(k: int) -> int:
    lead = cluster()["n1"]
    for i in range(k):
        lead.read_index(f"read-{i}".encode())
    return sum(1 for m in lead.ready().messages if m.type == MsgType.HEARTBEAT)


def main() -> None:
    print("k requests in one loop iteration of the leader (3 voters):")
    print(f"{'k':>4}  {'APPEND+RESP, propose() per request':>36}  {'one propose(k payloads)':>24}"
          f"  {'HEARTBEATs, read_index() per read':>34}")
    for k in (1, 4, 16, 64):
        a1, r1 = writes(k, batched=False)
        a2, r2 = writes(k, batched=True)
        print(f"{k:>4}  {a1:>17} + {r1:<16}  {a2:>11} + {r2:<10}  {reads(k):>34}")


if __name__ == "__main__":
    main()
