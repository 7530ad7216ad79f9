"""GET /v1/watch in process, on a real (unstarted) node's app: the per-node watcher bound is a
429 with a clear code, and the slot comes back when a stream ends; a history written through
the kv's apply is streamed in order and ends at `timeout_ms`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from distsync.api.app import create_app
from distsync.node import Node, NodeConfig
from distsync.server import build_cache, build_node, build_watches


async def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = build_node(NodeConfig(node_id="n1", data_dir=str(tmp_path), max_watchers=1))
    for i in range(1, 4):
        n.kv.apply("put", {"key": f"a/{i}", "value": i, "sz": 1}, 10 + i)
    yield n
    n._io.close()
    n.storage.close()


async def test_watchers_past_the_bound_get_429_until_a_slot_frees(node: Node) -> None:
    hub = build_watches(node)
    async with TestClient(TestServer(create_app(node, build_cache(node), hub))) as c:
        first = await c.get("/v1/watch?prefix=a/&start_revision=1")
        assert first.status == 200
        assert json.loads(await first.content.readline()) == {"type": "progress", "revision": 0}
        assert json.loads(await first.content.readline())["revision"] == 11
        full = await c.get("/v1/watch?key=a/1")
        assert full.status == 429
        body = await full.json()
        assert body["error"] == "too_many_watchers" and body["max_watchers"] == 1
        first.close()
        await _until(lambda: not hub.watchers)  # the server noticed the consumer left
        again = await c.get("/v1/watch?prefix=a/&start_revision=12&timeout_ms=50")
        assert again.status == 200
        lines = [json.loads(x) for x in (await again.read()).splitlines()]
        assert [ln["revision"] for ln in lines] == [11, 12, 13]


async def test_an_app_without_a_hub_answers_503(node: Node) -> None:
    async with TestClient(TestServer(create_app(node, build_cache(node)))) as c:
        r = await c.get("/v1/watch?prefix=a/")
        assert r.status == 503 and (await r.json())["error"] == "watch_unavailable"


def test_a_watch_client_is_the_callers_scope_or_else_its_address() -> None:
    """The per-client bound counts a caller as request ids scope it (bearer token digest and
    Client-Id); one with neither is counted by its address, not lumped with every other."""
    from aiohttp.test_utils import make_mocked_request

    from distsync.api.watch import watch_client

    def client(headers: dict[str, str]) -> str:
        return watch_client(make_mocked_request("GET", "/v1/watch", headers=headers))

    anon = client({})
    assert anon.startswith("addr:")
    with_id = client({"Client-Id": "app-1"})
    assert with_id.endswith("/app-1") and with_id != client({"Client-Id": "app-2"})
    tok_a = client({"Authorization": "Bearer aaaaaaaaaaaaaaaaaaaa"})
    tok_b = client({"Authorization": "Bearer bbbbbbbbbbbbbbbbbbbb"})
    assert len({anon, tok_a, tok_b}) == 3 and "aaaa" not in tok_a  # a digest, not the token
    assert client({"Authorization": "Bearer aaaaaaaaaaaaaaaaaaaa", "Client-Id": "x"}) != tok_a


async def test_the_per_client_bound_is_a_429_naming_the_limit(tmp_path: Path) -> None:
    n = build_node(NodeConfig(node_id="n1", data_dir=str(tmp_path), max_watchers_per_client=1))
    try:
        hub = build_watches(n)
        async with TestClient(TestServer(create_app(n, build_cache(n), hub))) as c:
            first = await c.get("/v1/watch?prefix=a/", headers={"Client-Id": "app"})
            assert first.status == 200
            over = await c.get("/v1/watch?prefix=b/", headers={"Client-Id": "app"})
            assert over.status == 429
            body = await over.json()
            assert body["error"] == "too_many_watchers" and body["limit"] == \
                "max_watchers_per_client" and body["max_watchers_per_client"] == 1, body
            other = await c.get("/v1/watch?prefix=a/&timeout_ms=10",
                                headers={"Client-Id": "other"})
            assert other.status == 200
            bad = await c.get("/v1/watch?prefix=a/", headers={"Client-Id": "no spaces"})
            assert bad.status == 400 and (await bad.json())["error"] == "invalid_client_id"
            first.close()
            await _until(lambda: not hub.by_client.get("-/app"))
            again = await c.get("/v1/watch?prefix=a/&timeout_ms=10", headers={"Client-Id": "app"})
            assert again.status == 200
    finally:
        n._io.close()
        n.storage.close()


async def test_the_client_watches_under_its_client_id(tmp_path: Path) -> None:
    """`Client(client_id=...)` sends its Client-Id with a watch too, so its watchers count
    under it: with that client's one slot taken, its watch is refused (429, then Unavailable
    when no node serves it), another client's is served."""
    from distsync.client import Client, Unavailable

    n = build_node(NodeConfig(node_id="n1", data_dir=str(tmp_path), max_watchers_per_client=1))
    n.kv.apply("put", {"key": "a/1", "value": 1, "sz": 1}, 11)
    try:
        server = TestServer(create_app(n, build_cache(n), build_watches(n)))
        async with TestClient(server) as c:
            held = await c.get("/v1/watch?prefix=a/", headers={"Client-Id": "app"})
            assert held.status == 200
            addr = f"{server.host}:{server.port}"
            async with Client([addr], client_id="app", timeout=0.5) as mine:
                with pytest.raises(Unavailable):
                    async for _ in mine.watch(prefix="a/", start_revision=1):
                        pass
            async with Client([addr], client_id="other", timeout=5) as theirs:
                async for ev in theirs.watch(prefix="a/", start_revision=1):
                    assert ev["revision"] == 11
                    break
            held.close()
    finally:
        n._io.close()
        n.storage.close()
