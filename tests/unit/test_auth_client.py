"""Client auth (api/auth.py): the role table covers every registered route, tokens map to
roles in constant time, and the middleware answers 401/403 before any handler runs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from distsync.api.app import create_app
from distsync.api.auth import RULES, Role, TokenAuth, resolve
from distsync.node import Node, NodeConfig
from distsync.server import build_cache, build_node

READ, WRITE, ADMIN = "r" * 20, "w" * 20, "a" * 20


def make_node(tmp: Path, **kw: Any) -> Node:
    return build_node(NodeConfig(node_id="n1", listen="127.0.0.1:1", data_dir=str(tmp), **kw))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path, read_token=READ, write_token=WRITE, admin_token=ADMIN)
    yield n
    n._io.close()
    n.storage.close()


def registered(app: web.Application) -> list[tuple[str, str]]:
    """(method, concrete path) of every registered route, placeholders filled in."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None:
            continue
        out.append((route.method, re.sub(r"\{[^}]*\}", "x-1", path)))
    return out


def test_every_registered_route_has_its_own_rule(node: Node) -> None:
    """A route family added without a rule here falls to the fail-closed fallback (admin for
    mutations) and fails this test: add a line to api/auth.py RULES."""
    routes = registered(create_app(node, build_cache(node)))
    assert routes
    uncovered = [(m, p) for m, p in routes if resolve(m, p)[1] is None]
    assert not uncovered, f"routes without an auth rule in api/auth.py RULES: {uncovered}"


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/healthz", Role.OPEN),
        ("GET", "/readyz", Role.OPEN),
        ("GET", "/metrics", Role.OPEN),
        ("GET", "/v1/openapi.json", Role.OPEN),
        ("GET", "/v1/raft/stream", Role.PEER),
        ("POST", "/v1/internal/cache/invalidate", Role.PEER),
        ("GET", "/v1/status", Role.READ),
        ("GET", "/v1/kv/a/b", Role.READ),
        ("GET", "/v1/kv", Role.READ),
        ("GET", "/v1/cluster/members", Role.READ),
        ("PUT", "/v1/kv/a", Role.WRITE),
        ("DELETE", "/v1/kv/a", Role.WRITE),
        ("POST", "/v1/locks/x/acquire", Role.WRITE),
        ("POST", "/v1/queues/q/messages", Role.WRITE),
        ("PUT", "/v1/cache/k", Role.WRITE),
        ("POST", "/v1/sessions", Role.WRITE),
        ("POST", "/v1/cluster/members", Role.ADMIN),
        ("DELETE", "/v1/cluster/members/n2", Role.ADMIN),
        ("POST", "/v1/cluster/transfer-leader", Role.ADMIN),
        # Not a prefix match: "/v1/kvx" is not under "/v1/kv".
        ("PUT", "/v1/kvx", Role.ADMIN),
        # Unknown: reads need read, anything else fails closed to admin.
        ("GET", "/nowhere", Role.READ),
        ("POST", "/v1/nowhere", Role.ADMIN),
        ("OPTIONS", "/v1/kv/a", Role.ADMIN),
        ("POST", "/healthz", Role.ADMIN),
    ],
)
def test_role_table(method: str, path: str, role: Role) -> None:
    assert resolve(method, path)[0] == role


def test_rules_are_ordered_specific_first() -> None:
    """No rule is shadowed by an earlier one (it would be dead)."""
    for rule in RULES:
        for m in rule.methods:
            first = resolve(m, rule.prefix.rstrip("/") + "/x")[1]
            assert first is rule, f"{rule} is shadowed by {first}"


def test_token_roles() -> None:
    auth = TokenAuth({Role.READ: [READ], Role.WRITE: [WRITE, "w2" * 10], Role.ADMIN: [ADMIN]})
    assert auth.role_of(READ) == Role.READ
    assert auth.role_of(WRITE) == Role.WRITE
    assert auth.role_of("w2" * 10) == Role.WRITE
    assert auth.role_of(ADMIN) == Role.ADMIN
    assert auth.role_of(READ + "x") is None
    assert auth.role_of("") is None
    # One token configured for two roles has the higher one.
    assert TokenAuth({Role.READ: [READ], Role.ADMIN: [READ]}).role_of(READ) == Role.ADMIN
    with pytest.raises(ValueError, match="shorter"):
        TokenAuth({Role.READ: ["short"]})


def test_from_config_parses_lists_and_is_off_without_tokens(tmp_path: Path) -> None:
    cfg = NodeConfig(node_id="n1", write_token=f" {WRITE} , {'n' * 16} ")
    auth = TokenAuth.from_config(cfg)
    assert auth is not None and auth.role_of("n" * 16) == Role.WRITE
    assert TokenAuth.from_config(NodeConfig(node_id="n1")) is None
    assert READ not in repr(NodeConfig(node_id="n1", read_token=READ))


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(node, build_cache(node)))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_missing_and_wrong_tokens_get_401(client: TestClient) -> None:
    for headers, err in [
        ({}, None),
        (bearer("nope" * 5), "invalid_token"),
        ({"Authorization": f"Basic {READ}"}, "invalid_request"),
        ({"Authorization": "Bearer"}, "invalid_request"),
    ]:
        r = await client.put("/v1/kv/k", json={"value": 1}, headers=headers)
        assert r.status == 401
        body = await r.json()
        assert body["error"] == "unauthorized" and body["message"]
        www = r.headers["WWW-Authenticate"]
        assert www.startswith('Bearer realm="distsync"')
        assert (f'error="{err}"' in www) if err else ("error=" not in www)
    r = await client.get("/v1/status")
    assert r.status == 401


async def test_insufficient_role_gets_403(client: TestClient) -> None:
    r = await client.put("/v1/kv/k", json={"value": 1}, headers=bearer(READ))
    assert r.status == 403
    body = await r.json()
    assert body["error"] == "forbidden"
    assert (body["required_role"], body["role"]) == ("write", "read")
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    r = await client.post("/v1/cluster/transfer-leader", json={}, headers=bearer(WRITE))
    assert r.status == 403 and (await r.json())["required_role"] == "admin"


async def test_sufficient_roles_pass_and_probes_stay_open(client: TestClient) -> None:
    for token in (READ, WRITE, ADMIN):
        r = await client.get("/v1/status", headers=bearer(token))
        assert r.status == 200, await r.text()
    for path in ("/healthz", "/metrics"):
        assert (await client.get(path)).status == 200
    # /readyz answers without a token (503 here: the node is not running).
    assert (await client.get("/readyz")).status == 503
    # The body limit and validation still apply behind the auth check: a write token gets
    # past auth to the handler (which, on this node that never started, finds no leader).
    r = await client.put("/v1/kv/k", data=b"{", headers=bearer(WRITE))
    assert r.status not in (401, 403)


async def test_auth_off_without_tokens(tmp_path: Path) -> None:
    n = make_node(tmp_path)
    try:
        async with TestClient(TestServer(create_app(n, build_cache(n)))) as c:
            assert (await c.get("/v1/status")).status == 200
    finally:
        n._io.close()
        n.storage.close()
