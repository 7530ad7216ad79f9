"""Request deadlines are swept by the Raft loop (no timer per request): a request that is
never answered must still end, with the error the API maps to 503, at its deadline and not
before; answered requests are unaffected."""

from __future__ import annotations

import asyncio
import time

import pytest

from distsync.node import NodeConfig, Unavailable
from distsync.server import build_node


@pytest.mark.asyncio
async def test_unanswered_request_expires_at_its_deadline(tmp_path):
    node = build_node(NodeConfig(node_id="s", data_dir=str(tmp_path / "s")))
    await node.start()
    try:
        assert await node.wait_until(node.is_leader, 5.0)
        res = await node.propose("kv", "put", {"key": "k", "value": 1}, "rid-1", timeout=5.0)
        assert res["revision"] >= 1
        fut = asyncio.get_running_loop().create_future()  # a request nobody will answer
        t0 = time.monotonic()
        node._expire_after(fut, 0.2)
        with pytest.raises(Unavailable, match="timed out"):
            await node._await_result(fut)
        assert time.monotonic() - t0 >= 0.2
        assert all(d[2] is not fut for d in node._deadlines)  # swept out when it expired
        # later requests still commit
        res2 = await node.propose("kv", "put", {"key": "k", "value": 2}, "rid-2", timeout=5.0)
        assert res2["revision"] > res["revision"]
    finally:
        await node.stop()
