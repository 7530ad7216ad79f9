"""server.py is the one composition root: it builds the real node (SQLite storage in the
data directory, the websocket transport, the OS clock, worker threads, the default
services), and `distsync node` runs what it builds."""

from __future__ import annotations

import asyncio

import pytest

from distsync import cli, server
from distsync.node import NodeConfig
from distsync.realparts import RealClock, ThreadIO
from distsync.storage import Storage
from distsync.transport import Transport


@pytest.mark.asyncio
async def test_build_node_wires_the_real_parts(tmp_path) -> None:
    node = server.build_node(NodeConfig(node_id="a", data_dir=str(tmp_path / "a")))
    try:
        assert isinstance(node.storage, Storage) and (tmp_path / "a" / "LOCK").exists()
        assert node.storage.identity() == ("distsync", "a")
        assert isinstance(node.transport, Transport)
        assert isinstance(node.clock, RealClock) and isinstance(node._io, ThreadIO)
        assert {"kv", "locks", "queues"} <= set(node.registry.services)
        assert node.kv is node.registry.services["kv"]
        await node.start()
        assert await node.wait_until(node.is_leader, 5.0)
        res = await node.propose("kv", "put", {"key": "k", "value": 1}, "r1")
        assert res["revision"] >= 1
    finally:
        await node.stop()


def test_the_node_command_runs_the_composition_root(monkeypatch) -> None:
    seen: list[NodeConfig] = []

    async def fake_run(cfg: NodeConfig) -> None:
        seen.append(cfg)

    monkeypatch.setattr(server, "run_node", fake_run)
    asyncio.run(cli._run_node(NodeConfig(node_id="x")))
    assert [c.node_id for c in seen] == ["x"]


@pytest.mark.asyncio
async def test_cache_settings_reach_the_cache_from_the_node_command(monkeypatch, tmp_path) -> None:
    """The cache's backend URL and sizes are `distsync node` options (each also a
    `DISTSYNC_*` variable, as the operator's ConfigMap sets DISTSYNC_REDIS_URL), read by
    cli.py into NodeConfig; the composition root builds the cache service from them."""
    from click.testing import CliRunner

    seen: list[NodeConfig] = []
    monkeypatch.setattr(cli, "_run_node", seen.append)
    monkeypatch.setattr(cli, "run_loop", lambda main, event_loop="auto": None)
    res = CliRunner().invoke(
        cli.main, ["node", "--id", "a", "--data-dir", str(tmp_path / "a"),
                   "--cache-lease-ms", "1234"],
        env={"DISTSYNC_REDIS_URL": "redis://127.0.0.1:1/0", "DISTSYNC_CACHE_MAX_BYTES": "4096",
             "DISTSYNC_CACHE_MAX_VALUE_BYTES": "100"})
    assert res.exit_code == 0, res.output
    (cfg,) = seen
    assert (cfg.redis_url, cfg.cache_max_bytes, cfg.cache_max_value_bytes,
            cfg.cache_lease_ms) == ("redis://127.0.0.1:1/0", 4096, 100, 1234)
    node = server.build_node(cfg)
    cache = server.build_cache(node)
    try:
        assert cache.backend.kind == "redis" and cache.backend.url == cfg.redis_url
        assert (cache.cfg.max_bytes, cache.cfg.max_value_bytes, cache.cfg.lease_ms) == (
            4096, 100, 1234)
        assert cache.view.members() == frozenset({"a"})  # the node's view: its founding conf
    finally:
        await cache.close()
        await node.stop()


def test_the_real_lock_lease_runs_on_the_node_clock_and_gets_the_term_from_the_driver(
        tmp_path) -> None:
    """The lock service is wired where it is built: its lease clock is the node's clock,
    and no one patches a term source into it afterwards."""
    node = server.build_node(NodeConfig(node_id="a", data_dir=str(tmp_path / "a")))
    try:
        locks = node.service("locks")
        assert not hasattr(locks, "term_source")
        before = node.clock.monotonic() * 1000
        assert before <= locks.lease.clock() <= node.clock.monotonic() * 1000
    finally:
        node._io.close()
        node._snap_io.close()
        node.storage.close()
