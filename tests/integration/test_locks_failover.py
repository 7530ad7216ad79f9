"""Locks on a real 3-node cluster through failures.

* 20 concurrent clients (each its own Client and session) contend on 4 locks, exclusive and
  shared, while the leader is SIGKILLed and later restarted. Every hold is recorded as the
  interval [grant token, release index) in log-index space, and a history checker proves that
  no exclusive hold of a lock overlaps any other hold of it, that exclusive tokens are unique,
  and that each client saw its tokens increase. While it holds, each client also "uses" a
  fenced resource that rejects a token below one it has seen, and a real-time occupancy check
  catches two exclusive holders at once.
* A client process holding a lock is SIGKILLed: its session stops being renewed, the leader
  expires it after its TTL, and the next waiter gets the lock with a higher token.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cluster_helpers import agreed_leader, async_wait_until, diag, ready, wait_caught_up

from distsync.client import Client, DistSyncError
from distsync.local import LocalCluster, http_json

LOCKS = ["h0", "h1", "h2", "h3"]
CLIENTS = 20


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as lc:
        ready(lc)
        yield lc


# -- the history checker --------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    client: int
    lock: str
    mode: str
    token: int  # log index of the grant
    released: int  # log index of the release


def check_history(holds: list[Hold]) -> list[str]:
    """Violations of mutual exclusion and token order in a history of completed holds.

    Holds are intervals [token, released) of log indexes. An exclusive hold may not overlap
    any other hold of its lock, nor share its token; shared holds may overlap each other.
    Each client's tokens for a lock strictly increase in the order it got them."""
    bad: list[str] = []
    by_lock: dict[str, list[Hold]] = defaultdict(list)
    for h in holds:
        if not h.token < h.released:
            bad.append(f"{h}: released at or before its grant")
        by_lock[h.lock].append(h)
    for lock, hs in by_lock.items():
        for e in (h for h in hs if h.mode == "exclusive"):
            for o in hs:
                if o is e:
                    continue
                if o.token == e.token:
                    bad.append(f"{lock}: token {e.token} granted to {e} and {o}")
                elif not (e.released <= o.token or o.released <= e.token):
                    bad.append(f"{lock}: exclusive {e} overlaps {o}")
    per_client: dict[tuple[int, str], list[int]] = defaultdict(list)
    for h in holds:  # in the order each client recorded them
        per_client[(h.client, h.lock)].append(h.token)
    for (client, lock), toks in per_client.items():
        if any(b <= a for a, b in zip(toks, toks[1:], strict=False)):
            bad.append(f"client {client} saw tokens of {lock} go back or repeat: {toks}")
    return bad


def test_checker_catches_violations() -> None:
    ok = [Hold(1, "a", "exclusive", 10, 12), Hold(2, "a", "shared", 12, 20),
          Hold(3, "a", "shared", 12, 15), Hold(1, "a", "exclusive", 20, 21)]
    assert check_history(ok) == []
    assert check_history([*ok, Hold(4, "a", "exclusive", 14, 30)])  # overlaps the shared
    assert check_history([Hold(1, "a", "exclusive", 10, 15), Hold(2, "a", "exclusive", 14, 16)])
    assert check_history([Hold(1, "a", "exclusive", 10, 15), Hold(2, "a", "exclusive", 10, 16)])
    assert check_history([Hold(1, "a", "shared", 10, 15), Hold(2, "a", "exclusive", 12, 13)])
    assert check_history([Hold(1, "a", "exclusive", 20, 25), Hold(1, "a", "exclusive", 10, 12)])
    assert check_history([Hold(1, "b", "exclusive", 12, 12)])


# -- 20 clients through a leader kill -------------------------------------------------------


class Resource:
    """A protected resource: remembers the highest exclusive token it accepted per lock and
    refuses older ones (how fencing is meant to be used), and counts current users."""

    def __init__(self) -> None:
        self.max_token: dict[str, int] = defaultdict(int)
        self.inside: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.violations: list[str] = []

    def enter(self, client: int, lock: str, mode: str, token: int) -> None:
        users = self.inside[lock]
        if mode == "exclusive":
            if token <= self.max_token[lock]:
                self.violations.append(f"{lock}: token {token} <= {self.max_token[lock]}")
            self.max_token[lock] = token
            if users:
                self.violations.append(f"{lock}: client {client} exclusive while {users}")
        elif any(m == "exclusive" for _, m in users):
            self.violations.append(f"{lock}: client {client} shared while {users}")
        users.append((client, mode))

    def leave(self, client: int, lock: str, mode: str) -> None:
        self.inside[lock].remove((client, mode))


async def _client_loop(
    i: int, addrs: list[str], stop: asyncio.Event, holds: list[Hold], res: Resource,
    errors: list[str], lost: list[str],
) -> None:
    rng = random.Random(i)
    async with Client(addrs, timeout=30) as c:
        s = c.session(ttl=10)
        s.on_lost.append(lambda sess: lost.append(sess.id))
        await s.open()
        try:
            while not stop.is_set():
                lock = rng.choice(LOCKS)
                mode = "exclusive" if rng.random() < 0.7 else "shared"
                try:
                    g = await s.acquire(lock, mode=mode, wait=30)
                except DistSyncError as e:
                    errors.append(f"client {i} acquire {lock}: {e!r}")
                    await asyncio.sleep(0.05)
                    continue
                res.enter(i, lock, mode, g.token)
                await asyncio.sleep(rng.random() * 0.01)
                res.leave(i, lock, mode)
                try:
                    r = await s.release(lock)
                except DistSyncError as e:
                    errors.append(f"client {i} release {lock}: {e!r}")
                    continue
                holds.append(Hold(i, lock, mode, g.token, r["index"]))
        finally:
            await s.close()


async def test_twenty_clients_through_leader_kill_and_restart(cluster: LocalCluster) -> None:
    lc = cluster
    holds: list[Hold] = []
    errors: list[str] = []
    lost: list[str] = []
    res = Resource()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_client_loop(i, lc.addrs, stop, holds, res, errors, lost))
        for i in range(CLIENTS)
    ]
    try:
        await async_wait_until(lc, lambda: len(holds) >= 80, 60, "80 holds before the kill")
        old = await asyncio.to_thread(agreed_leader, lc)
        await asyncio.to_thread(lc.kill, old, signal.SIGKILL)
        survivors = [n for n in lc.nodes if n != old]
        await asyncio.to_thread(agreed_leader, lc, 20.0, survivors)
        n = len(holds)
        await async_wait_until(lc, lambda: len(holds) >= n + 80, 60,
                               "80 more holds under the new leader")
        lc.start_node(old)
        lead = await asyncio.to_thread(agreed_leader, lc, 30.0)
        await asyncio.to_thread(wait_caught_up, lc, old, lead, 30.0)
        n = len(holds)
        await async_wait_until(lc, lambda: len(holds) >= n + 40, 60,
                               "40 more holds after the restart")
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=60)
        for t in pending:
            t.cancel()
    assert not pending, diag(lc, f"{len(pending)} clients hung")
    for t in done:
        t.result()
    assert not errors, diag(lc, f"{len(errors)} lock calls failed: {errors[:5]}")
    assert not lost, diag(lc, f"sessions lost across the failover: {lost}")
    assert not res.violations, res.violations[:5]
    bad = check_history(holds)
    assert not bad, diag(lc, f"history violations: {bad[:10]}")
    modes = {h.mode for h in holds}
    assert modes == {"exclusive", "shared"} and len({h.client for h in holds}) == CLIENTS
    print(f"{len(holds)} holds by {CLIENTS} clients on {len(LOCKS)} locks, leader {old} "
          f"killed and restarted, history consistent")

    # Every node agrees on the end state: nothing held, no waiters, no cycles.
    lead = await asyncio.to_thread(agreed_leader, lc)
    target = lc.status(lead)["commit"]
    for nid, nd in lc.nodes.items():
        await async_wait_until(lc, lambda nid=nid: (lc.status(nid) or {}).get(
            "applied", 0) >= target, 30, f"{nid} to apply {target}")
        code, listing = http_json("GET", f"{nd.url}/v1/locks?consistency=stale")
        assert code == 200 and listing["locks"] == [], (nid, listing)
        code, dl = http_json("GET", f"{nd.url}/v1/locks/deadlocks?consistency=stale")
        assert code == 200 and dl["cycles"] == [], (nid, dl)


# -- a client process dies -----------------------------------------------------------------


HOLDER = textwrap.dedent("""
    import sys, time
    from distsync.client import BlockingClient
    with BlockingClient(sys.argv[1].split(",")) as c:
        s = c.session(ttl=3.0).open()
        g = s.acquire("victim", wait=10)
        print(s.id, g.token, flush=True)
        time.sleep(600)
""")


async def test_killed_client_loses_its_lock_after_ttl(cluster: LocalCluster) -> None:
    lc = cluster
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ",".join(lc.addrs)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        t_held = time.monotonic()
        assert line, proc.stderr.read() if proc.poll() is not None else "no output"
        victim_sid, victim_token = line.split()[0], int(line.split()[1])
        async with Client(lc.addrs) as c, c.session(ttl=10) as s:
            waiter = asyncio.create_task(s.acquire("victim", wait=60))

            def queued() -> bool:
                code, info = http_json("GET", f"{lc.nodes['n1'].url}/v1/locks/victim"
                                              "?consistency=stale")
                return code == 200 and [w["session"] for w in info["waiters"]] == [s.id]

            await async_wait_until(lc, queued, 30, "the waiter to be queued")
            # The holder is alive and renewing: past its TTL it still holds the lock.
            await async_wait_until(lc, lambda: time.monotonic() - t_held > 3.5, 10, "3.5 s")
            st = await c.request_or_raise("GET", f"/v1/sessions/{victim_sid}")
            assert [h["lock"] for h in st["holds"]] == ["victim"]
            assert not waiter.done()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            t_kill = time.monotonic()
            grant = await asyncio.wait_for(waiter, 60)
            took = time.monotonic() - t_kill
            assert grant.token > victim_token
            with pytest.raises(DistSyncError) as ei:
                await c.request_or_raise("GET", f"/v1/sessions/{victim_sid}")
            assert ei.value.status == 404 and ei.value.code == "session_not_found"
            info = await c.request_or_raise("GET", "/v1/locks/victim")
            assert info["holders"] == [{"session": s.id, "mode": "exclusive",
                                        "token": grant.token}]
            print(f"waiter granted {took:.2f}s after SIGKILL of the holder (TTL 3 s)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
