"""A stopped node answers what it still holds and what still reaches it, at once.

`distsync node` stops its Raft loop before the HTTP server's graceful shutdown, and the
server keeps accepting requests until then. A request whose proposal, read or operation was
queued for a loop that no longer runs used to wait for ever: its deadline is swept by that
loop. aiohttp's shutdown then waited out its 60 s timeout for the handler (a node's
SIGTERM took a minute, past Kubernetes' default grace period of 30 s), and the client
hung instead of getting a 503 to retry elsewhere. Found as a 61 s test teardown: the
cache's lease confirmation, a ReadIndex round, started while its node stopped."""

from __future__ import annotations

import asyncio

import pytest

from distsync.api.app import serve
from distsync.local import free_ports
from distsync.node import NodeConfig, Unavailable
from distsync.server import build_server

# Far longer than any answer takes; only a hang reaches it.
HANG_S = 20.0


async def _single_node(tmp_path):  # noqa: ANN202
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    nd, app = build_server(NodeConfig(node_id="n1", listen=addr, peers={"n1": addr},
                                      data_dir=str(tmp_path / "n1")))
    runner = await serve(nd, app)
    assert await nd.wait_until(nd.is_leader, HANG_S), "the single node never became leader"
    await nd.propose("kv", "put", {"key": "a", "value": 1}, "rid-a", HANG_S)
    return nd, runner


@pytest.mark.asyncio
async def test_work_queued_when_the_loop_stops_fails_with_unavailable(tmp_path) -> None:
    nd, runner = await _single_node(tmp_path)
    try:
        # Queued, and the loop woken, but the loop never runs again: stop() cancels it
        # before its next pass.
        put = asyncio.ensure_future(nd.propose("kv", "put", {"key": "b", "value": 2}, "rid-b"))
        read = asyncio.ensure_future(nd.read_barrier())
        # A long poll (a lock wait, a dequeue) that would otherwise wait its 30 s out.
        poll = asyncio.ensure_future(nd.wait_until(lambda: False, 30.0))
        await asyncio.sleep(0)
        await nd.stop()
        for fut in (put, read, poll):
            with pytest.raises(Unavailable):
                await asyncio.wait_for(fut, HANG_S)
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_requests_after_stop_fail_with_unavailable(tmp_path) -> None:
    nd, runner = await _single_node(tmp_path)
    try:
        await nd.stop()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(nd.propose("kv", "put", {"key": "c", "value": 3}, "rid-c"),
                                   HANG_S)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(nd.read_barrier(), HANG_S)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(nd.transfer_leader("n2"), HANG_S)
    finally:
        await runner.cleanup()
