"""Client tokens and roles on a real 3-node cluster (with a cluster secret too).

Every route the app registers is tried, on the leader and on a follower: without a token
every mutating route (and every read) answers 401, a read token gets 403 on every mutating
route, a write token 403 on the admin ones; afterwards no node's log has moved and the seeded
key is unchanged. Then the roles that should pass do, through a follower too (which forwards
`Authorization`, and the leader checks it again).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator

import pytest
from cluster_helpers import diag, log_marks, raw_request, ready, wait_until

from distsync.api.app import create_app
from distsync.api.auth import Role, required_role
from distsync.client import Client, DistSyncError
from distsync.local import LocalCluster, http_json
from distsync.node import NodeConfig
from distsync.server import build_cache, build_node

READ = "read-token-" + "r" * 24
WRITE = "write-token-" + "w" * 24
ADMIN = "admin-token-" + "a" * 24
ONLY_N3 = "n3-only-write-token-" + "x" * 16  # accepted by n3 alone: the leader re-checks
ENV = {
    "DISTSYNC_CLUSTER_SECRET": "client-test-secret-" + "s" * 24,
    "DISTSYNC_READ_TOKEN": READ,
    "DISTSYNC_WRITE_TOKEN": WRITE,
    "DISTSYNC_ADMIN_TOKEN": ADMIN,
}
SEED = "sec/seed"


def app_routes() -> list[tuple[str, str]]:
    """(method, concrete path) of every route a node registers, placeholders filled in."""
    with tempfile.TemporaryDirectory() as d:
        node = build_node(NodeConfig(node_id="probe", data_dir=d))
        try:
            app = create_app(node, build_cache(node))
            out = set()
            for route in app.router.routes():
                info = route.resource.get_info() if route.resource is not None else {}
                path = info.get("path") or info.get("formatter")
                if path and route.method != "HEAD":
                    out.add((route.method, re.sub(r"\{[^}]*\}", "sec-x", path)))
        finally:
            node._io.close()
            node.storage.close()
    return sorted(out)


ROUTES = app_routes()
PEER = [(m, p) for m, p in ROUTES if required_role(m, p) == Role.PEER and "raft" not in p]
CLIENT = [r for r in ROUTES if required_role(*r) != Role.PEER]
MUTATING = [(m, p) for m, p in CLIENT if m not in ("GET", "HEAD")]
ADMIN_ROUTES = [(m, p) for m, p in MUTATING if required_role(m, p) == Role.ADMIN]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    with LocalCluster(3, env=ENV, token=READ,
                      node_env={"n3": {"DISTSYNC_WRITE_TOKEN": f"{WRITE},{ONLY_N3}"}}) as c:
        leader = ready(c)
        code, body = http_json("PUT", f"{c.nodes[leader].url}/v1/kv/{SEED}", {"value": "v0"},
                               headers=bearer(WRITE), timeout=10)
        assert code == 200, diag(c, f"seed: {code} {body}")
        yield c


def test_there_are_mutating_routes_to_check() -> None:
    assert ("PUT", "/v1/kv/sec-x") in MUTATING
    assert ("POST", "/v1/cluster/members") in ADMIN_ROUTES


def test_refused_requests_change_nothing(lc: LocalCluster) -> None:
    leader = ready(lc)
    follower = next(n for n in lc.nodes if n != leader)
    wait_until(lc, lambda: len({v for v in log_marks(lc).values()}) == 1, 30, "logs to agree")
    before = log_marks(lc)
    failures = []
    for nid in (leader, follower):
        url = lc.nodes[nid].url
        checks = [({}, m, p, 401) for m, p in CLIENT if required_role(m, p) != Role.OPEN]
        checks += [(bearer("not-a-token-" + "z" * 20), m, p, 401) for m, p in MUTATING]
        checks += [(bearer(READ), m, p, 403) for m, p in MUTATING]
        checks += [(bearer(WRITE), m, p, 403) for m, p in ADMIN_ROUTES]
        # Node-to-node routes take no client token at all, not even an admin's.
        checks += [(h, m, p, 403) for m, p in PEER for h in ({}, bearer(ADMIN))]
        for headers, method, path, want in checks:
            body = {"value": "changed"} if method != "GET" else None
            code, got = http_json(method, url + path, body, headers=headers, timeout=10)
            ok = code == want and isinstance(got, dict) and got.get("error") == (
                "unauthorized" if want == 401 else "forbidden"
            )
            if not ok:
                failures.append(f"{nid} {method} {path} {headers}: {code} {got}")
    assert not failures, "\n".join(failures)
    assert log_marks(lc) == before, diag(lc, f"the log moved: {before} -> {log_marks(lc)}")
    code, got = http_json("GET", f"{lc.nodes[leader].url}/v1/kv/{SEED}", headers=bearer(READ))
    assert code == 200 and got["value"] == "v0", got


def test_probes_stay_open(lc: LocalCluster) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/ui/",
                 "/ui/js/app.js", "/v1/auth/whoami"):
        code, _, body = raw_request("GET", lc.nodes["n1"].url + path)
        assert code == 200, (path, code, body)
    # whoami without a token says so (no role) rather than 401: no more than a 401 tells.
    assert http_json("GET", lc.nodes["n1"].url + "/v1/auth/whoami") == \
        (200, {"auth": True, "role": None})


async def test_roles_that_suffice_pass(lc: LocalCluster) -> None:
    async with Client(lc.addrs, token=READ) as reader, \
            Client(lc.addrs, token=WRITE) as writer, Client(lc.addrs, token=ADMIN) as admin:
        rev = (await writer.put("sec/w", 1))["revision"]
        assert (await reader.get("sec/w"))["revision"] == rev
        assert (await admin.put("sec/a", 2))["revision"] > rev  # admin may write
        with pytest.raises(DistSyncError) as e:
            await reader.put("sec/r", 3)
        assert e.value.status == 403
        with pytest.raises(DistSyncError) as e:
            await writer.transfer_leader()
        assert e.value.status == 403
        old = (await admin.members())["leader"]
        new = await admin.transfer_leader()
        assert new != old


def test_follower_forwards_the_token_and_the_leader_checks_it(lc: LocalCluster) -> None:
    leader = ready(lc)
    if leader == "n3":
        code, body = http_json("POST", f"{lc.nodes['n3'].url}/v1/cluster/transfer-leader",
                               {"to": "n1"}, headers=bearer(ADMIN), timeout=10)
        assert code == 200, body
        leader = ready(lc)
    n3 = lc.nodes["n3"].url
    code, body = http_json("PUT", f"{n3}/v1/kv/sec/fwd", {"value": 1}, headers=bearer(WRITE),
                           timeout=10)
    assert code == 200, body
    # n3 accepts this token itself, but the leader does not: the forwarded write is refused.
    before = log_marks(lc)[leader]
    code, body = http_json("PUT", f"{n3}/v1/kv/sec/fwd", {"value": 2}, headers=bearer(ONLY_N3),
                           timeout=10)
    assert code == 401 and body["error"] == "unauthorized", body
    assert log_marks(lc)[leader] == before


def test_request_ids_are_scoped_to_the_token(lc: LocalCluster) -> None:
    """Two tokens that pick the same Request-Id are two callers: both writes apply (issue
    15 item 1 with auth on). The same token reusing it for another key gets 422."""
    leader = ready(lc)
    follower = next(n for n in sorted(lc.nodes) if n != leader)
    rid = {"Request-Id": "1"}
    urls = [lc.nodes[leader].url, lc.nodes[follower].url]
    got = [
        http_json("PUT", f"{url}/v1/kv/sec/rid-{i}", {"value": i},
                  headers={**bearer(tok), **rid}, timeout=10)
        for i, (url, tok) in enumerate(zip(urls, (WRITE, ADMIN), strict=True))
    ]
    assert [c for c, _ in got] == [200, 200], got
    for i in range(2):
        code, body = http_json("GET", f"{urls[0]}/v1/kv/sec/rid-{i}", headers=bearer(READ))
        assert code == 200 and body["value"] == i, body
    code, body = http_json("PUT", f"{urls[1]}/v1/kv/sec/rid-x", {"value": 0},
                           headers={**bearer(WRITE), **rid}, timeout=10)
    assert code == 422 and body["error"] == "request_id_mismatch", body
