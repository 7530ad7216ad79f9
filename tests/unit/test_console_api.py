"""The console's server side (api/ui.py, api/overview.py) in-process: the static files and
their headers, the open routes, `whoami` for every kind of token, `/v1/cluster/nodes` for a
member that does not answer, and a page whose every script and import resolves."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from distsync.api.app import create_app
from distsync.node import Node, NodeConfig
from distsync.server import build_cache, build_node

READ, WRITE, ADMIN = "r" * 20, "w" * 20, "a" * 20
CONSOLE = Path(__file__).resolve().parents[2] / "node" / "distsync" / "console"


def make_node(tmp: Path, **kw: Any) -> Node:
    return build_node(NodeConfig(node_id="n1", listen="127.0.0.1:1", data_dir=str(tmp), **kw))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path, read_token=READ, write_token=WRITE, admin_token=ADMIN)
    yield n
    n._io.close()
    n.storage.close()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(node, build_cache(node)))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_page_is_served_without_a_token(client: TestClient) -> None:
    r = await client.get("/ui", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ui/"
    r = await client.get("/ui/")
    assert r.status == 200 and r.content_type == "text/html"
    assert "distsync console" in await r.text()
    # Only its own scripts, only this node.
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    for path, ctype in (("/ui/js/app.js", "text/javascript"), ("/ui/console.css", "text/css")):
        r = await client.get(path)
        assert r.status == 200 and r.content_type == ctype, path


@pytest.mark.parametrize("path", [
    "/ui/nope.js", "/ui/js/..%2F..%2Fapi%2Fui.py", "/ui/..%2F__init__.py", "/ui/js/app.py",
    "/ui/a/b/c.js", "/ui/.hidden.js",
])
async def test_anything_else_under_ui_is_a_json_404(client: TestClient, path: str) -> None:
    r = await client.get(path)
    assert r.status == 404, path
    assert (await r.json())["error"] == "not_found"


@pytest.mark.parametrize(("headers", "role"), [
    ({}, None),
    (bearer("x" * 20), None),
    ({"Authorization": "Basic abc"}, None),
    (bearer(READ), "read"),
    (bearer(WRITE), "write"),
    (bearer(ADMIN), "admin"),
])
async def test_whoami_names_the_role_of_the_token(client: TestClient, headers: dict[str, str],
                                                  role: str | None) -> None:
    r = await client.get("/v1/auth/whoami", headers=headers)
    assert r.status == 200
    assert await r.json() == {"auth": True, "role": role}


async def test_whoami_without_client_auth(tmp_path: Path) -> None:
    n = make_node(tmp_path)
    try:
        async with TestClient(TestServer(create_app(n, build_cache(n)))) as c:
            r = await c.get("/v1/auth/whoami")
            assert await r.json() == {"auth": False, "role": "admin"}
    finally:
        n._io.close()
        n.storage.close()


async def test_cluster_nodes_needs_a_read_token_and_reports_a_silent_member(
    client: TestClient, node: Node,
) -> None:
    r = await client.get("/v1/cluster/nodes")
    assert r.status == 401
    r = await client.get("/v1/cluster/nodes", headers=bearer(READ))
    assert r.status == 200
    got = await r.json()
    assert got["via"] == "n1"
    members = node.status()["members"]
    assert [n["id"] for n in got["nodes"]] == [m["id"] for m in members]
    # This node is not listening on its configured address (127.0.0.1:1): not reachable,
    # with the error and no time it was last seen.
    for n in got["nodes"]:
        assert n["reachable"] is False and n["error"] and n["last_seen_ms"] is None


def test_every_file_the_page_loads_is_shipped() -> None:
    """index.html's stylesheet and script, and every module each script imports, exist."""
    html = (CONSOLE / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="/ui/([^"]+)"', html)
    assert "js/app.js" in refs and "console.css" in refs
    todo, seen = [r for r in refs if r.endswith(".js")], set()
    for r in refs:
        assert (CONSOLE / r).is_file(), r
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        src = (CONSOLE / name).read_text()
        for imp in re.findall(r'from "\./([^"]+)"', src):
            target = f"js/{imp}"
            assert (CONSOLE / target).is_file(), f"{name} imports missing {imp}"
            todo.append(target)
    assert {"js/api.js", "js/cluster.js", "js/locks.js", "js/queues.js", "js/cache.js",
            "js/graph.js", "js/dom.js"} <= seen
