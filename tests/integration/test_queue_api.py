"""The queue's HTTP API and Python client against a real 3-node cluster.

First the error contract: every malformed or refused request gets its documented 4xx and JSON
body, via the leader and via a follower, and none of them reaches the log or changes the
queue. Then the behaviour through the API: FIFO, batches, forwarding, Request-Id and
client-id idempotency, long polls, visibility expiry proposed by the leader, dead-lettering,
consumer balancing and rebalancing, metrics, and the blocking client.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import ErrorCase as Case
from cluster_helpers import (
    agreed_leader,
    diag,
    proposals,
    raw_request,
    ready,
    via_url,
    wait_until,
)

from distsync.client import BlockingClient, Client
from distsync.local import LocalCluster, http_json

JSON = {"Content-Type": "application/json"}
BAD = "bad"  # the queue the error cases run against


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    with LocalCluster(3) as cluster:
        ready(cluster)
        yield cluster


# -- the error contract -----------------------------------------------------------------


M = f"/v1/queues/{BAD}/messages"
D = f"/v1/queues/{BAD}/dequeue"
A = f"/v1/queues/{BAD}/ack"
N = f"/v1/queues/{BAD}/nack"
CASES = [
    # enqueue bodies
    Case("enqueue empty body", "POST", M, b"", 400, "invalid_json"),
    Case("enqueue not json", "POST", M, b"{body", 400, "invalid_json"),
    Case("enqueue json array", "POST", M, b"[1]", 400, "invalid_json"),
    Case("enqueue no body field", "POST", M, _j({}), 400, "invalid_request"),
    Case("enqueue null body", "POST", M, _j({"body": None}), 400, "invalid_request"),
    Case("enqueue empty batch", "POST", M, _j({"messages": []}), 400, "invalid_request"),
    Case("enqueue batch and single", "POST", M, _j({"messages": [{"body": 1}], "body": 2}),
         400, "invalid_request"),
    Case("enqueue unknown field", "POST", M, _j({"body": 1, "prio": 9}), 400,
         "invalid_request"),
    Case("enqueue id with tilde", "POST", M, _j({"body": 1, "id": "~5.0"}), 400,
         "invalid_request"),
    Case("enqueue id with space", "POST", M, _j({"body": 1, "id": "a b"}), 400,
         "invalid_request"),
    Case("enqueue empty key", "POST", M, _j({"body": 1, "key": ""}), 400, "invalid_request"),
    Case("enqueue key not a string", "POST", M, _j({"body": 1, "key": 5}), 400,
         "invalid_request"),
    Case("enqueue header not a string", "POST", M, _j({"body": 1, "headers": {"a": 1}}),
         400, "invalid_request"),
    Case("enqueue batch over 1000", "POST", M,
         _j({"messages": [{"body": i} for i in range(1001)]}), 400, "invalid_request"),
    Case("enqueue integer over 64 bits", "POST", M, b'{"body": 123456789012345678901234567}',
         400, "invalid_request"),
    Case("enqueue message over 256 KiB", "POST", M, _j({"body": "x" * (300 * 1024)}), 413,
         "message_too_large"),
    Case("enqueue one big message in a batch", "POST", M,
         _j({"messages": [{"body": 1}, {"body": "y" * (257 * 1024)}]}), 413,
         "message_too_large"),
    Case("enqueue body over 1 MiB", "POST", M, _j({"body": "x" * (1 << 20)}), 413,
         "body_too_large"),
    Case("enqueue beyond max_length", "POST", M,
         _j({"messages": [{"body": i} for i in range(3)]}), 429, "queue_full"),
    Case("enqueue request id too long", "POST", M, _j({"body": 1}), 400,
         "invalid_request_id", (("Request-Id", "r" * 200),)),
    # queue names
    Case("bad queue name", "POST", "/v1/queues/bad$q/messages", _j({"body": 1}), 400,
         "invalid_queue_name"),
    Case("queue name too long", "POST", f"/v1/queues/{'q' * 130}/messages", _j({"body": 1}),
         400, "invalid_queue_name"),
    Case("queue name starting with a dot", "PUT", "/v1/queues/.hidden", b"", 400,
         "invalid_queue_name"),
    # dequeue
    Case("dequeue empty body", "POST", D, b"", 400, "invalid_json"),
    Case("dequeue without consumer", "POST", D, _j({"max": 1}), 400, "invalid_request"),
    Case("dequeue bad consumer", "POST", D, _j({"consumer": "w 1"}), 400, "invalid_request"),
    Case("dequeue max 0", "POST", D, _j({"consumer": "w", "max": 0}), 400, "invalid_request"),
    Case("dequeue max over 1000", "POST", D, _j({"consumer": "w", "max": 1001}), 400,
         "invalid_request"),
    Case("dequeue wait over 20 s", "POST", D, _j({"consumer": "w", "wait_ms": 20001}), 400,
         "invalid_request"),
    Case("dequeue visibility too short", "POST", D, _j({"consumer": "w", "visibility_ms": 5}),
         400, "invalid_request"),
    Case("dequeue wait as string", "POST", D, _j({"consumer": "w", "wait_ms": "100"}), 400,
         "invalid_request"),
    Case("dequeue with a malformed ack", "POST", D, _j({"consumer": "w", "ack": ["nope"]}),
         400, "invalid_request"),
    # ack / nack
    Case("ack unknown receipt", "POST", A, _j({"receipt": "999999:nope"}), 404,
         "unknown_receipt"),
    Case("ack unknown receipts", "POST", A, _j({"receipts": ["1:a", "2:b"]}), 404,
         "unknown_receipt"),
    Case("ack malformed receipt", "POST", A, _j({"receipt": "nope"}), 400, "invalid_request"),
    Case("ack receipt and receipts", "POST", A, _j({"receipt": "1:a", "receipts": ["1:a"]}),
         400, "invalid_request"),
    Case("ack nothing", "POST", A, _j({}), 400, "invalid_request"),
    Case("ack on a missing queue", "POST", "/v1/queues/nosuch/ack", _j({"receipt": "1:a"}),
         404, "not_found"),
    Case("nack unknown receipt", "POST", N, _j({"receipt": "999999:nope"}), 404,
         "unknown_receipt"),
    Case("nack negative delay", "POST", N, _j({"receipt": "1:a", "delay_ms": -1}), 400,
         "invalid_request"),
    Case("nack error too long", "POST", N, _j({"receipt": "1:a", "error": "e" * 2000}), 400,
         "invalid_request"),
    # options
    Case("options visibility too short", "PUT", f"/v1/queues/{BAD}",
         _j({"visibility_ms": 50}), 400, "invalid_request"),
    Case("options zero partitions", "PUT", "/v1/queues/other", _j({"partitions": 0}), 400,
         "invalid_request"),
    Case("options partitions as string", "PUT", "/v1/queues/other", _j({"partitions": "4"}),
         400, "invalid_request"),
    Case("options unknown", "PUT", "/v1/queues/other", _j({"priority": True}), 400,
         "invalid_request"),
    Case("options dead_letter not bool", "PUT", "/v1/queues/other", _j({"dead_letter": "no"}),
         400, "invalid_request"),
    Case("options max_length too big", "PUT", "/v1/queues/other",
         _j({"max_length": 10**9}), 400, "invalid_request"),
    Case("change partitions", "PUT", f"/v1/queues/{BAD}", _j({"partitions": 5}), 409,
         "immutable_option"),
    # reads, deletes, consumers, methods
    Case("get missing queue", "GET", "/v1/queues/nosuch", None, 404, "not_found"),
    Case("get bad consistency", "GET", f"/v1/queues/{BAD}?consistency=bogus", None, 400,
         "invalid_query"),
    Case("delete missing queue", "DELETE", "/v1/queues/nosuch", None, 404, "not_found"),
    Case("leave unknown consumer", "DELETE", f"/v1/queues/{BAD}/consumers/ghost", None, 404,
         "not_found"),
    Case("heartbeat bad consumer", "POST", f"/v1/queues/{BAD}/consumers/a%20b/heartbeat", None,
         400, "invalid_consumer"),
    Case("peek limit zero", "GET", f"{M}?limit=0", None, 400, "invalid_query"),
    Case("peek limit over 100", "GET", f"{M}?limit=101", None, 400, "invalid_query"),
    Case("peek limit a word", "GET", f"{M}?limit=ten", None, 400, "invalid_query"),
    Case("peek missing queue", "GET", "/v1/queues/nosuch/messages", None, 404, "not_found"),
    Case("patch on messages", "PATCH", M, _j({}), 405, "method_not_allowed"),
    Case("put on dequeue", "PUT", D, _j({}), 405, "method_not_allowed"),
]


def _view(lc: LocalCluster) -> Any:
    """The bad queue as the leader sees it (linearizable), minus nothing."""
    status, _, body = raw_request("GET", f"{via_url(lc, 'leader')}/v1/queues/{BAD}")
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def baseline(lc: LocalCluster) -> Iterator[dict[str, Any]]:
    with BlockingClient(lc.addrs) as c:
        q = c.queue(BAD)
        q.create(partitions=2, max_length=5)
        q.put_many([{"body": i} for i in range(3)])

    def settled() -> dict[str, tuple[int, int]] | None:
        sts = {n: lc.status(n) for n in lc.nodes}
        if any(s is None for s in sts.values()):
            return None
        marks = {(s["commit"], s["applied"]) for s in sts.values()}
        return {n: (s["term"], s["last_index"]) for n, s in sts.items()} if (
            len(marks) == 1 and len({c for c, _ in marks} | {a for _, a in marks}) == 1
        ) else None

    marks = wait_until(lc, settled, 15, "all nodes to settle")
    yield {"marks": marks, "proposals": proposals(lc), "view": _view(lc)}


@pytest.mark.parametrize("via", ["leader", "follower"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_gets_documented_error(baseline: dict, lc: LocalCluster, case: Case,
                                           via: str) -> None:
    problem = case.problem(via_url(lc, via))
    assert problem is None, diag(lc, f"via {via}: {problem}")


def test_refused_requests_changed_nothing(baseline: dict, lc: LocalCluster) -> None:
    assert proposals(lc) == baseline["proposals"], diag(lc, "a refused request was proposed")
    for nid, (term, last) in baseline["marks"].items():
        st = lc.status(nid)
        assert st is not None
        if st["term"] == term:
            assert st["last_index"] == last, diag(lc, f"{nid}: log grew from {last}")
        else:  # an unrelated election adds only the new leader's no-op
            assert st["last_index"] - last <= st["term"] - term
    assert _view(lc) == baseline["view"]
    status, _, listing = raw_request("GET", f"{via_url(lc, 'leader')}/v1/queues")
    assert status == 200 and [q["name"] for q in listing["queues"]] == [BAD], listing


# -- behaviour --------------------------------------------------------------------------


def _follower_addr(lc: LocalCluster) -> str:
    leader = agreed_leader(lc)
    return next(nd.addr for n, nd in sorted(lc.nodes.items()) if n != leader)


async def test_fifo_batches_and_forwarding_through_a_follower(lc: LocalCluster) -> None:
    async with Client([_follower_addr(lc)]) as c:  # every write is forwarded
        q = c.queue("fifo")
        await q.create(partitions=4)
        ids = [await q.put(f"task_{i:03d}") for i in range(1, 6)]
        ids += await q.put_many([{"body": f"task_{i:03d}"} for i in range(6, 11)])
        assert len(set(ids)) == 10 and all(i.startswith("~") for i in ids)
        got = []
        while len(got) < 10:
            got += await q.get("solo", max=3)
        assert [m.body for m in got] == [f"task_{i:03d}" for i in range(1, 11)]
        assert [m.id for m in got] == ids
        assert (await q.ack(*got[:9])).acked == 9
        await got[9].ack()
        info = await q.info()
        assert info["messages"] == 0 and info["stats"]["acked"] == 10
        assert [p["consumer"] for p in info["partitions"]] == ["solo"] * 4


async def test_request_id_and_client_id_make_enqueue_idempotent(lc: LocalCluster) -> None:
    rid = f"t-{uuid.uuid4()}"
    hdrs = {**JSON, "Request-Id": rid}
    first = raw_request("POST", f"{via_url(lc, 'follower')}/v1/queues/idem/messages",
                        _j({"body": "once"}), hdrs)
    again = raw_request("POST", f"{via_url(lc, 'leader')}/v1/queues/idem/messages",
                        _j({"body": "once"}), hdrs)
    assert first[0] == again[0] == 200 and first[2] == again[2], (first, again)
    async with Client(lc.addrs) as c:
        q = c.queue("idem")
        assert await q.put("x", id="order-1") == "order-1"
        assert await q.put("x again", id="order-1") == "order-1"
        ids = await q.put_many([{"body": 1, "id": "order-1"}, {"body": 2, "id": "order-2"}])
        assert ids == ["order-1", "order-2"]
        info = await q.info()
        assert info["messages"] == 3 and info["stats"]["duplicates"] == 2


def test_dequeue_retry_with_the_same_request_id_returns_the_same_messages(
    lc: LocalCluster,
) -> None:
    with BlockingClient(lc.addrs) as c:
        c.queue("retry").put_many([{"body": i} for i in range(4)])
    hdrs = {**JSON, "Request-Id": f"t-{uuid.uuid4()}"}
    body = _j({"consumer": "r1", "max": 2})
    s1, _, a = raw_request("POST", f"{via_url(lc, 'leader')}/v1/queues/retry/dequeue", body, hdrs)
    s2, _, b = raw_request("POST", f"{via_url(lc, 'follower')}/v1/queues/retry/dequeue", body, hdrs)
    assert s1 == s2 == 200 and len(a["messages"]) == 2
    assert [m["receipt"] for m in b["messages"]] == [m["receipt"] for m in a["messages"]]
    s3, _, c3 = raw_request("POST", f"{via_url(lc, 'leader')}/v1/queues/retry/dequeue", body,
                            {**JSON, "Request-Id": f"t-{uuid.uuid4()}"})
    assert [m["body"] for m in c3["messages"]] == [2, 3]


async def test_ack_and_fetch_next_in_one_request(lc: LocalCluster) -> None:
    async with Client(lc.addrs) as c:
        q = c.queue("acknext")
        await q.create(partitions=1)
        await q.put_many([{"body": i} for i in range(5)])
        first = await q.get("n1", max=2)
        nxt = await q.get("n1", max=2, ack=first)
        assert [m.body for m in nxt] == [2, 3]
        info = await q.info()
        assert info["stats"]["acked"] == 2 and info["messages"] == 3
        body = {"consumer": "n1", "max": 5, "ack": [m.receipt for m in nxt] + ["1:~gone"]}
        res = await c.request_or_raise("POST", "/v1/queues/acknext/dequeue", body,
                                       mutating=True)
        assert res["acked"] == 2 and res["ack_unknown"] == ["1:~gone"]
        assert [m["body"] for m in res["messages"]] == [4]


def test_long_poll_through_a_follower_wakes_when_a_message_arrives(lc: LocalCluster) -> None:
    out: dict[str, Any] = {}

    def poll() -> None:
        out["res"] = raw_request(
            "POST", f"{via_url(lc, 'follower')}/v1/queues/lp/dequeue",
            _j({"consumer": "p1", "wait_ms": 15000}), JSON, timeout=30,
        )

    with BlockingClient(lc.addrs) as c:
        c.queue("lp").create(partitions=1)
        c.queue("lp").heartbeat("p1")
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        c.queue("lp").put("wake up")
        t.join(30)
    status, _, body = out["res"]
    # Had the poll not been woken, it would have ended empty after wait_ms.
    assert status == 200 and [m["body"] for m in body["messages"]] == ["wake up"], body


def test_visibility_timeout_redelivers_and_max_deliveries_dead_letters(
    lc: LocalCluster,
) -> None:
    with BlockingClient(lc.addrs) as c:
        q = c.queue("vis")
        q.create(partitions=1, visibility_ms=300, max_deliveries=2)
        q.put({"job": "slow"}, id="slow-1")
        (m1,) = q.get("w1", visibility_ms=300)
        assert m1.deliveries == 1
        # Not acked: the leader proposes the expiry, the message comes back.
        (m2,) = q.get("w1", wait_ms=10_000)
        assert m2.id == "slow-1" and m2.deliveries == 2 and m2.receipt != m1.receipt
        res = m2.nack(error="handler crashed")
        assert res["dead_lettered"] == 1
        # A peek shows the dead letter and why, takes nothing, counts no delivery, and gives
        # no receipt (a read token must not be able to ack).
        for _ in range(2):
            code, peek = http_json("GET", f"{lc.nodes['n2'].url}/v1/queues/vis.dlq/messages")
            assert code == 200 and peek["total"] == 1, peek
            (seen,) = peek["messages"]
            assert seen["id"] == "slow-1" and seen["state"] == "ready" and "receipt" not in seen
            assert seen["dead_letter"]["error"] == "handler crashed", seen
        (dead,) = c.queue("vis.dlq").get("ops", wait_ms=5000)
        assert dead.id == "slow-1" and dead.body == {"job": "slow"}
        assert dead.deliveries == 1  # the two peeks were not deliveries
        assert dead.dead_letter["queue"] == "vis"
        assert dead.dead_letter["deliveries"] == 2
        assert dead.dead_letter["error"] == "handler crashed"
        dead.ack()
        info = q.info()
        assert info["dead_lettered"] == 1 and info["dead_letter_queue"] == "vis.dlq"


def test_consumers_are_balanced_and_rebalanced(lc: LocalCluster) -> None:
    with BlockingClient(lc.addrs) as c:
        q = c.queue("bal")
        q.create(partitions=6, consumer_ttl_ms=6000)
        for w in ("w1", "w2", "w3"):
            q.heartbeat(w)
        info = q.info()
        assert sorted(len(x["partitions"]) for x in info["consumers"]) == [2, 2, 2]
        assert {p["consumer"] for p in info["partitions"]} == {"w1", "w2", "w3"}
        q.leave("w3")
        info = q.info()
        assert sorted(len(x["partitions"]) for x in info["consumers"]) == [3, 3]
        # w2 goes silent; w1 keeps heartbeating until the leader expires w2.

        def w2_gone() -> bool:
            q.heartbeat("w1")
            return [x["id"] for x in q.info()["consumers"]] == ["w1"]

        wait_until(lc, w2_gone, 30, "the silent consumer w2 to be expired", interval=0.5)
        assert [p["consumer"] for p in q.info()["partitions"]] == ["w1"] * 6


def test_metrics_are_exported_on_every_node(lc: LocalCluster) -> None:
    """Its own traffic (one ack, one dead letter), so it holds whatever ran before it."""
    with BlockingClient(lc.addrs) as c:
        q = c.queue("mx")
        q.create(partitions=1, max_deliveries=1)
        q.put("ok", id="mx-1")
        q.put("bad", id="mx-2")
        (m1,) = q.get("w1")
        m1.ack()
        (m2,) = q.get("w1")
        assert m2.nack(error="poison")["dead_lettered"] == 1
    names = ("distsync_queue_depth", "distsync_queue_in_flight",
             "distsync_queue_enqueued_total", "distsync_queue_acked_total",
             "distsync_queue_dequeued_total", "distsync_queue_redelivered_total",
             "distsync_queue_dead_lettered_total", "distsync_queue_end_to_end_seconds_bucket")
    for nd in lc.nodes.values():
        def exported(nd=nd) -> str | None:  # a follower shows it once it has applied
            _, _, text = raw_request("GET", f"{nd.url}/metrics")
            ok = 'distsync_queue_dead_lettered_total{queue="mx"} 1.0' in text
            return text if ok else None

        text = wait_until(lc, exported, 10, f"{nd.node_id} to export the dead letter")
        for name in names:
            assert name in text, (nd.node_id, name)


def test_blocking_consume_and_leave_on_close(lc: LocalCluster) -> None:
    with BlockingClient(lc.addrs) as c:
        q = c.queue("blk")
        q.put_many([{"body": i, "key": "k"} for i in range(5)])
        seen = []
        for msg in q.consume(consumer="b1", batch=2, wait_ms=2000):
            seen.append(msg.body)
            if len(seen) < 4:
                msg.ack()
            else:
                break  # message 3 is held, unacked; leaving gives it back at once
        info = q.info()
        assert seen == [0, 1, 2, 3] and info["consumers"] == []
        assert info["ready"] == 2 and info["in_flight"] == 0


async def test_async_consume_with_nack_delay_and_heartbeats_while_busy(
    lc: LocalCluster,
) -> None:
    async with Client(lc.addrs) as c:
        q = c.queue("asy")
        await q.create(partitions=2, consumer_ttl_ms=3000, max_deliveries=0)
        await q.put_many([{"body": i} for i in range(3)])
        seen: list[tuple[int, int]] = []
        async with q.consume(consumer="a1", batch=2, wait_ms=3000, heartbeat_s=0.5) as msgs:
            async for m in msgs:
                seen.append((m.body, m.deliveries))
                if m.body == 0 and m.deliveries == 1:
                    await m.nack(delay_ms=200, error="later")
                    continue
                if m.body == 1:
                    # A slow handler: longer than the consumer TTL. The background
                    # heartbeat keeps a1 registered, so its lease is not taken away.
                    await asyncio.sleep(4.0)
                    info = await q.info()
                    assert [x["id"] for x in info["consumers"]] == ["a1"], info["consumers"]
                    assert info["in_flight"] >= 1
                await m.ack()
                if len({b for b, _ in seen}) == 3 and (0, 2) in seen:
                    break
        assert sorted(seen) == [(0, 1), (0, 2), (1, 1), (2, 1)], seen
        info = await q.info()
        assert info["consumers"] == [] and info["messages"] == 0  # left on exit
