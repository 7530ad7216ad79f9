"""Request ids on a real 3-node cluster: scoped to the caller, bound to the request, answered
from the replicated id table before any precondition check, on every node and through a
leader change (README "Request ids").

Reproduces issue 15's items 1 and 2: two clients that chose the same id collided (the second
write was silently lost), and an ack or nack retried with its id answered 404
`unknown_receipt` although the first attempt had taken effect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import agreed_leader, diag, raw_request, ready, wait_until

from distsync.local import LocalCluster

JSON = {"Content-Type": "application/json"}


def call(url: str, method: str, path: str, body: Any = None, rid: str | None = None,
         client: str | None = None) -> tuple[int, Any]:
    headers = dict(JSON)
    if rid is not None:
        headers["Request-Id"] = rid
    if client is not None:
        headers["Client-Id"] = client
    data = None if body is None else json.dumps(body).encode()
    status, _, got = raw_request(method, url + path, data, headers)
    return status, got


def urls(lc: LocalCluster) -> tuple[str, str]:
    """(leader URL, a follower's URL)."""
    leader = agreed_leader(lc)
    follower = next(n for n in sorted(lc.nodes) if n != leader)
    return lc.nodes[leader].url, lc.nodes[follower].url


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_same_id_from_two_clients_applies_both(shared_cluster: LocalCluster) -> None:
    """Item 1: `Client-Id` scopes the id, so another client's id 1 is its own request."""
    lead, foll = urls(shared_cluster)
    x, y, rid = uid("rid/x"), uid("rid/y"), uid("1")
    a = call(lead, "PUT", f"/v1/kv/{x}", {"value": "a"}, rid, client="client-a")
    b = call(foll, "PUT", f"/v1/kv/{y}", {"value": "b"}, rid, client="client-b")
    assert a[0] == 200 and b[0] == 200, (a, b)
    assert b[1]["revision"] != a[1]["revision"], (a, b)
    got = call(lead, "GET", f"/v1/kv/{y}")
    assert got == (200, {"key": y, "value": "b", "revision": b[1]["revision"]}), got


def test_same_id_for_another_request_is_refused_and_applies_nothing(
        shared_cluster: LocalCluster) -> None:
    """In one scope (here the anonymous one) an id is bound to its request: another path,
    body or method with it gets 422 `request_id_mismatch`, and nothing is written."""
    lead, foll = urls(shared_cluster)
    x, y, rid = uid("rid/x"), uid("rid/y"), uid("shared")
    first = call(lead, "PUT", f"/v1/kv/{x}", {"value": 1}, rid)
    assert first[0] == 200, first
    for url, method, path, body in [
        (foll, "PUT", f"/v1/kv/{y}", {"value": 1}),       # another key (issue item 1)
        (lead, "PUT", f"/v1/kv/{x}", {"value": 2}),       # another body
        (lead, "DELETE", f"/v1/kv/{x}", None),            # another method
        (foll, "POST", "/v1/sessions", {"ttl_ms": 5000}),  # another service
    ]:
        got = call(url, method, path, body, rid)
        assert got[0] == 422 and got[1]["error"] == "request_id_mismatch", (method, path, got)
    assert call(lead, "GET", f"/v1/kv/{y}")[0] == 404
    assert call(lead, "GET", f"/v1/kv/{x}")[1]["value"] == 1
    # The same request again, re-serialised with other spacing, is a retry: first result.
    status, _, again = raw_request("PUT", f"{foll}/v1/kv/{x}", b'{ "value" :1 }',
                                   {**JSON, "Request-Id": rid})
    assert (status, again) == first


def _queue_with_delivery(url: str, q: str, n: int = 1) -> list[str]:
    assert call(url, "PUT", f"/v1/queues/{q}", {})[0] == 200
    assert call(url, "POST", f"/v1/queues/{q}/messages",
                {"messages": [{"body": i} for i in range(n)]})[0] == 200
    st, got = call(url, "POST", f"/v1/queues/{q}/dequeue", {"consumer": "w", "max": n})
    assert st == 200 and len(got["messages"]) == n, got
    return [m["receipt"] for m in got["messages"]]


@pytest.mark.parametrize("route", ["ack", "nack"])
def test_ack_and_nack_retries_answer_the_first_result(
        shared_cluster: LocalCluster, route: str) -> None:
    """Item 2: the retry of an ack or nack that took effect gets its answer (200), from the
    leader and through a follower, not 404 `unknown_receipt`."""
    lead, foll = urls(shared_cluster)
    q = uid("rq")
    (receipt,) = _queue_with_delivery(lead, q)
    rid = uid(route)
    first = call(lead, "POST", f"/v1/queues/{q}/{route}", {"receipt": receipt}, rid)
    assert first[0] == 200, first
    for url in (lead, foll):
        again = call(url, "POST", f"/v1/queues/{q}/{route}", {"receipt": receipt}, rid)
        assert again == first, (url, again, first)
    # Without the id it is a new request, and the receipt no longer matches.
    fresh = call(lead, "POST", f"/v1/queues/{q}/{route}", {"receipt": receipt}, uid("new"))
    assert fresh[0] == 404 and fresh[1]["error"] == "unknown_receipt", fresh
    info = call(lead, "GET", f"/v1/queues/{q}")[1]
    assert info["stats"]["acked" if route == "ack" else "nacked"] == 1, info


def test_every_precondition_yields_to_a_known_id(shared_cluster: LocalCluster) -> None:
    """Queue delete, consumer leave and an enqueue into a queue that has since filled up:
    each retry answers its first result although the precondition fails now."""
    lead, foll = urls(shared_cluster)
    q = uid("rq")
    assert call(lead, "PUT", f"/v1/queues/{q}", {"max_length": 1})[0] == 200
    rid = uid("enq")
    first = call(lead, "POST", f"/v1/queues/{q}/messages", {"body": 1}, rid)
    assert first[0] == 200, first
    assert call(foll, "POST", f"/v1/queues/{q}/messages", {"body": 1}, rid) == first
    full = call(lead, "POST", f"/v1/queues/{q}/messages", {"body": 2}, uid("enq"))
    assert full[0] == 429, full
    hb = call(lead, "POST", f"/v1/queues/{q}/consumers/c1/heartbeat", None, uid("hb"))
    assert hb[0] == 200, hb
    leave_rid = uid("leave")
    left = call(lead, "DELETE", f"/v1/queues/{q}/consumers/c1", None, leave_rid)
    assert left[0] == 200, left
    assert call(foll, "DELETE", f"/v1/queues/{q}/consumers/c1", None, leave_rid) == left
    del_rid = uid("del")
    deleted = call(lead, "DELETE", f"/v1/queues/{q}", None, del_rid)
    assert deleted[0] == 200, deleted
    assert call(foll, "DELETE", f"/v1/queues/{q}", None, del_rid) == deleted
    assert call(lead, "DELETE", f"/v1/queues/{q}", None, uid("del"))[0] == 404


def test_dequeue_id_is_bound_to_its_request(shared_cluster: LocalCluster) -> None:
    lead, foll = urls(shared_cluster)
    q = uid("rq")
    assert call(lead, "PUT", f"/v1/queues/{q}", {})[0] == 200
    assert call(lead, "POST", f"/v1/queues/{q}/messages",
                {"messages": [{"body": i} for i in range(3)]})[0] == 200
    rid = uid("deq")
    first = call(lead, "POST", f"/v1/queues/{q}/dequeue", {"consumer": "w", "max": 1}, rid)
    assert first[0] == 200 and len(first[1]["messages"]) == 1, first
    again = call(foll, "POST", f"/v1/queues/{q}/dequeue", {"consumer": "w", "max": 1}, rid)
    assert again[0] == 200 and again[1]["messages"] == first[1]["messages"], again
    other = call(lead, "POST", f"/v1/queues/{q}/dequeue", {"consumer": "w", "max": 2}, rid)
    assert other[0] == 422 and other[1]["error"] == "request_id_mismatch", other
    # Another consumer, or another kind of request, under a dequeue's id; and a dequeue
    # under a put's id: all refused, nothing leased or written.
    for url, method, path, body in [
        (foll, "POST", f"/v1/queues/{q}/dequeue", {"consumer": "v", "max": 1}),
        (lead, "PUT", f"/v1/kv/{uid('rid/d')}", {"value": 1}),
    ]:
        got = call(url, method, path, body, rid)
        assert got[0] == 422 and got[1]["error"] == "request_id_mismatch", (path, got)
    put_rid = uid("put")
    assert call(lead, "PUT", f"/v1/kv/{uid('rid/p')}", {"value": 1}, put_rid)[0] == 200
    got = call(foll, "POST", f"/v1/queues/{q}/dequeue", {"consumer": "w", "max": 1}, put_rid)
    assert got[0] == 422 and got[1]["error"] == "request_id_mismatch", got
    assert call(lead, "GET", f"/v1/queues/{q}")[1]["in_flight"] == 1


def test_invalid_client_id_is_refused(shared_cluster: LocalCluster) -> None:
    lead, _ = urls(shared_cluster)
    got = call(lead, "PUT", f"/v1/kv/{uid('rid/x')}", {"value": 1}, uid("r"), client="a b")
    assert got[0] == 400 and got[1]["error"] == "invalid_client_id", got


# -- through a leader change ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        ready(c)
        yield c


def test_retries_after_failover_answer_the_first_result(lc: LocalCluster) -> None:
    """The id table is replicated state: after the leader that applied an ack, a put and a
    lock acquire is SIGKILLed, the new leader answers each retry with the first result, and a
    mismatching reuse is still refused."""
    old = ready(lc)
    url = lc.nodes[old].url
    q = "fo"
    receipts = _queue_with_delivery(url, q, 2)
    ack_rid, put_rid, lock_rid = uid("ack"), uid("put"), uid("acq")
    acked = call(url, "POST", f"/v1/queues/{q}/ack", {"receipts": receipts}, ack_rid)
    put = call(url, "PUT", "/v1/kv/fo", {"value": "v"}, put_rid)
    sess = call(url, "POST", "/v1/sessions", {"ttl_ms": 60_000}, uid("sess"))
    acq_body = {"session": sess[1]["session"]}
    acq = call(url, "POST", "/v1/locks/fo/acquire", acq_body, lock_rid)
    assert acked[0] == put[0] == acq[0] == 200, (acked, put, acq)
    lc.kill(old)
    new = wait_until(lc, lambda: (lambda n: n if n != old else None)(agreed_leader(
        lc, among=[n for n in lc.nodes if n != old])), 30, "a new leader")
    for nid in lc.nodes:
        if nid == old:
            continue
        u = lc.nodes[nid].url
        assert call(u, "POST", f"/v1/queues/{q}/ack", {"receipts": receipts}, ack_rid) == acked
        assert call(u, "PUT", "/v1/kv/fo", {"value": "v"}, put_rid) == put
        assert call(u, "POST", "/v1/locks/fo/acquire", acq_body, lock_rid) == acq
        bad = call(u, "PUT", "/v1/kv/fo2", {"value": "v"}, put_rid)
        assert bad[0] == 422, diag(lc, f"{nid} answered {bad}")
    info = call(lc.nodes[new].url, "GET", f"/v1/queues/{q}")[1]
    assert info["stats"]["acked"] == 2, info
    assert call(lc.nodes[new].url, "GET", "/v1/kv/fo2")[0] == 404


def test_python_client_scopes_ids_by_client_id(shared_cluster: LocalCluster) -> None:
    """Two applications that chose the same request id, each with its own `client_id`, both
    apply; one application reusing its id for another request gets the 422, not a retry."""
    from distsync.client import BlockingClient, DistSyncError

    k1, k2, k3 = uid("rid/app1"), uid("rid/app2"), uid("rid/app3")
    rid = uid("order")
    with BlockingClient(shared_cluster.addrs, client_id="app-1") as a, \
            BlockingClient(shared_cluster.addrs, client_id="app-2") as b:
        ra = a.put(k1, 1, request_id=rid)
        rb = b.put(k2, 2, request_id=rid)
        assert ra["revision"] != rb["revision"]
        assert a.put(k1, 1, request_id=rid) == ra  # a retry: the first answer
        with pytest.raises(DistSyncError) as e:
            a.put(k3, 3, request_id=rid)
        assert (e.value.status, e.value.code) == (422, "request_id_mismatch")
        assert b.get_value(k2) == 2
        with pytest.raises(DistSyncError):
            b.get(k3)
