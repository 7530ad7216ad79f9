"""The lock API over HTTP against a real 3-node cluster.

* Bad input (unknown session, release of an unheld lock, bad mode, negative or oversized
  wait, bad names, malformed bodies) gets the documented 4xx JSON error, via the leader and
  via a follower, and changes nothing: afterwards the seeded lock and session are exactly as
  they were.
* Request-Id makes session open, acquire and release apply at most once.
* Waiting acquires are long polls served in FIFO order with increasing tokens; a wait that
  expires gets 409 `timeout` and leaves the queue; a 2-cycle gets 409 `deadlock` with the cycle.
* A session kept alive outlives its TTL; one that is not is expired by the leader, which
  hands its locks to the next waiter.
* Listing, the deadlock report, session info, metrics, and the blocking client.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cluster_helpers import (
    agreed_leader,
    async_wait_until,
    diag,
    raw_request,
    ready,
    refusal_problem,
    via_url,
)

from distsync.client import BlockingClient, Client, DistSyncError
from distsync.client.locks import Deadlock, LockTimeout, NotHeld, SessionLost
from distsync.local import LocalCluster

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as lc:
        ready(lc)
        yield lc


def _data(body: Any) -> bytes | None:
    """A request body: bytes as they are, anything else as JSON (None: no body)."""
    if body is None or isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


def call(lc: LocalCluster, method: str, path: str, body: Any = None, via: str = "leader",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, got = raw_request(method, via_url(lc, via) + path, _data(body),
                                 {**JSON, **(headers or {})})
    return status, got


# -- bad input ------------------------------------------------------------------------------


@dataclass
class Seed:
    holder: str  # a session holding "seed" exclusively
    other: str  # a live session holding nothing
    token: int


@pytest.fixture(scope="module")
def seed(cluster: LocalCluster) -> Iterator[Seed]:
    with BlockingClient(cluster.addrs) as c:
        a, b = c.session(ttl=60).open(), c.session(ttl=60).open()
        g = a.acquire("seed")
        yield Seed(a.id, b.id, g.token)
        a.close()
        b.close()


def _cases(s: Seed) -> list[tuple[str, str, str, Any, int, str]]:
    acq = "/v1/locks/seed/acquire"
    rel = "/v1/locks/seed/release"
    return [
        ("unknown session", "POST", acq, {"session": "s999999"}, 404, "session_not_found"),
        ("release by unknown session", "POST", rel, {"session": "s999999"}, 404,
         "session_not_found"),
        ("release of an unheld lock", "POST", rel, {"session": s.other}, 409, "not_held"),
        ("release of a never-used lock", "POST", "/v1/locks/nothing/release",
         {"session": s.holder}, 409, "not_held"),
        ("try-lock of a held lock", "POST", acq, {"session": s.other}, 409, "timeout"),
        ("upgrade without a hold", "POST", acq, {"session": s.other, "upgrade": True}, 409,
         "not_held"),
        ("bad mode", "POST", acq, {"session": s.other, "mode": "write"}, 400,
         "invalid_request"),
        ("negative wait", "POST", acq, {"session": s.other, "wait_ms": -1}, 400,
         "invalid_request"),
        ("wait over an hour", "POST", acq, {"session": s.other, "wait_ms": 3_600_001}, 400,
         "invalid_request"),
        ("wait as string", "POST", acq, {"session": s.other, "wait_ms": "10"}, 400,
         "invalid_request"),
        ("upgrade not bool", "POST", acq, {"session": s.other, "upgrade": 1}, 400,
         "invalid_request"),
        ("session missing", "POST", acq, {"mode": "shared"}, 400, "invalid_request"),
        ("session as number", "POST", acq, {"session": 5}, 400, "invalid_request"),
        ("unknown field", "POST", acq, {"session": s.other, "ttl": 5}, 400, "invalid_request"),
        ("body not json", "POST", acq, b"{nope", 400, "invalid_json"),
        ("body an array", "POST", rel, b"[]", 400, "invalid_json"),
        ("lock name with space", "POST", "/v1/locks/a%20b/acquire", {"session": s.other}, 400,
         "invalid_lock_name"),
        ("lock name too long", "POST", f"/v1/locks/{'x' * 300}/acquire",
         {"session": s.other}, 400, "invalid_lock_name"),
        ("reserved lock name", "POST", "/v1/locks/deadlocks/acquire", {"session": s.other},
         400, "invalid_lock_name"),
        ("get bad lock name", "GET", "/v1/locks/bad$name", None, 400, "invalid_lock_name"),
        ("ttl too short", "POST", "/v1/sessions", {"ttl_ms": 10}, 400, "invalid_request"),
        ("ttl as string", "POST", "/v1/sessions", {"ttl_ms": "5000"}, 400, "invalid_request"),
        ("keepalive unknown session", "POST", "/v1/sessions/s999999/keepalive", None, 404,
         "session_not_found"),
        ("close unknown session", "DELETE", "/v1/sessions/s999999", None, 404,
         "session_not_found"),
        ("get unknown session", "GET", "/v1/sessions/s999999", None, 404, "session_not_found"),
        ("bad session id", "GET", "/v1/sessions/bad!id", None, 400, "invalid_request"),
        ("wait id not a number", "GET", "/v1/locks/seed/waits/abc", None, 400,
         "invalid_request"),
        ("unknown wait", "GET", "/v1/locks/seed/waits/99999999", None, 404, "not_found"),
        ("list limit zero", "GET", "/v1/locks?limit=0", None, 400, "invalid_query"),
        ("session list limit zero", "GET", "/v1/sessions?limit=0", None, 400, "invalid_query"),
        ("session list limit word", "GET", "/v1/sessions?limit=all", None, 400,
         "invalid_query"),
        ("list bogus consistency", "GET", "/v1/locks?consistency=maybe", None, 400,
         "invalid_query"),
        ("request id too long", "POST", rel, {"session": s.other}, 400, "invalid_request_id"),
        ("put on a lock", "PUT", "/v1/locks/seed", {}, 405, "method_not_allowed"),
    ]


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_bad_input_gets_documented_errors_and_changes_nothing(
    cluster: LocalCluster, seed: Seed, via: str
) -> None:
    lc = cluster
    before_lock = call(lc, "GET", "/v1/locks/seed")
    before_other = call(lc, "GET", f"/v1/sessions/{seed.other}")
    assert before_lock[0] == 200 and before_lock[1]["holders"][0]["token"] == seed.token
    failures = []
    for name, method, path, body, status, error in _cases(seed):
        hdrs = {"Request-Id": "r" * 200} if name == "request id too long" else {}
        problem = refusal_problem(method, via_url(lc, via) + path, _data(body),
                                  {**JSON, **hdrs}, status=status, error=error)
        if problem:
            failures.append(f"{name}: {problem}")
    assert not failures, diag(lc, "\n".join(failures))
    assert call(lc, "GET", "/v1/locks/seed") == before_lock
    after_other = call(lc, "GET", f"/v1/sessions/{seed.other}")
    assert after_other[1]["holds"] == before_other[1]["holds"] == []
    assert after_other[1]["waits"] == []


# -- Request-Id --------------------------------------------------------------------------------


def test_request_id_applies_open_acquire_and_release_at_most_once(cluster: LocalCluster) -> None:
    lc = cluster
    rid = {"Request-Id": f"t-{uuid.uuid4()}"}
    s1 = call(lc, "POST", "/v1/sessions", {"ttl_ms": 30000}, headers=rid)
    s2 = call(lc, "POST", "/v1/sessions", {"ttl_ms": 30000}, "follower", headers=rid)
    assert s1[0] == 200 and s1 == s2
    sid = s1[1]["session"]
    acq_rid = {"Request-Id": f"t-{uuid.uuid4()}"}
    g1 = call(lc, "POST", "/v1/locks/rid-lock/acquire", {"session": sid}, headers=acq_rid)
    assert g1[0] == 200 and g1[1]["granted"]
    rel_rid = {"Request-Id": f"t-{uuid.uuid4()}"}
    r1 = call(lc, "POST", "/v1/locks/rid-lock/release", {"session": sid}, headers=rel_rid)
    assert r1[0] == 200 and r1[1]["released"]
    # Replays answer the first result and apply nothing: the lock stays free...
    assert call(lc, "POST", "/v1/locks/rid-lock/acquire", {"session": sid}, "follower",
                headers=acq_rid) == g1
    assert call(lc, "GET", "/v1/locks/rid-lock")[1]["holders"] == []
    # ... and a replayed release does not release a newer hold.
    g2 = call(lc, "POST", "/v1/locks/rid-lock/acquire", {"session": sid})
    assert g2[1]["token"] > g1[1]["token"]
    assert call(lc, "POST", "/v1/locks/rid-lock/release", {"session": sid},
                headers=rel_rid) == r1
    assert call(lc, "GET", "/v1/locks/rid-lock")[1]["holders"][0]["token"] == g2[1]["token"]
    assert call(lc, "DELETE", f"/v1/sessions/{sid}")[1]["released"] == ["rid-lock"]


# -- waiting, FIFO, timeouts, deadlocks ----------------------------------------------------------


async def test_fifo_handoff_with_increasing_tokens(cluster: LocalCluster) -> None:
    lc = cluster
    async with Client(lc.addrs) as c:
        ss = [await c.session(ttl=30).open() for _ in range(4)]
        try:
            first = await ss[0].acquire("fifo")
            order: list[tuple[int, int]] = []

            async def take(i: int, mode: str) -> None:
                g = await ss[i].acquire("fifo", mode=mode, wait=30)
                order.append((i, g.token))
                await asyncio.sleep(0.05)
                await ss[i].release("fifo")

            tasks = []
            for i, mode in ((1, "exclusive"), (2, "shared"), (3, "shared")):
                tasks.append(asyncio.create_task(take(i, mode)))
                await async_wait_until(
                    lc, lambda i=i: len((_stale(lc, "/v1/locks/fifo") or {}).get("waiters", []))
                    == i, 20, f"{i} waiters queued")
            info = (await c.request_or_raise("GET", "/v1/locks/fifo"))
            assert [w["session"] for w in info["waiters"]] == [s.id for s in ss[1:]]
            await ss[0].release("fifo")
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert [i for i, _ in order][0] == 1 and sorted(i for i, _ in order[1:]) == [2, 3]
            toks = [t for _, t in order]
            assert toks[0] > first.token and toks[1] == toks[2] > toks[0]  # shared run: one grant
        finally:
            for s in ss:
                await s.close()


def _stale(lc: LocalCluster, path: str) -> Any:
    status, _, body = raw_request("GET", f"{lc.nodes['n1'].url}{path}?consistency=stale")
    return body if status == 200 else None


async def test_wait_timeout_and_deadlock(cluster: LocalCluster) -> None:
    lc = cluster
    async with Client(lc.addrs) as c, c.session(ttl=30) as a, c.session(ttl=30) as b:
        await a.acquire("dl-x")
        await b.acquire("dl-y")
        # The session list: both, with their locks and the leader's lease view (tracked from
        # the leader's next timer round after the open), in pages.
        listed: dict[str, Any] = {}

        async def leases_tracked() -> bool:
            got = await c.request_or_raise("GET", "/v1/sessions?limit=1000")
            listed.update({x["session"]: x for x in got["sessions"]})
            return all(listed[s.id]["lease_remaining_ms"] is not None for s in (a, b))

        deadline = time.monotonic() + 20
        while not await leases_tracked():
            assert time.monotonic() < deadline, f"leases never tracked: {listed}"
            await asyncio.sleep(0.05)
        assert listed[a.id]["holds"] == ["dl-x"] and listed[b.id]["holds"] == ["dl-y"]
        assert listed[a.id]["waits"] == [] and listed[a.id]["ttl_ms"] == 30_000
        assert 0 < listed[a.id]["lease_remaining_ms"] <= 30_000
        first = await c.request_or_raise("GET", "/v1/sessions?limit=1")
        assert len(first["sessions"]) == 1 and first["next"] == first["sessions"][0]["session"]
        rest = await c.request_or_raise("GET", f"/v1/sessions?after={first['next']}&limit=1000")
        assert first["next"] not in {x["session"] for x in rest["sessions"]}
        t0 = time.monotonic()
        with pytest.raises(LockTimeout) as ei:
            await b.acquire("dl-x", wait=0.3)
        assert ei.value.status == 409 and time.monotonic() - t0 >= 0.3
        assert (await c.request_or_raise("GET", "/v1/locks/dl-x"))["waiters"] == []
        pending = asyncio.create_task(a.acquire("dl-y", wait=30))
        await async_wait_until(
            lc, lambda: len((_stale(lc, "/v1/locks/dl-y") or {}).get("waiters", [])) == 1,
            20, "a to wait for dl-y")
        with pytest.raises(Deadlock) as dl:
            await b.acquire("dl-x", wait=30)
        assert dl.value.status == 409 and dl.value.cycle == [b.id, a.id]
        assert dl.value.locks == ["dl-x", "dl-y"]
        report = await c.request_or_raise("GET", "/v1/locks/deadlocks")
        assert report["cycles"] == []
        # The refusal is remembered as the 409 named it (what the console draws).
        last = report["recent"][-1]
        assert (last["session"], last["lock"]) == (b.id, "dl-x")
        assert (last["cycle"], last["locks"]) == (dl.value.cycle, dl.value.locks)
        x = await c.request_or_raise("GET", "/v1/locks/dl-x")
        assert x["holders"][0]["session"] == a.id and x["waiters"] == []
        await b.release("dl-y")
        assert (await asyncio.wait_for(pending, 20)).lock == "dl-y"
        with pytest.raises(NotHeld):
            await b.release("dl-y")


# -- leases ------------------------------------------------------------------------------------


async def test_keepalive_outlives_ttl_and_silent_session_expires(cluster: LocalCluster) -> None:
    lc = cluster
    async with Client(lc.addrs) as c:
        kept = await c.session(ttl=2.0).open()
        t_kept = time.monotonic()
        stalled = await c.session(ttl=1.5).open()
        stalled._task.cancel()  # a client that stops renewing (hung, paused)
        lost: list[str] = []
        stalled.on_lost.append(lambda sess: lost.append(sess.id))
        res = await c.request_or_raise("POST", "/v1/sessions", {"ttl_ms": 1500}, mutating=True)
        silent = res["session"]  # opened by hand: nobody renews it
        await c.request_or_raise("POST", "/v1/locks/lease-a/acquire", {"session": silent},
                                 mutating=True)
        async with c.session(ttl=30) as waiter:
            t0 = time.monotonic()
            g = await waiter.acquire("lease-a", wait=30)  # granted when `silent` expires
            assert time.monotonic() - t0 >= 1.0  # not before its lease could have run out
            assert g.token > 0
        with pytest.raises(DistSyncError) as ei:
            await c.request_or_raise("POST", f"/v1/sessions/{silent}/keepalive")
        assert ei.value.status == 404 and ei.value.code == "session_not_found"
        # `kept` is well past its 2 s TTL and still alive, renewed in the background.
        await async_wait_until(lc, lambda: time.monotonic() - t_kept > 4.5, 10, "4.5 s")
        assert kept.alive
        info = await c.request_or_raise("GET", f"/v1/sessions/{kept.id}")
        assert 0 < info["lease_remaining_ms"] <= 2000
        await kept.close()
        # The stalled client learns it lost its session at its next call.
        assert not stalled.alive
        with pytest.raises(SessionLost):
            await stalled.keepalive()
        assert stalled.lost and lost == [stalled.id]
        with pytest.raises(SessionLost):
            await stalled.acquire("lease-b")
        text = raw_request("GET", f"{lc.nodes[agreed_leader(lc)].url}/metrics")[2]
        for name in ("distsync_locks_grants_total", "distsync_locks_expiries_total",
                     "distsync_locks_held", "distsync_locks_waiters",
                     "distsync_locks_deadlocks_total", "distsync_locks_acquire_latency_seconds"):
            assert name in text, name
        expiries = [ln for ln in text.splitlines()
                    if ln.startswith("distsync_locks_expiries_total")]
        assert float(expiries[0].split()[-1]) >= 1


# -- listing and the blocking client -------------------------------------------------------------


def test_listing_pages_and_blocking_client(cluster: LocalCluster) -> None:
    lc = cluster
    with BlockingClient(lc.addrs) as c:
        with c.session(ttl=30) as s:
            for i in range(5):
                s.acquire(f"page-{i}", mode="shared")
            got, after = [], ""
            while True:
                params = {"prefix": "page-", "limit": "2", **({"after": after} if after else {})}
                res = c.request_or_raise("GET", "/v1/locks", params=params)
                got += [x["lock"] for x in res["locks"]]
                if res["next"] is None:
                    break
                after = res["next"]
            assert got == [f"page-{i}" for i in range(5)]
            with s.lock("page-0", mode="shared") as again:  # reentrant, same token
                assert again.mode == "shared"
        with c.lock("blocking", ttl=5) as g:
            assert g.alive and g.token > 0
            held = c.request_or_raise("GET", "/v1/locks/blocking")
            assert held["holders"][0]["token"] == g.token
        assert c.request_or_raise("GET", "/v1/locks/blocking")["holders"] == []
        assert c.request_or_raise("GET", "/v1/locks", params={"prefix": "page-"})["locks"] == []
