"""The HTTP API's error contract, against a real 3-node cluster.

Every malformed or refused request gets the documented 4xx status with a JSON body
`{"error": code, "message": text}`, whether it is sent to the leader or to a follower (which
forwards leader-only routes). None of them may reach the log: after the whole table the
nodes' commit and last indexes are where they were and the seeded keys are untouched.

Then the at-most-once contract of `Request-Id` (directly and through forwarding) and
compare-and-set failures.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cluster_helpers import ErrorCase as Case
from cluster_helpers import diag, healthz, proposals, raw_request, via_url, wait_until

from distsync.client import BlockingClient, CompareFailed
from distsync.local import LocalCluster

SEED = "api/seed/1"
JSON = {"Content-Type": "application/json"}


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _cases() -> list[Case]:
    kv = f"/v1/kv/{SEED}"
    long_key = "k" * 600
    return [
        # -- bodies that are not a JSON object ----------------------------------------------
        Case("malformed json", "PUT", kv, b"{not json", 400, "invalid_json"),
        Case("json array", "PUT", kv, b"[1, 2]", 400, "invalid_json"),
        Case("json string", "PUT", kv, b'"v"', 400, "invalid_json"),
        Case("empty body", "PUT", kv, b"", 400, "invalid_json"),
        Case("not utf-8", "PUT", kv, b"\xff\xfe{", 400, "invalid_json"),
        Case("delete with array body", "DELETE", kv, b"[]", 400, "invalid_json"),
        # -- wrong fields and types ----------------------------------------------------------
        Case("value missing", "PUT", kv, b"{}", 400, "invalid_request"),
        Case("expect_revision as string", "PUT", kv, _j({"value": 1, "expect_revision": "3"}),
             400, "invalid_request"),
        Case("expect_revision negative", "PUT", kv, _j({"value": 1, "expect_revision": -1}),
             400, "invalid_request"),
        Case("expect_revision float", "PUT", kv, _j({"value": 1, "expect_revision": 1.5}),
             400, "invalid_request"),
        Case("expect_revision bool", "PUT", kv, _j({"value": 1, "expect_revision": True}),
             400, "invalid_request"),
        Case("unknown field", "PUT", kv, _j({"value": 1, "colour": "red"}), 400,
             "invalid_request"),
        Case("delete expect_revision string", "DELETE", kv, _j({"expect_revision": "1"}), 400,
             "invalid_request"),
        Case("delete unknown field", "DELETE", kv, _j({"nope": 1}), 400, "invalid_request"),
        # Valid JSON the log cannot carry (msgpack: 64-bit integers) or the API cannot answer
        # with again (JSON has no NaN or infinity): a 4xx, never a 500.
        Case("integer over 64 bits", "PUT", kv, b'{"value": 123456789012345678901234567890}',
             400, "invalid_request"),
        Case("nested huge negative integer", "PUT", kv,
             b'{"value": [1, {"a": -99999999999999999999999}]}', 400, "invalid_request"),
        Case("expect_revision over 64 bits", "PUT", kv,
             b'{"value": 1, "expect_revision": 99999999999999999999999}', 400,
             "invalid_request"),
        Case("float overflow", "PUT", kv, b'{"value": 1e999}', 400, "invalid_request"),
        Case("NaN literal", "PUT", kv, b'{"value": NaN}', 400, "invalid_json"),
        Case("Infinity literal", "PUT", kv, b'{"value": -Infinity}', 400, "invalid_json"),
        # -- keys -----------------------------------------------------------------------------
        Case("put key too long", "PUT", f"/v1/kv/{long_key}", _j({"value": 1}), 400,
             "invalid_key"),
        Case("get key too long", "GET", f"/v1/kv/{long_key}", None, 400, "invalid_key"),
        Case("key with space", "PUT", "/v1/kv/a%20b", _j({"value": 1}), 400, "invalid_key"),
        Case("key with dollar", "PUT", "/v1/kv/bad$key", _j({"value": 1}), 400, "invalid_key"),
        Case("key non-ascii", "PUT", "/v1/kv/caf%C3%A9", _j({"value": 1}), 400, "invalid_key"),
        Case("delete key with star", "DELETE", "/v1/kv/a%2Ab", None, 400, "invalid_key"),
        Case("stale get bad key", "GET", "/v1/kv/a%20b?consistency=stale", None, 400,
             "invalid_key"),
        # -- size and headers -----------------------------------------------------------------
        Case("body over 1 MiB", "PUT", kv, _j({"value": "x" * (1 << 20)}), 413,
             "body_too_large"),
        Case("request id too long", "PUT", kv, _j({"value": 1}), 400, "invalid_request_id",
             (("Request-Id", "r" * 200),)),
        # -- routes and methods ---------------------------------------------------------------
        Case("unknown route", "GET", "/v1/nope", None, 404, "not_found"),
        Case("unknown version", "GET", "/v2/kv/a", None, 404, "not_found"),
        Case("kv without key", "PUT", "/v1/kv/", _j({"value": 1}), 404, "not_found"),
        Case("post status", "POST", "/v1/status", b"{}", 405, "method_not_allowed"),
        Case("patch key", "PATCH", kv, b"{}", 405, "method_not_allowed"),
        Case("post key", "POST", kv, _j({"value": 1}), 405, "method_not_allowed"),
        Case("delete status", "DELETE", "/v1/status", None, 405, "method_not_allowed"),
        Case("get transfer-leader", "GET", "/v1/cluster/transfer-leader", None, 405,
             "method_not_allowed"),
        Case("missing key", "GET", "/v1/kv/api/never-written", None, 404, "not_found"),
        # -- query strings --------------------------------------------------------------------
        Case("consistency bogus", "GET", f"{kv}?consistency=bogus", None, 400, "invalid_query"),
        Case("limit not a number", "GET", "/v1/kv?limit=abc", None, 400, "invalid_query"),
        Case("limit zero", "GET", "/v1/kv?limit=0", None, 400, "invalid_query"),
        Case("limit too big", "GET", "/v1/kv?limit=10001", None, 400, "invalid_query"),
        Case("list prefix with space", "GET", "/v1/kv?prefix=a%20b", None, 400,
             "invalid_query"),
        Case("list after not a key", "GET", "/v1/kv?after=bad$key", None, 400,
             "invalid_query"),
        Case("list consistency bogus", "GET", "/v1/kv?consistency=maybe", None, 400,
             "invalid_query"),
        Case("stale list bad prefix", "GET", "/v1/kv?prefix=%0A&consistency=stale", None,
             400, "invalid_query"),
        # -- ephemeral keys: a session id the API cannot name (an unknown but well-formed
        # one goes through the log: tests/integration/test_ephemeral.py) --------------------
        Case("session with space", "PUT", kv, _j({"value": 1, "session": "s 1"}), 400,
             "invalid_request"),
        Case("session number", "PUT", kv, _j({"value": 1, "session": 5}), 400,
             "invalid_request"),
        Case("session empty", "PUT", kv, _j({"value": 1, "session": ""}), 400,
             "invalid_request"),
        Case("session too long", "PUT", kv, _j({"value": 1, "session": "s" * 65}), 400,
             "invalid_request"),
        Case("session object", "PUT", kv, _j({"value": 1, "session": {"id": "s1"}}), 400,
             "invalid_request"),
        # -- membership -----------------------------------------------------------------------
        Case("add member empty object", "POST", "/v1/cluster/members", b"{}", 400,
             "invalid_request"),
        Case("add member array", "POST", "/v1/cluster/members", b"[]", 400, "invalid_json"),
        Case("add member bad id", "POST", "/v1/cluster/members",
             _j({"id": "bad id!", "addr": "127.0.0.1:7001"}), 400, "invalid_request"),
        Case("add member addr without port", "POST", "/v1/cluster/members",
             _j({"id": "n9", "addr": "no-port"}), 400, "invalid_request"),
        Case("add member learner not bool", "POST", "/v1/cluster/members",
             _j({"id": "n9", "addr": "127.0.0.1:7001", "learner": "yes"}), 400,
             "invalid_request"),
        Case("add member unknown field", "POST", "/v1/cluster/members",
             _j({"id": "n9", "addr": "127.0.0.1:7001", "weight": 3}), 400, "invalid_request"),
        Case("add existing member at another addr", "POST", "/v1/cluster/members",
             _j({"id": "n1", "addr": "127.0.0.1:1"}), 409, "membership_conflict"),
        Case("remove unknown member", "DELETE", "/v1/cluster/members/zzz", None, 404,
             "not_found"),
        Case("remove bad id", "DELETE", "/v1/cluster/members/bad!id", None, 400,
             "invalid_request"),
        Case("transfer to non-member", "POST", "/v1/cluster/transfer-leader",
             _j({"to": "nope"}), 400, "invalid_request"),
        Case("transfer to number", "POST", "/v1/cluster/transfer-leader", _j({"to": 5}), 400,
             "invalid_request"),
        Case("transfer array body", "POST", "/v1/cluster/transfer-leader", b"[1]", 400,
             "invalid_json"),
    ]


CASES = _cases()


@dataclass
class Baseline:
    lc: LocalCluster
    indexes: dict[str, tuple[int, int, int]]  # node -> (term, commit, last_index)
    proposals: dict[str, float]  # node -> commands proposed through it, any outcome
    seeds: dict[str, tuple[Any, int]]  # key -> (value, revision)


def _indexes(lc: LocalCluster) -> dict[str, tuple[int, int, int]]:
    out = {}
    for nid in lc.nodes:
        st = lc.status(nid)
        assert st is not None, diag(lc, f"{nid} did not answer /v1/status")
        out[nid] = (st["term"], st["commit"], st["last_index"])
    return out


@pytest.fixture(scope="module")
def baseline(shared_cluster: LocalCluster) -> Iterator[Baseline]:
    lc = shared_cluster
    seeds: dict[str, tuple[Any, int]] = {}
    with BlockingClient(lc.addrs) as c:
        for i, value in enumerate([{"a": 1}, "text", [1, 2, 3]], start=1):
            key = f"api/seed/{i}"
            res = c.put(key, value)
            seeds[key] = (value, res["revision"])

    def settled() -> dict[str, tuple[int, int, int]] | None:
        idx = _indexes(lc)
        commits = {c for _, c, _ in idx.values()}
        applied = {lc.status(n)["applied"] for n in lc.nodes}
        return idx if len(commits) == 1 and applied == commits else None

    indexes = wait_until(lc, settled, 15, "all nodes to settle on one commit index")
    yield Baseline(lc, indexes, proposals(lc), seeds)


@pytest.mark.parametrize("via", ["leader", "follower"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_gets_documented_json_error(baseline: Baseline, case: Case, via: str) -> None:
    problem = case.problem(via_url(baseline.lc, via))
    assert problem is None, diag(baseline.lc, f"via {via}: {problem}")


def test_rejected_requests_changed_nothing(baseline: Baseline) -> None:
    lc = baseline.lc
    for nid in lc.nodes:
        assert healthz(lc, nid), diag(lc, f"{nid} /healthz failed after the bad requests")
    # The metric does see proposals: the seed writes were counted.
    assert sum(baseline.proposals.values()) >= len(baseline.seeds), baseline.proposals
    after = proposals(lc)
    assert after == baseline.proposals, diag(
        lc, f"rejected requests were proposed: before {baseline.proposals}, after {after}"
    )
    now = _indexes(lc)
    for nid, (term, commit, last) in now.items():
        term0, commit0, last0 = baseline.indexes[nid]
        if term == term0:
            assert (commit, last) == (commit0, last0), diag(
                lc, f"{nid}: (term, commit, last_index) moved from {baseline.indexes[nid]} "
                    f"to {now[nid]}"
            )
        else:  # an unrelated election: at most the new leaders' no-op entries were added
            assert last - last0 <= term - term0, diag(
                lc, f"{nid}: log grew by {last - last0} over {term - term0} new terms"
            )
    with BlockingClient(lc.addrs) as c:
        for key, (value, rev) in baseline.seeds.items():
            got = c.get(key)
            assert (got["value"], got["revision"]) == (value, rev), diag(lc, f"{key}: {got}")
    status, _, listing = raw_request("GET", f"{lc.nodes['n1'].url}/v1/kv?prefix=api/")
    assert status == 200 and [i["key"] for i in listing["keys"]] == sorted(baseline.seeds), \
        listing


@pytest.mark.parametrize("first_via,second_via", [
    ("leader", "leader"), ("follower", "follower"), ("follower", "leader"),
])
def test_request_id_applies_a_put_at_most_once(
    shared_cluster: LocalCluster, first_via: str, second_via: str
) -> None:
    lc = shared_cluster
    key = f"api/rid/{first_via}-{second_via}"
    rid = f"test-{uuid.uuid4()}"
    hdrs = {**JSON, "Request-Id": rid}
    s1, _, r1 = raw_request("PUT", f"{via_url(lc, first_via)}/v1/kv/{key}",
                            _j({"value": "first"}), hdrs)
    assert s1 == 200, r1
    s2, _, r2 = raw_request("PUT", f"{via_url(lc, second_via)}/v1/kv/{key}",
                            _j({"value": "first"}), hdrs)
    assert s2 == 200 and r2 == r1, diag(lc, f"retry answered {s2} {r2}, first was {r1}")
    # The id is bound to its request: another value with it is refused, not answered.
    s2, _, r2 = raw_request("PUT", f"{via_url(lc, second_via)}/v1/kv/{key}",
                            _j({"value": "second"}), hdrs)
    assert s2 == 422 and r2["error"] == "request_id_mismatch", (s2, r2)
    with BlockingClient(lc.addrs) as c:
        got = c.get(key)
        assert got["value"] == "first" and got["revision"] == r1["revision"], got
        # Control: a different id is a different request and does apply.
        r3 = c.put(key, "third", request_id=f"test-{uuid.uuid4()}")
        assert r3["revision"] > r1["revision"]
        assert c.get_value(key) == "third"
        # And replaying the old id still answers the old result without applying.
        s4, _, r4 = raw_request("PUT", f"{via_url(lc, 'leader')}/v1/kv/{key}",
                                _j({"value": "first"}), hdrs)
        assert s4 == 200 and r4 == r1
        assert c.get_value(key) == "third"


def test_request_id_dedupes_delete(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    with BlockingClient(lc.addrs) as c:
        c.put("api/rid-del", 1)
        rid = f"test-{uuid.uuid4()}"
        d1 = c.delete("api/rid-del", request_id=rid)
        assert d1["deleted"] is True
        c.put("api/rid-del", 2)
        d2 = c.delete("api/rid-del", request_id=rid)  # replay: answered, not applied
        assert d2 == d1
        assert c.get_value("api/rid-del") == 2


def test_cas_mismatch_is_409_and_changes_nothing(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    key = "api/cas"
    with BlockingClient(lc.addrs) as c:
        rev = c.put(key, "v0")["revision"]
        for via in ("leader", "follower"):
            for wrong in (rev + 1000, rev - 1, 0):
                status, _, body = raw_request(
                    "PUT", f"{via_url(lc, via)}/v1/kv/{key}",
                    _j({"value": "clobbered", "expect_revision": wrong}), JSON,
                )
                assert status == 409, (via, wrong, status, body)
                assert body["error"] == "compare_failed" and body["message"], body
                assert body["revision"] == rev, body
            status, _, body = raw_request(
                "DELETE", f"{via_url(lc, via)}/v1/kv/{key}", _j({"expect_revision": rev + 7}),
                JSON,
            )
            assert status == 409 and body["error"] == "compare_failed", body
        got = c.get(key)
        assert (got["value"], got["revision"]) == ("v0", rev), got

        with pytest.raises(CompareFailed):
            c.cas(key, rev + 1, "nope")
        res = c.cas(key, rev, "v1")
        assert res["revision"] > rev and res["prev_revision"] == rev
        assert c.get_value(key) == "v1"
        # Create-if-absent: expect_revision 0.
        assert c.cas("api/cas-new", 0, "created")["prev_revision"] == 0
        with pytest.raises(CompareFailed):
            c.cas("api/cas-new", 0, "again")
        assert c.get_value("api/cas-new") == "created"
