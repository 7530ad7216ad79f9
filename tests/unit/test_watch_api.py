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
