"""The backing-store contract, identical for Redis (real redis-server), the embedded store
(`distsync up` without Redis) and the in-process memory store: versions only grow, writes
compare on the version counter, reserve fences, seal re-stamps, TTLs hold, outages raise
BackendUnavailable and recovery needs no restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from distsync.cache.backend import BackendUnavailable, MemoryBackend, RedisBackend
from distsync.cache.embedded import EmbeddedBackend, EmbeddedStoreServer
from distsync.cache.redis_proc import RedisServer


@pytest.fixture(params=["redis", "embedded", "memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    if request.param == "redis":  # only this one needs redis-server (the others run anywhere)
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        be = RedisBackend(redis_server.url)
        await be.client.flushdb()
        yield be
    elif request.param == "embedded":
        srv = EmbeddedStoreServer().start()
        be = EmbeddedBackend(srv.url)
        yield be
        await be.close()
        await asyncio.to_thread(srv.close)
        return
    else:
        be = MemoryBackend()
        yield be
    await be.close()


async def test_versions_compare_fence_and_seal(backend) -> None:  # type: ignore[no-untyped-def]
    be = backend
    ld = await be.load("k")
    assert ld.value is None and ld.counter == 0
    v = await be.reserve("k")
    assert v == 1
    assert await be.write("k", 1, 1, b"\x00bin\xff", None) == (1, False)
    ld = await be.load("k")
    assert (ld.value, ld.version, ld.counter, ld.ttl_ms) == (b"\x00bin\xff", 1, 1, None)
    assert await be.write("k", 1, 2, b"silent", None) == (2, True)  # E -> M: expect, +1
    assert await be.write("k", 1, 2, b"stale", None) == (0, False)  # compare fails
    assert await be.reserve("k") == 3  # fence: an owner's in-flight write (expect 2) fails
    assert await be.write("k", 2, 3, b"late", None) == (0, False)
    ld = await be.load("k", seal=False)
    assert (ld.value, ld.version, ld.counter) == (b"silent", 2, 3)
    ld = await be.load("k", seal=True)  # re-stamped so it can be cached again
    assert (ld.value, ld.version, ld.counter) == (b"silent", 4, 4)
    assert await be.write("k", 4, 5, None, None) == (5, True)  # delete keeps the counter
    ld = await be.load("k")
    assert ld.value is None and ld.counter == 5
    assert await be.reserve("k") == 6


async def test_put_moves_the_counter_on_and_fences(backend) -> None:  # type: ignore[no-untyped-def]
    be = backend
    assert await be.put("p", b"one", None) == (1, False)
    assert await be.write("p", 1, 2, b"silent", None) == (2, True)  # the owner's E -> M
    assert await be.put("p", b"home", None) == (3, True)
    assert await be.write("p", 2, 3, b"late", None) == (0, False), "fenced"
    ld = await be.load("p")
    assert (ld.value, ld.version, ld.counter) == (b"home", 3, 3)
    assert await be.put("p", None, None) == (4, True)  # delete
    assert (await be.load("p")).value is None
    assert await be.put("p", b"ttl", 300) == (5, False)
    assert 0 < (await be.load("p")).ttl_ms <= 300


async def test_a_former_home_cannot_write_after_a_newer_home(backend) -> None:  # type: ignore[no-untyped-def]
    be = backend
    assert await be.put("f", b"old home", None, 3) == (1, False)
    assert await be.reserve("f", 5) == 2  # the home under configuration 5 fences the key
    assert await be.put("f", b"late", None, 3) == (0, False), "the former home is refused"
    assert await be.put("f", b"new home", None, 5) == (3, True)
    assert await be.put("f", b"newer home", None, 7) == (4, True)
    assert await be.put("f", b"late", None, 5) == (0, False)
    assert (await be.load("f")).value == b"newer home"


async def test_redis_commands_of_concurrent_operations_share_a_pipeline(
        redis_server: RedisServer) -> None:
    be = RedisBackend(redis_server.url)
    await be.client.flushdb()
    try:
        res = await asyncio.gather(*(be.put(f"pipe:{i}", b"v%d" % i, None) for i in range(50)))
        assert res == [(1, False)] * 50
        assert be._batch.batches < 50
        await be.client.script_flush()  # Redis forgot the scripts: they are loaded again
        loaded = await asyncio.gather(*(be.load(f"pipe:{i}") for i in range(50)))
        assert [ld.value for ld in loaded] == [b"v%d" % i for i in range(50)]
    finally:
        await be.close()


async def test_ttl(backend) -> None:  # type: ignore[no-untyped-def]
    be = backend
    v = await be.reserve("t")
    await be.write("t", v, v, b"v", 300)
    ld = await be.load("t")
    assert ld.value == b"v" and 0 < ld.ttl_ms <= 300
    await asyncio.sleep(0.4)
    assert (await be.load("t")).value is None
    assert (await be.load("t")).counter == v


async def test_redis_outage_raises_and_recovers(redis_server: RedisServer) -> None:
    be = RedisBackend(redis_server.url)
    v = await be.reserve("o")
    await be.write("o", v, v, b"kept", None)
    await asyncio.to_thread(redis_server.stop)
    try:
        with pytest.raises(BackendUnavailable):
            await be.load("o")
        with pytest.raises(BackendUnavailable):
            await be.reserve("o")
        assert not await be.ping()
    finally:
        await asyncio.to_thread(redis_server.start)
    assert (await be.load("o")).value == b"kept"  # AOF kept it; the client reconnected
    await be.close()
