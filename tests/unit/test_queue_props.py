"""The queue service as a pure state machine, under random command sequences (hypothesis).

A `Driver` plays the node: it applies commands at increasing log indexes, and plays the
leader's timer by applying whatever `due_commands(now)` proposes whenever time advances. It
records the history (deliveries, acks) and, after every step, checks:

* structure: counters, partition indexes and holder tables agree with the messages;
* no message is delivered to two consumers at once: a message has at most one valid receipt,
  and the in-flight messages of a partition belong to one consumer;
* FIFO per partition among first deliveries (by enqueue sequence);
* ack deletes exactly once: no message is acked twice or delivered after its ack;
* redelivery after timeout: once time passes a deadline, nothing is still in flight past it;
* dead-lettering after max_deliveries, with the delivery count and the last error;
* idempotent enqueue: one copy per client id; conservation: every accepted message is live,
  acked or dead-lettered, and nothing else exists;
* determinism: the same commands give the same results and snapshots, also across a
  snapshot/restore in the middle;
* the incremental snapshot encoding (cached message rows) equals the plain one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import msgpack
from hypothesis import event, given, settings
from hypothesis import strategies as st

from distsync.services.base import CommandError
from distsync.services.queue_model import DELAYED, INFLIGHT, READY
from distsync.services.queues import QueueService

Q = "q"
MAX_DELIVERIES = 3


def roundtrip(data: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False,
                           strict_map_key=False)


class Driver:
    def __init__(self, opts: dict[str, Any] | None = None, check: bool = True):
        self.svc = QueueService()
        self.index = 0
        self.now = 1_000_000
        self.check = check
        self.results: list[Any] = []
        self.accepted: dict[str, int] = {}  # message id -> enqueue index
        self.first: dict[int, list[int]] = defaultdict(list)  # partition -> seqs, in order
        self.receipts: dict[str, list[str]] = defaultdict(list)  # id -> receipts issued
        self.outstanding: list[str] = []  # receipts handed to "clients"
        self.acked: Counter[str] = Counter()
        self.client_ids: Counter[str] = Counter()
        opts = {"partitions": 3, "max_deliveries": MAX_DELIVERIES, "retention_ms": 0,
                "visibility_ms": 1000, **(opts or {})}
        self.apply("create", {"q": Q, "opts": opts})

    # -- commands ----------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any]) -> Any:
        self.index += 1
        try:
            res = self.svc.apply(op, args, self.index)
        except CommandError as e:
            res = e.to_result()
        assert not (isinstance(res, dict) and res.get("error") == "bad_command"), res
        self.results.append(res)
        return res

    def enqueue(self, items: list[tuple[Any, str | None, str | None]]) -> Any:
        msgs = [[body, key, cid, None, 8] for body, key, cid in items]
        res = self.apply("enqueue", {"q": Q, "m": msgs, "now": self.now})
        if "error" not in res:
            dup = set(res["dup"])
            for i, (_, _, cid) in enumerate(items):
                if i not in dup:
                    mid = cid if cid is not None else f"~{res['index']}.{i}"
                    self.accepted[mid] = res["index"]
                    if cid is not None:
                        self.client_ids[cid] += 1
        self.verify()
        return res

    def dequeue(self, consumer: str, n: int, vis: int | None = None, rid: str | None = None,
                q: str = Q, ack: list[str] | None = None) -> list[dict[str, Any]]:
        args = {"q": q, "c": consumer, "max": n, "vis": vis, "now": self.now, "rid": rid}
        before = {}
        if ack:
            args["ack"] = ack
            before = {r: self.svc.by_receipt(self.svc.queues[Q], r) for r in ack}
        res = self.apply("dequeue", args)
        for r, m in before.items():
            if m is not None and r not in res["ack_unknown"]:
                self.acked[m.id] += 1
        got = res["messages"]
        if q == Q and not res.get("replayed"):
            for m in got:
                assert self.acked[m["id"]] == 0, f"acked message {m['id']} delivered again"
                self.receipts[m["id"]].append(m["receipt"])
                self.outstanding.append(m["receipt"])
                if m["deliveries"] == 1:
                    self.first[m["partition"]].append(m["seq"])
        self.verify()
        return got

    def ack(self, receipts: list[str]) -> Any:
        before = {r: self.svc.by_receipt(self.svc.queues[Q], r) for r in receipts}
        res = self.apply("ack", {"q": Q, "r": receipts, "now": self.now})
        for r, m in before.items():
            if m is not None and r not in res.get("unknown", receipts):
                self.acked[m.id] += 1
        self.verify()
        return res

    def nack(self, receipts: list[str], delay: int = 0, error: str = "boom") -> Any:
        res = self.apply("nack", {"q": Q, "r": receipts, "delay": delay, "error": error,
                                  "now": self.now})
        self.verify()
        return res

    def tick(self, ms: int) -> None:
        """Time passes; the leader's timer proposes what is due and it is applied."""
        self.now += ms
        for op, args in self.svc.due_commands(self.now):
            self.apply(op, args)
        if self.check:
            for q in self.svc.queues.values():
                for m in q.messages.values():
                    assert m.state == READY or m.deadline > self.now, (
                        f"{m.id} still {m.state} past its deadline")
        self.verify()

    def restart(self) -> None:
        """Replace the service by one restored from a snapshot (a follower catching up)."""
        fresh = QueueService()
        fresh.restore(roundtrip(self.svc.snapshot()))
        assert roundtrip(fresh.snapshot()) == roundtrip(self.svc.snapshot())
        self.svc = fresh
        self.verify()

    # -- invariants --------------------------------------------------------------------

    def verify(self) -> None:
        if not self.check:
            return
        for q in self.svc.queues.values():
            check_structure(q)
        # The snapshot from cached rows is the plain encoding: no change missed its cache.
        assert b"".join(self.svc.snapshot_chunks()) == msgpack.packb(
            self.svc.snapshot(), use_bin_type=True)
        q = self.svc.queues[Q]
        # At most one valid receipt per message.
        for mid, rs in self.receipts.items():
            valid = [r for r in rs if self.svc.by_receipt(q, r) is not None]
            assert len(valid) <= 1, (mid, valid)
        # FIFO per partition among first deliveries.
        for p, seqs in self.first.items():
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (p, seqs)
        # Exactly-once ack, conservation, one copy per client id.
        assert all(n == 1 for n in self.acked.values()), self.acked
        dlq = self.svc.queues.get(Q + ".dlq")
        dead = {m.id for m in dlq.messages.values()} if dlq else set()
        live = set(q.messages)
        gone = set(self.acked)
        assert live | gone | dead == set(self.accepted), (
            set(self.accepted) ^ (live | gone | dead))
        assert not (live & gone) and not (live & dead) and not (gone & dead)
        assert all(n == 1 for n in self.client_ids.values())
        # Dead letters carry their history; nothing live exceeds max_deliveries.
        limit = q.opts["max_deliveries"] or float("inf")
        for m in (dlq.messages.values() if dlq else []):
            assert m.dead is not None and m.dead[0] == Q and m.dead[1] == limit
            assert m.dead[2]
        assert all(m.deliveries <= limit for m in q.messages.values())


def check_structure(q: Any) -> None:
    msgs = list(q.messages.values())
    assert q.inflight == sum(m.state == INFLIGHT for m in msgs)
    assert q.delayed == sum(m.state == DELAYED for m in msgs)
    assert q.bytes == sum(m.size for m in msgs)
    for i, part in enumerate(q.parts):
        ready = [m for m in msgs if m.part == i and m.state == READY]
        assert part.ready == len(ready), (i, part.ready, len(ready))
        holders = Counter(m.consumer for m in msgs if m.part == i and m.state == INFLIGHT)
        assert dict(holders) == part.holders, (i, holders, part.holders)
        # One consumer at a time per partition.
        assert len(part.holders) <= 1, (i, part.holders)
        # Every READY message is reachable from the partition's indexes.
        indexed = {id(m) for m in part.fresh} | {id(m) for _, m in part.returned}
        assert all(id(m) in indexed for m in ready)
    for c in q.consumers.values():
        assert set(c.inflight) == {m.id for m in msgs
                                   if m.state == INFLIGHT and m.consumer == c.id}
    assert all(m.consumer in q.consumers for m in msgs if m.state == INFLIGHT)
    owned = sorted(p for c in q.consumers.values() for p in c.partitions)
    assert owned == (list(range(len(q.parts))) if q.consumers else [])
    counts = [len(c.partitions) for c in q.consumers.values()]
    assert not counts or max(counts) - min(counts) <= 1


# -- random command sequences ---------------------------------------------------------------

CONSUMERS = ["c0", "c1", "c2"]
enq = st.tuples(st.just("enq"), st.lists(st.tuples(
    st.integers(0, 99), st.sampled_from([None, None, "k0", "k1", "k2", "k3"]),
    st.sampled_from([None, None, None, "id0", "id1", "id2", "id3"]),
), min_size=1, max_size=5))
deq = st.tuples(st.just("deq"), st.sampled_from(CONSUMERS), st.integers(1, 3),
                st.sampled_from([None, 300, 2000]))
ack = st.tuples(st.just("ack"), st.integers(0, 50), st.integers(1, 3))
nack = st.tuples(st.just("nack"), st.integers(0, 50), st.sampled_from([0, 0, 400]))
tick = st.tuples(st.just("tick"), st.sampled_from([50, 350, 1200, 6000]))
action = st.one_of(
    enq, deq, deq, ack, nack, tick,
    st.tuples(st.just("leave"), st.sampled_from(CONSUMERS)),
    st.tuples(st.just("heartbeat"), st.sampled_from(CONSUMERS)),
    st.tuples(st.just("restart")),
)
actions = st.lists(action, min_size=1, max_size=60)


def run(d: Driver, acts: list[tuple[Any, ...]]) -> None:
    for a in acts:
        kind = a[0]
        if kind == "enq":
            d.enqueue(a[1])
        elif kind == "deq":
            acks = None
            if len(a) > 4 and a[4] and d.outstanding:  # ack-and-fetch in one command
                acks = d.outstanding[-a[4]:]
            d.dequeue(a[1], a[2], a[3], ack=acks)
        elif kind in ("ack", "nack"):
            if not d.outstanding:
                continue
            i = a[1] % len(d.outstanding)
            if kind == "ack":
                d.ack(d.outstanding[i:i + a[2]])
            else:
                d.nack([d.outstanding[i]], delay=a[2])
        elif kind == "tick":
            d.tick(a[1])
        elif kind == "leave":
            if a[1] in d.svc.queues[Q].consumers:
                d.apply("leave", {"q": Q, "c": a[1], "now": d.now})
                d.verify()
        elif kind == "heartbeat":
            d.apply("heartbeat", {"q": Q, "c": a[1], "now": d.now})
            d.verify()
        elif kind == "restart":
            d.restart()


@settings(max_examples=150, deadline=None)
@given(actions)
def test_invariants_hold_for_any_command_sequence(acts: list) -> None:
    d = Driver()
    run(d, acts)
    stats = d.svc.queues[Q].stats
    for k in ("acked", "redelivered", "dead_lettered", "duplicates"):
        event(f"{k}: {'yes' if stats[k] else 'no'}")


def random_workload(seed: int, steps: int = 300) -> list[tuple[Any, ...]]:
    """A long, busy history (hypothesis' own lists stay short and shallow): producers,
    consumers that ack most messages, nack some, sit on others until they time out, leave
    and come back, time passing, and restarts from snapshots."""
    import random

    rng = random.Random(seed)
    out: list[tuple[Any, ...]] = []
    kinds = ["enq"] * 25 + ["deq"] * 30 + ["ack"] * 20 + ["nack"] * 7 + ["tick"] * 12 + [
        "leave", "leave", "heartbeat", "heartbeat", "restart", "restart"]
    for _ in range(steps):
        k = rng.choice(kinds)
        if k == "enq":
            out.append(("enq", [
                (rng.randrange(100), rng.choice([None, None, "k0", "k1", "k2", "k3", "k4"]),
                 rng.choice([None, None, None, f"id{rng.randrange(30)}"]))
                for _ in range(rng.randint(1, 5))
            ]))
        elif k == "deq":
            out.append(("deq", rng.choice(CONSUMERS), rng.randint(1, 4),
                        rng.choice([None, 300, 2000]), rng.choice([0, 0, 0, 1, 3])))
        elif k == "ack":
            out.append(("ack", rng.randrange(1000), rng.randint(1, 3)))
        elif k == "nack":
            out.append(("nack", rng.randrange(1000), rng.choice([0, 0, 400])))
        elif k == "tick":
            out.append(("tick", rng.choice([50, 350, 1200, 6000])))
        elif k in ("leave", "heartbeat"):
            out.append((k, rng.choice(CONSUMERS)))
        else:
            out.append(("restart",))
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32))
def test_invariants_hold_for_long_random_workloads(seed: int) -> None:
    d = Driver()
    run(d, random_workload(seed))
    stats = d.svc.queues[Q].stats
    for k in ("acked", "redelivered", "dead_lettered", "duplicates", "nacked"):
        event(f"{k}: {'yes' if stats[k] else 'no'}")
    event(f"consumers expired: {any(isinstance(r, dict) and r.get('expired') for r in d.results)}")


@settings(max_examples=60, deadline=None)
@given(actions)
def test_same_commands_same_results_and_state(acts: list) -> None:
    a, b = Driver(check=False), Driver(check=False)
    run(a, [x for x in acts if x[0] != "restart"])
    run(b, acts)  # b also snapshots and restores along the way
    assert roundtrip(a.results) == roundtrip(b.results)
    assert roundtrip(a.svc.snapshot()) == roundtrip(b.svc.snapshot())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32))
def test_same_results_with_restarts_on_long_workloads(seed: int) -> None:
    acts = random_workload(seed, 200)
    a, b = Driver(check=False), Driver(check=False)
    run(a, [x for x in acts if x[0] != "restart"])
    run(b, acts)
    assert roundtrip(a.results) == roundtrip(b.results)
    assert roundtrip(a.svc.snapshot()) == roundtrip(b.svc.snapshot())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.booleans())
def test_everything_accepted_is_eventually_acked_or_dead_lettered(seed: int, short: bool) -> None:
    """At-least-once: after any history, a consumer that keeps dequeuing and acking (with
    time passing for timeouts and silent consumers) drains the queue completely."""
    d = Driver()
    run(d, random_workload(seed, 40 if short else 200))
    for _ in range(200):
        got = d.dequeue(f"drain{seed}", 10)
        if got:
            d.ack([m["receipt"] for m in got])
        elif not d.svc.queues[Q].messages:
            break
        else:
            d.tick(6000)
    assert not d.svc.queues[Q].messages
    dlq = d.svc.queues.get(Q + ".dlq")
    dead = set(dlq.messages) if dlq else set()
    assert set(d.acked) | dead == set(d.accepted)
