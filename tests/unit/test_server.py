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
        assert isinstance(node.storage, Storage) and (tmp_path / "a" / "raft.db").exists()
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
