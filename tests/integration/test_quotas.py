"""Quotas enforced by the replicated state machine, on a real 3-node cluster with small limits
(README "Quotas"): each refusal is 429 (counts) or 507 (space) `quota_exceeded` naming its
limit, changes nothing, and is the same through every node; freeing makes room again.

Reproduces issue 15 item 5 (the session limit raced: it was checked outside the log, so
concurrent opens went past it) and item 4 (nothing bounded the number of queues or the total
state).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from cluster_helpers import diag, raw_request, ready, wait_until

from distsync.local import LocalCluster

PER_CLIENT, QUEUES, LOCKS, WAITERS, KEYS, SPACE = 5, 3, 4, 2, 30, 600_000
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    args = ["--max-sessions-per-client", str(PER_CLIENT), "--max-queues", str(QUEUES),
            "--max-locks", str(LOCKS), "--max-waiters", str(WAITERS),
            "--max-kv-keys", str(KEYS), "--quota-bytes", str(SPACE)]
    with LocalCluster(3, extra_args=args) as c:
        ready(c)
        yield c


def call(lc: LocalCluster, nid: str, method: str, path: str, body: Any = None,
         ) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    status, _, got = raw_request(method, lc.nodes[nid].url + path, data, JSON)
    return status, got


def refused(got: tuple[int, Any], limit: str, status: int = 429) -> bool:
    code, body = got
    return (code == status and isinstance(body, dict) and body.get("error") == "quota_exceeded"
            and body.get("limit") == limit and bool(body.get("message")))


def limits_in_force(lc: LocalCluster) -> None:
    """The leader replicates its configured limits soon after it is elected."""
    def applied() -> bool:
        for nid in lc.nodes:
            st = lc.status(nid)
            if st is None or st.get("quotas", {}).get("max_queues") != QUEUES:
                return False
        return True

    wait_until(lc, applied, 15, "every node to apply the configured quotas")


async def test_session_quota_is_exact_under_concurrency(lc: LocalCluster) -> None:
    """Item 5: 40 concurrent opens by one client through all three nodes: exactly the quota
    passes, the rest get 429 quota_exceeded; closing one makes room for exactly one more."""
    ready(lc)
    limits_in_force(lc)
    nodes = sorted(lc.nodes)
    conn = aiohttp.TCPConnector(local_addr=("127.0.0.5", 0), limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def open_(i: int) -> tuple[int, Any]:
            url = f"{lc.nodes[nodes[i % 3]].url}/v1/sessions"
            async with s.post(url, json={"ttl_ms": 60_000}) as r:
                return r.status, await r.json()

        got = await asyncio.gather(*(open_(i) for i in range(40)))
        ok = [b["session"] for c, b in got if c == 200]
        assert len(ok) == PER_CLIENT, got
        assert all(refused(g, "max_sessions_per_client") for g in got if g[0] != 200), got
        async with s.delete(f"{lc.nodes[nodes[0]].url}/v1/sessions/{ok[0]}") as r:
            assert r.status == 200
        again = await asyncio.gather(*(open_(i) for i in range(6)))
        assert sorted(c for c, _ in again) == [200] + [429] * 5, again
        for sid in ok[1:] + [b["session"] for c, b in again if c == 200]:
            async with s.delete(f"{lc.nodes[nodes[0]].url}/v1/sessions/{sid}") as r:
                assert r.status == 200


def test_queue_quota(lc: LocalCluster) -> None:
    """Item 4: the number of queues is bounded; changing an existing queue's options is not
    a new queue; deleting one makes room."""
    leader = ready(lc)
    limits_in_force(lc)
    follower = next(n for n in sorted(lc.nodes) if n != leader)
    for i in range(QUEUES):
        assert call(lc, leader, "PUT", f"/v1/queues/quota-{i}")[0] == 200
    for nid in (leader, follower):
        assert refused(call(lc, nid, "PUT", "/v1/queues/quota-x"), "max_queues")
    assert call(lc, leader, "GET", "/v1/queues/quota-x")[0] == 404
    assert call(lc, follower, "PUT", "/v1/queues/quota-0", {"visibility_ms": 5000})[0] == 200
    assert call(lc, leader, "DELETE", "/v1/queues/quota-0")[0] == 200
    assert call(lc, follower, "PUT", "/v1/queues/quota-x")[0] == 200
    for name in ("quota-1", "quota-2", "quota-x"):
        assert call(lc, leader, "DELETE", f"/v1/queues/{name}")[0] == 200


async def test_lock_and_waiter_quotas(lc: LocalCluster) -> None:
    leader = ready(lc)
    limits_in_force(lc)
    a = call(lc, leader, "POST", "/v1/sessions", {"ttl_ms": 60_000})[1]["session"]
    b = call(lc, leader, "POST", "/v1/sessions", {"ttl_ms": 60_000})[1]["session"]
    c = call(lc, leader, "POST", "/v1/sessions", {"ttl_ms": 60_000})[1]["session"]
    try:
        for i in range(LOCKS):
            got = call(lc, leader, "POST", f"/v1/locks/q{i}/acquire", {"session": a})
            assert got[0] == 200 and got[1]["granted"], got
        assert refused(call(lc, leader, "POST", "/v1/locks/q-new/acquire", {"session": a}),
                       "max_locks")
        # Reacquiring a held lock, or trying one (no wait), is no new lock and no waiter.
        assert call(lc, leader, "POST", "/v1/locks/q0/acquire", {"session": a})[0] == 200
        assert call(lc, leader, "POST", "/v1/locks/q0/acquire", {"session": b})[0] == 409

        async def wait_for(sid: str, lock: str) -> tuple[int, Any]:
            return await asyncio.to_thread(call, lc, leader, "POST", f"/v1/locks/{lock}/acquire",
                                           {"session": sid, "wait_ms": 3000})

        waits = [asyncio.ensure_future(wait_for(b, "q1")), asyncio.ensure_future(wait_for(c, "q1"))]

        def queued() -> bool:
            return len(call(lc, leader, "GET", "/v1/locks/q1")[1]["waiters"]) == WAITERS

        await asyncio.to_thread(wait_until, lc, queued, 10, "two waiters on q1")
        third = await asyncio.to_thread(call, lc, leader, "POST", "/v1/locks/q2/acquire",
                                        {"session": b, "wait_ms": 3000})
        assert refused(third, "max_waiters"), third
        assert call(lc, leader, "POST", "/v1/locks/q1/release", {"session": a})[0] == 200
        done = await asyncio.gather(*waits)
        # The head of the queue gets q1; the other waits behind it until its wait_ms is up.
        assert sorted((code, body.get("error")) for code, body in done) == [
            (200, None), (409, "timeout")], done
    finally:
        for sid in (a, b, c):
            call(lc, leader, "DELETE", f"/v1/sessions/{sid}")


def test_kv_key_quota(lc: LocalCluster) -> None:
    leader = ready(lc)
    limits_in_force(lc)
    have = len(call(lc, leader, "GET", "/v1/kv?prefix=")[1]["keys"])
    for i in range(KEYS - have):
        assert call(lc, leader, "PUT", f"/v1/kv/keys/{i}", {"value": i})[0] == 200
    got = call(lc, leader, "PUT", "/v1/kv/keys/one-more", {"value": 1})
    assert refused(got, "max_kv_keys"), got
    assert call(lc, leader, "PUT", "/v1/kv/keys/0", {"value": "overwrite"})[0] == 200
    assert call(lc, leader, "DELETE", "/v1/kv/keys/0")[0] == 200
    assert call(lc, leader, "PUT", "/v1/kv/keys/one-more", {"value": 1})[0] == 200
    for i in range(1, KEYS - have):
        assert call(lc, leader, "DELETE", f"/v1/kv/keys/{i}")[0] == 200
    assert call(lc, leader, "DELETE", "/v1/kv/keys/one-more")[0] == 200


def _alarms(lc: LocalCluster) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for nid in lc.nodes:
        st = lc.status(nid)
        out[nid] = None if st is None else st.get("alarms")
    return out


def _alarm_metric(lc: LocalCluster, nid: str) -> float:
    status, _, text = raw_request("GET", lc.nodes[nid].url + "/metrics")
    assert status == 200
    line = next(x for x in text.splitlines() if x.startswith("distsync_quota_alarm "))
    return float(line.split()[1])


def test_space_quota_alarm(lc: LocalCluster) -> None:
    """Item 4: past max_state_bytes the NOSPACE alarm is raised on every node; writes that
    add state get 507 quota_exceeded while reads and deletes work; freeing clears it."""
    leader = ready(lc)
    limits_in_force(lc)
    big = "x" * 60_000
    written = []
    for i in range(KEYS - 1):
        got = call(lc, leader, "PUT", f"/v1/kv/space/{i}", {"value": big})
        if got[0] != 200:
            break
        written.append(f"space/{i}")

    def alarmed() -> bool:
        return all(a == ["NOSPACE"] for a in _alarms(lc).values())

    wait_until(lc, alarmed, 15, "the NOSPACE alarm on every node")
    assert all(_alarm_metric(lc, nid) == 1 for nid in lc.nodes)
    for nid in lc.nodes:
        got = call(lc, nid, "PUT", "/v1/kv/space/more", {"value": 1})
        assert refused(got, "max_state_bytes", 507), got
        assert refused(call(lc, nid, "PUT", "/v1/queues/space-q"), "max_state_bytes", 507)
        assert refused(call(lc, nid, "POST", "/v1/sessions", {}), "max_state_bytes", 507)
    assert written, diag(lc, "no write passed before the alarm")
    assert call(lc, leader, "GET", f"/v1/kv/{written[0]}")[1]["value"] == big
    for key in written:
        assert call(lc, leader, "DELETE", f"/v1/kv/{key}")[0] == 200

    def cleared() -> bool:
        return all(a == [] for a in _alarms(lc).values())

    wait_until(lc, cleared, 15, "the alarm to clear once space was freed")
    assert all(_alarm_metric(lc, nid) == 0 for nid in lc.nodes)
    assert call(lc, leader, "PUT", "/v1/kv/space/more", {"value": 1})[0] == 200
    assert call(lc, leader, "DELETE", "/v1/kv/space/more")[0] == 200
