"""Semaphore and barrier APIs over HTTP against a real 3-node cluster (the shared one).

* Bad input (unknown session, bad permit counts, a conflicting N or n, malformed bodies and
  names, bad queries) gets the documented 4xx JSON error, via the leader and via a
  follower, and changes nothing: the seeded semaphore and double barrier are as they were.
* The async client: permits are counted across clients with increasing tokens, FIFO
  hand-off through a long poll, try-acquire, a wait that times out; the lock/semaphore
  deadlock is refused; a barrier's waiters are released by its removal (not before); a
  double barrier of three participants; the blocking client; the metrics.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cluster_helpers import diag, raw_request, refusal_problem, via_url

from distsync.client import BlockingClient, Client
from distsync.client.barriers import BarrierTimeout, NConflict
from distsync.client.locks import Deadlock, LockTimeout
from distsync.client.semaphores import PermitsConflict
from distsync.local import LocalCluster, http_json

JSON = {"Content-Type": "application/json"}


def call(lc: LocalCluster, method: str, path: str, body: Any = None,
         via: str = "leader") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    status, _, got = raw_request(method, via_url(lc, via) + path, data, JSON)
    return status, got


@dataclass
class Seed:
    holder: str  # holds 1 of 2 permits of "seed-sem", and entered "seed-db" (n=2)
    other: str  # a live session holding nothing


@pytest.fixture(scope="module")
def seed(shared_cluster: LocalCluster) -> Iterator[Seed]:
    lc = shared_cluster
    with BlockingClient(lc.addrs) as c:
        a, b = c.session(ttl=60).open(), c.session(ttl=60).open()
        assert a.id is not None and b.id is not None
        st, got = call(lc, "POST", "/v1/semaphores/seed-sem/acquire",
                       {"session": a.id, "permits": 2})
        assert st == 200 and got["granted"], got
        st, got = call(lc, "POST", "/v1/double-barriers/seed-db/enter",
                       {"session": a.id, "n": 2})
        assert st == 200 and got["entered"] and not got["ready"], got
        yield Seed(a.id, b.id)
        a.close()
        b.close()


def _cases(s: Seed) -> list[tuple[str, str, str, Any, int, str]]:
    acq, rel = "/v1/semaphores/seed-sem/acquire", "/v1/semaphores/seed-sem/release"
    ent, lv = "/v1/double-barriers/seed-db/enter", "/v1/double-barriers/seed-db/leave"
    o = s.other
    return [
        ("unknown session", "POST", acq, {"session": "s999999", "permits": 2}, 404,
         "session_not_found"),
        ("conflicting N", "POST", acq, {"session": o, "permits": 3}, 409, "permits_conflict"),
        ("count above N", "POST", acq, {"session": o, "permits": 2, "count": 3}, 400,
         "invalid_request"),
        ("zero permits", "POST", acq, {"session": o, "permits": 0}, 400, "invalid_request"),
        ("negative count", "POST", acq, {"session": o, "permits": 2, "count": -1}, 400,
         "invalid_request"),
        ("permits missing", "POST", acq, {"session": o}, 400, "invalid_request"),
        ("permits as string", "POST", acq, {"session": o, "permits": "2"}, 400,
         "invalid_request"),
        ("try-acquire of too many", "POST", acq, {"session": o, "permits": 2, "count": 2},
         409, "timeout"),
        ("release not held", "POST", rel, {"session": o}, 409, "not_held"),
        ("release unknown session", "POST", rel, {"session": "s999999"}, 404,
         "session_not_found"),
        ("bad name", "POST", "/v1/semaphores/a%20b/acquire", {"session": o, "permits": 1},
         400, "invalid_semaphore_name"),
        ("name with slash", "GET", "/v1/semaphores/a%2Fb", None, 400,
         "invalid_semaphore_name"),
        ("wait id not a number", "GET", "/v1/semaphores/seed-sem/waits/x", None, 400,
         "invalid_request"),
        ("unknown wait", "GET", "/v1/semaphores/seed-sem/waits/99999999", None, 404,
         "not_found"),
        ("list limit zero", "GET", "/v1/semaphores?limit=0", None, 400, "invalid_query"),
        ("unknown field", "POST", acq, {"session": o, "permits": 2, "ttl": 1}, 400,
         "invalid_request"),
        ("body not json", "POST", acq, b"{nope", 400, "invalid_json"),
        ("enter unknown session", "POST", ent, {"session": "s999999", "n": 2}, 404,
         "session_not_found"),
        ("enter conflicting n", "POST", ent, {"session": o, "n": 3}, 409, "n_conflict"),
        ("enter n zero", "POST", ent, {"session": o, "n": 0}, 400, "invalid_request"),
        ("enter n missing", "POST", ent, {"session": o}, 400, "invalid_request"),
        ("leave not entered", "POST", lv, {"session": o}, 409, "not_entered"),
        ("enter poll bad session", "GET", "/v1/double-barriers/seed-db/enter?session=%21",
         None, 400, "invalid_query"),
        ("enter poll not entered", "GET", f"/v1/double-barriers/seed-db/enter?session={o}",
         None, 409, "not_entered"),
        ("leave poll without round", "GET", "/v1/double-barriers/seed-db/leave", None, 400,
         "invalid_query"),
        ("barrier set unknown session", "PUT", "/v1/barriers/seed-b", {"session": "s999999"},
         404, "session_not_found"),
        ("barrier set bad body", "PUT", "/v1/barriers/seed-b", {"owner": 1}, 400,
         "invalid_request"),
        ("barrier wait bad generation", "GET", "/v1/barriers/seed-b/wait?generation=x",
         None, 400, "invalid_query"),
        ("barrier wait negative wait", "GET", "/v1/barriers/seed-b/wait?wait_ms=-1", None,
         400, "invalid_query"),
        ("barrier bad name", "DELETE", "/v1/barriers/bad$name", None, 400,
         "invalid_barrier_name"),
    ]


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_bad_input_gets_documented_errors_and_changes_nothing(
    shared_cluster: LocalCluster, seed: Seed, via: str
) -> None:
    lc = shared_cluster
    before = [call(lc, "GET", p) for p in ("/v1/semaphores/seed-sem",
                                           "/v1/double-barriers/seed-db",
                                           "/v1/barriers/seed-b")]
    assert before[0][1]["free"] == 1 and before[1][1]["entered"] == [seed.holder]
    failures = []
    for name, method, path, body, status, error in _cases(seed):
        data = body if isinstance(body, bytes) else (
            None if body is None else json.dumps(body).encode())
        problem = refusal_problem(method, via_url(lc, via) + path, data, JSON,
                                  status=status, error=error)
        if problem:
            failures.append(f"{name}: {problem}")
    assert not failures, diag(lc, "\n".join(failures))
    after = [call(lc, "GET", p) for p in ("/v1/semaphores/seed-sem",
                                          "/v1/double-barriers/seed-db",
                                          "/v1/barriers/seed-b")]
    assert after == before


# -- semaphores through the client -------------------------------------------------------------


async def test_permits_across_clients_fifo_and_tokens(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    async with Client(lc.addrs) as c1, Client(lc.addrs) as c2:
        sem1, sem2 = c1.semaphore("api-pool", permits=2), c2.semaphore("api-pool", permits=2)
        p1 = await sem1.acquire()
        p2 = await sem2.acquire()
        assert p2.token > p1.token and p1.session_id != p2.session_id
        assert await sem1.try_acquire() is None
        with pytest.raises(LockTimeout):
            await sem2.acquire(timeout=0.3)
        info = await sem1.info()
        assert info["free"] == 0 and info["waiters"] == []  # the timed-out wait left
        waiter = asyncio.ensure_future(sem2.acquire(timeout=20))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        assert [w["session"] for w in (await sem1.info())["waiters"]]
        await p1.release()
        p3 = await waiter
        assert p3.token > p2.token
        with pytest.raises(PermitsConflict) as ei:
            await c1.semaphore("api-pool", permits=5).acquire(timeout=0)
        assert ei.value.permits == 2
        await p2.release()
        async with sem1.acquire() as p4:
            assert p4.token > p3.token
        await p3.release()
    with BlockingClient(lc.addrs) as bc:
        with bc.semaphore("api-pool", permits=2, count=2).acquire(timeout=5) as bp:
            assert bp.count == 2 and bp.token > p4.token
            assert bc.semaphore("api-pool", permits=2).try_acquire() is None
        assert bc.semaphore("api-pool", permits=2).info()["holders"] == []
        with bc.session(ttl=30) as s:  # permits of two semaphores on one session of yours
            with bc.semaphore("api-pool", permits=2, session=s).acquire() as a, \
                    bc.semaphore("api-pool-2", permits=1, session=s).acquire() as b:
                assert a.session_id == b.session_id == s.id
            assert s.alive  # released, not closed


async def test_lock_and_semaphore_deadlock_is_refused(shared_cluster: LocalCluster) -> None:
    async with Client(shared_cluster.addrs) as c:
        async with c.session(ttl=30) as a, c.session(ttl=30) as b:
            await a.acquire("api-dl-lock")
            permit = await c.semaphore("api-dl-sem", permits=1, session=b).acquire()
            waiting = asyncio.ensure_future(
                c.semaphore("api-dl-sem", permits=1, session=a).acquire(timeout=20))
            await asyncio.sleep(0.5)
            with pytest.raises(Deadlock) as ei:
                await b.acquire("api-dl-lock", wait=5)
            assert "semaphore/api-dl-sem" in ei.value.locks
            await permit.release()
            got = await waiting
            assert got.token > permit.token
            await got.release()


# -- barriers ------------------------------------------------------------------------------------


async def test_barrier_waiters_are_released_by_removal_only(shared_cluster: LocalCluster
                                                              ) -> None:
    async with Client(shared_cluster.addrs) as c:
        b = c.barrier("api-barrier")
        await b.wait(timeout=1)  # not raised: at once
        async with b:
            assert await b.raised()
            waiters = [asyncio.ensure_future(c.barrier("api-barrier").wait(timeout=30))
                       for _ in range(3)]
            with pytest.raises(BarrierTimeout):
                await c.barrier("api-barrier").wait(timeout=0.5)
            await asyncio.sleep(4.5)  # past one long-poll window: the waiters poll again
            assert not any(w.done() for w in waiters)
            removed_at = time.monotonic()
        await asyncio.gather(*waiters)
        assert time.monotonic() - removed_at < 5
        assert not await b.raised()
        async with c.barrier("api-barrier").wait():  # the context-manager form
            pass


async def test_double_barrier_of_three(shared_cluster: LocalCluster) -> None:
    async with Client(shared_cluster.addrs) as c:
        order: list[str] = []

        async def participant(i: int, delay: float) -> int:
            db = c.double_barrier("api-db", n=3)
            await asyncio.sleep(delay)
            order.append(f"arrive{i}")
            async with db:
                order.append(f"in{i}")
                await asyncio.sleep(delay)
                order.append(f"out{i}")
            order.append(f"done{i}")
            assert db.round is not None
            return db.round

        rounds = await asyncio.gather(*(participant(i, 0.3 * i) for i in range(3)))
        assert len(set(rounds)) == 1
        assert max(order.index(f"arrive{i}") for i in range(3)) < min(
            order.index(f"in{i}") for i in range(3)), order
        assert max(order.index(f"out{i}") for i in range(3)) < min(
            order.index(f"done{i}") for i in range(3)), order
        with pytest.raises(NConflict):
            async with c.session(ttl=30) as s:
                await c.request_or_raise("POST", "/v1/double-barriers/api-db2/enter",
                                         {"session": s.id, "n": 2}, mutating=True)
                await c.double_barrier("api-db2", n=3).enter(timeout=1)
        with pytest.raises(BarrierTimeout):
            await c.double_barrier("api-db3", n=2).enter(timeout=0.5)
        assert (await c.double_barrier("api-db3", n=2).info())["entered"] == []


def test_metrics_are_exported(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    url = lc.nodes[sorted(lc.nodes)[0]].url + "/metrics"
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    for name in ("distsync_semaphores_grants_total", "distsync_semaphores_permits_held",
                 "distsync_barriers_raised", "distsync_barriers_rounds_full_total",
                 "distsync_double_barriers_participants"):
        assert name in text, name
    assert http_json("GET", lc.nodes[sorted(lc.nodes)[0]].url + "/v1/semaphores")[0] == 200
