"""Leader election over HTTP and through the Python client, on a real 3-node cluster.

* Bad input (bad names, unknown sessions, a proclaim or resign by a non-leader or with a
  stale token, malformed bodies and queries) gets the documented 4xx JSON error, via the
  leader and via a follower, and changes nothing.
* Request-Id makes a campaign apply at most once.
* Campaigns are served FIFO with increasing fencing tokens, a waiting campaign is a long
  poll, a closed session hands leadership on, and observe streams each change in order.
* The client recipe, async and blocking: campaign as a context manager, proclaim, resign on
  exit, leader(), observe(), and the lost-leadership signal when the session goes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import (
    async_wait_until,
    diag,
    raw_request,
    ready,
    refusal_problem,
    via_url,
    wait_until,
)

from distsync.client import BlockingClient, Client
from distsync.client.elections import ElectionTimeout, LeadershipLost, NotLeader
from distsync.local import LocalCluster

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as lc:
        ready(lc)
        yield lc


def call(lc: LocalCluster, method: str, path: str, body: Any = None, via: str = "leader",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else
                                      json.dumps(body).encode())
    code, _, got = raw_request(method, via_url(lc, via) + path, data, {**JSON, **(headers or {})})
    return code, got


def session(lc: LocalCluster, ttl_ms: int = 30_000) -> str:
    code, got = call(lc, "POST", "/v1/sessions", {"ttl_ms": ttl_ms})
    assert code == 200, got
    return got["session"]


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_bad_input_gets_documented_errors_and_changes_nothing(cluster: LocalCluster,
                                                              via: str) -> None:
    lc = cluster
    leader_sid, other = session(lc), session(lc)
    name = f"bad-{via}"
    code, won = call(lc, "POST", f"/v1/elections/{name}/campaign",
                     {"session": leader_sid, "value": "L"})
    assert code == 200 and won["elected"], won
    token = won["token"]
    before = call(lc, "GET", f"/v1/elections/{name}")
    base = f"/v1/elections/{name}"
    cases: list[tuple[str, str, str, Any, int, str]] = [
        ("bad name", "POST", "/v1/elections/a%20b/campaign", {"session": other, "value": 1},
         400, "invalid_election_name"),
        ("name with slash", "POST", "/v1/elections/a%2Fb/campaign",
         {"session": other, "value": 1}, 400, "invalid_election_name"),
        ("bad name on read", "GET", "/v1/elections/a%21b", None, 400, "invalid_election_name"),
        ("bad name on observe", "GET", "/v1/elections/a%21b/observe", None, 400,
         "invalid_election_name"),
        ("unknown session", "POST", f"{base}/campaign", {"session": "s999999", "value": 1},
         404, "session_not_found"),
        ("no session", "POST", f"{base}/campaign", {"value": 1}, 400, "invalid_request"),
        ("session not a string", "POST", f"{base}/campaign", {"session": 5, "value": 1}, 400,
         "invalid_request"),
        ("unknown field", "POST", f"{base}/campaign", {"session": other, "x": 1}, 400,
         "invalid_request"),
        ("not json", "POST", f"{base}/campaign", b"{nope", 400, "invalid_json"),
        ("proclaim by a non-leader", "POST", f"{base}/proclaim",
         {"session": other, "token": token, "value": "x"}, 409, "not_leader"),
        ("proclaim with a stale token", "POST", f"{base}/proclaim",
         {"session": leader_sid, "token": token - 1, "value": "x"}, 409, "not_leader"),
        ("proclaim without a token", "POST", f"{base}/proclaim",
         {"session": leader_sid, "value": "x"}, 400, "invalid_request"),
        ("proclaim with token 0", "POST", f"{base}/proclaim",
         {"session": leader_sid, "token": 0, "value": "x"}, 400, "invalid_request"),
        ("proclaim in an empty election", "POST", "/v1/elections/nobody-here/proclaim",
         {"session": leader_sid, "token": token, "value": "x"}, 409, "not_leader"),
        ("resign by a non-candidate", "POST", f"{base}/resign", {"session": other}, 409,
         "not_candidate"),
        ("resign with a stale token", "POST", f"{base}/resign",
         {"session": leader_sid, "token": token + 1}, 409, "not_leader"),
        ("bad candidate id", "GET", f"{base}/candidates/abc", None, 400, "invalid_request"),
        ("unknown candidacy", "GET", f"{base}/candidates/99999999", None, 404, "not_found"),
        ("bad after_revision", "GET", f"{base}/observe?after_revision=x", None, 400,
         "invalid_query"),
        ("bad progress_ms", "GET", f"{base}/observe?progress_ms=1", None, 400,
         "invalid_query"),
        ("bad consistency", "GET", f"{base}?consistency=maybe", None, 400, "invalid_query"),
        ("bad limit", "GET", "/v1/elections?limit=0", None, 400, "invalid_query"),
        ("request id too long", "POST", f"{base}/campaign", {"session": other, "value": 1},
         400, "invalid_request_id"),
    ]
    failures = []
    for what, method, path, body, status, error in cases:
        hdrs = {"Request-Id": "r" * 200} if what == "request id too long" else {}
        data = None if body is None else (body if isinstance(body, bytes) else
                                          json.dumps(body).encode())
        problem = refusal_problem(method, via_url(lc, via) + path, data, {**JSON, **hdrs},
                                  status=status, error=error)
        if problem:
            failures.append(f"{what}: {problem}")
    assert not failures, diag(lc, "\n".join(failures))
    assert call(lc, "GET", f"/v1/elections/{name}") == before
    assert before[1]["leader"]["value"] == "L" and before[1]["waiting"] == []


def test_campaign_request_id_applies_at_most_once(cluster: LocalCluster) -> None:
    lc = cluster
    a, b = session(lc), session(lc)
    call(lc, "POST", "/v1/elections/rid/campaign", {"session": a, "value": "a"})
    rid = {"Request-Id": f"t-{uuid.uuid4()}"}
    first = call(lc, "POST", "/v1/elections/rid/campaign", {"session": b, "value": "b"},
                 headers=rid)
    again = call(lc, "POST", "/v1/elections/rid/campaign", {"session": b, "value": "b"},
                 "follower", headers=rid)
    assert first[0] == 200 and first[1]["waiting"] and again == first
    other = call(lc, "POST", "/v1/elections/rid/campaign", {"session": b, "value": "c"},
                 headers=rid)
    assert other[0] == 422 and other[1]["error"] == "request_id_mismatch"
    info = call(lc, "GET", "/v1/elections/rid")[1]
    assert [w["session"] for w in info["waiting"]] == [b]


async def test_fifo_tokens_long_poll_and_observe(cluster: LocalCluster) -> None:
    lc = cluster
    sids = [session(lc) for _ in range(3)]
    seen: list[dict[str, Any]] = []
    async with Client(lc.addrs) as c:
        async def observer() -> None:
            async for ev in c.election("fifo").observe(progress_ms=200):
                seen.append(ev)

        obs = asyncio.create_task(observer())
        await async_wait_until(lc, lambda: seen, 10, "the observer's first line")
        assert seen[0]["leader"] is None
        first = await c.request_or_raise("POST", "/v1/elections/fifo/campaign",
                                         {"session": sids[0], "value": 0}, mutating=True)
        waits = [asyncio.create_task(c.request_or_raise(
            "POST", "/v1/elections/fifo/campaign", {"session": s, "value": i},
            mutating=True)) for i, s in enumerate(sids[1:], 1)]
        await async_wait_until(lc, lambda: call(lc, "GET", "/v1/elections/fifo")[1][
            "candidates"] == 2, 10, "two waiting candidates")
        tokens = [first["token"]]
        for i in range(2):
            await c.request_or_raise("POST", "/v1/elections/fifo/resign",
                                     {"session": sids[i], "token": tokens[-1]}, mutating=True)
            got = await waits[i]
            while got.get("waiting"):  # the long poll's window ended first: go on polling
                got = await c.request_or_raise(
                    "GET", f"/v1/elections/fifo/candidates/{got['candidate']}")
            assert got["elected"] and got["session"] == sids[i + 1], got
            tokens.append(got["token"])
        assert tokens == sorted(set(tokens))
        await c.request_or_raise("POST", "/v1/elections/fifo/proclaim",
                                 {"session": sids[2], "token": tokens[-1], "value": "new"},
                                 mutating=True)
        await c.request_or_raise("DELETE", f"/v1/sessions/{sids[2]}", mutating=True)
        await async_wait_until(lc, lambda: len(seen) >= 6, 10, "six observed changes")
        obs.cancel()
    leaders = [(ev["leader"] or {}).get("session") for ev in seen[1:6]]
    values = [(ev["leader"] or {}).get("value") for ev in seen[1:6]]
    assert leaders == [sids[0], sids[1], sids[2], sids[2], None], seen
    assert values == [0, 1, 2, "new", None]
    revs = [ev["revision"] for ev in seen[1:6]]
    assert revs == sorted(set(revs)) and not any(ev.get("resync") for ev in seen)


async def test_client_recipe_campaign_proclaim_resign_and_lost_signal(
        cluster: LocalCluster) -> None:
    lc = cluster
    async with Client(lc.addrs) as c:
        e = c.election("recipe", ttl=2)
        async with e.campaign("a") as one:
            assert one.is_leader() and one.value == "a"
            second = asyncio.create_task(e.campaign("b", timeout=30)._run())
            await async_wait_until(lc, lambda: call(lc, "GET", "/v1/elections/recipe")[1][
                "candidates"] == 1, 10, "the second candidate waits")
            assert not second.done()
            await one.proclaim("a2")
            assert (await e.leader())["value"] == "a2"
        two = await second  # elected when the first block resigned
        assert two.token > one.token and not one.lost and one.resigned
        with pytest.raises(NotLeader):
            await one.proclaim("stale")
        with pytest.raises(ElectionTimeout):
            await e.campaign("c", timeout=0.5)
        assert (await e.info())["waiting"] == []  # the timed-out candidacy was withdrawn
        lost: list[int] = []
        two.on_lost = lambda lead: lost.append(lead.token)
        # The cluster ends the session behind the client's back (as an expiry would): its
        # next keepalive is refused, and the leadership is lost.
        code, _ = await asyncio.to_thread(call, lc, "DELETE", f"/v1/sessions/{two.session_id}")
        assert code == 200
        await asyncio.wait_for(two.lost_event.wait(), 10)
        assert two.lost and not two.is_leader() and lost == [two.token]
        with pytest.raises(LeadershipLost):
            await two.resign()
        assert await e.leader() is None


def test_blocking_client_campaign_and_observe(cluster: LocalCluster) -> None:
    lc = cluster
    with BlockingClient(lc.addrs) as c:
        e = c.election("blocking")
        events: list[dict[str, Any]] = []

        def observe() -> None:
            for ev in e.observe(progress_ms=200):
                events.append(ev)
                if len(events) == 4:
                    return

        t = threading.Thread(target=observe)
        t.start()
        wait_until(lc, lambda: events, 10, "the observer's first line")
        with e.campaign({"addr": "h:1"}) as lead:
            assert lead.is_leader() and lead.token > 0
            assert e.leader()["value"] == {"addr": "h:1"}
            lead.proclaim({"addr": "h:2"})
        assert e.leader() is None
        t.join(15)
        assert not t.is_alive()
    assert [(ev["leader"] or {}).get("value") for ev in events] == [
        None, {"addr": "h:1"}, {"addr": "h:2"}, None]


def test_metrics_count_elections_on_every_node(cluster: LocalCluster) -> None:
    """Every node applies the same commands, so every node's counters and gauges agree once
    it has applied them."""
    lc = cluster
    sid = session(lc)
    code, won = call(lc, "POST", "/v1/elections/metered/campaign", {"session": sid, "value": 1})
    assert code == 200 and won["elected"]

    def gauge(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))

    def scraped() -> dict[str, str]:
        out = {}
        for nid, nd in lc.nodes.items():
            _, _, text = raw_request("GET", f"{nd.url}/metrics")
            out[nid] = text if isinstance(text, str) else ""
        return out

    wait_until(lc, lambda: all(gauge(t, "distsync_elections_led") >= 1
                               for t in scraped().values()), 10, "every node to count it")
    for text in scraped().values():
        for name in ("distsync_elections_candidates", "distsync_elections_campaigns_total",
                     "distsync_elections_elected_total", "distsync_elections_resigned_total",
                     "distsync_elections_proclaims_total",
                     "distsync_elections_session_ends_total"):
            assert name in text, name
        assert gauge(text, "distsync_elections_elected_total") >= 1
