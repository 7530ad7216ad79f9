"""The coalescing under the cache's PUT path (distsync/cache/batching.py): requests issued
together travel as one batch, each gets its own result or error, and a bounded number of
batches is out at once. Then one place the cache uses it: invalidations to one holder share
a message (Redis pipelines: tests/integration/test_cache_backend.py)."""

from __future__ import annotations

import asyncio

import pytest

from distsync.cache import CacheConfig
from distsync.cache.batching import Batcher
from distsync.cache.inproc import InProcCluster
from distsync.cache.near import E, I


class Recorder:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[tuple[object, list[int]]] = []
        self.gate = gate

    async def send(self, group: object, items: list[int]) -> list[object]:
        self.batches.append((group, list(items)))
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_requests_of_one_turn_go_as_one_batch_per_group() -> None:
    rec = Recorder()
    b: Batcher[int] = Batcher(rec.send)
    got = await asyncio.gather(*(b.submit(i, group=i % 2) for i in range(6)))
    assert got == [0, 10, 20, 30, 40, 50]
    assert sorted(rec.batches) == [(0, [0, 2, 4]), (1, [1, 3, 5])]


async def test_an_item_error_goes_to_its_submitter_alone() -> None:
    b: Batcher[int] = Batcher(Recorder().send)
    ok, bad = await asyncio.gather(b.submit(1), b.submit(-1), return_exceptions=True)
    assert ok == 10 and isinstance(bad, ValueError) and str(bad) == "bad -1"


async def test_a_failed_send_fails_every_item_of_its_batch() -> None:
    async def send(group: object, items: list[int]) -> list[object]:
        raise ConnectionError("down")

    b: Batcher[int] = Batcher(send)
    res = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in res)


async def test_requests_wait_for_a_free_slot_and_then_go_together() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate)
    b: Batcher[int] = Batcher(rec.send, max_inflight=1)
    first = asyncio.ensure_future(b.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(b.submit(i)) for i in range(1, 5)]
    await asyncio.sleep(0.01)
    assert rec.batches == [(None, [0])], "one batch out at a time"
    gate.set()
    assert await first == 0 and await asyncio.gather(*later) == [10, 20, 30, 40]
    assert rec.batches == [(None, [0]), (None, [1, 2, 3, 4])]


async def test_a_cancelled_waiter_is_left_out() -> None:
    gate = asyncio.Event()
    rec = Recorder(gate)
    b: Batcher[int] = Batcher(rec.send, max_inflight=1)
    first = asyncio.ensure_future(b.submit(0))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(b.submit(1))
    kept = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await first == 0 and await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert rec.batches == [(None, [0]), (None, [2])]


async def test_invalidations_to_one_holder_share_a_message() -> None:
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=60_000))
    keys = [k for k in (f"k{i}" for i in range(200)) if cl.home(k) == "n1"][:20]
    for k in keys:
        await cl["n2"].put(k, b"old")
    assert {cl.states(k)["n2"] for k in keys} == {E}
    cl.peers.record = True
    await asyncio.gather(*(cl["n3"].put(k, b"new") for k in keys))
    invs = [m for m in cl.peers.sent if m == ("n1", "n2", "inv")]
    assert 1 <= len(invs) < len(keys)
    assert cl["n2"].metrics.n["invalidations_received"] == len(keys)
    for k in keys:
        assert cl.states(k)["n2"] == I
        assert (await cl["n2"].get(k)).value == b"new"
