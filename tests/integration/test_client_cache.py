"""The cache client as users expect it (issue 20): values are bytes, text or JSON with the
codec stated and nothing else reaches the wire; no key shadows a route; the extras."""

from __future__ import annotations

import asyncio

import pytest

from distsync.client import BlockingClient, Client
from distsync.client.cache import CacheCodecError
from distsync.local import LocalCluster


@pytest.mark.parametrize("bad", [5, 10**7, [104, 105], {"a": 1}, True, 1.5, None, object()])
async def test_set_refuses_values_that_are_not_bytes_or_text(
    shared_cluster: LocalCluster, bad: object,
) -> None:
    """Bug 2: `set("k", 5)` stored five zero bytes, a list of ints became bytes, 10**7 sent
    10 MB of zeros. Now any such value is a TypeError raised before any request, and the key
    keeps what it had."""
    async with Client(shared_cluster.addrs) as c:
        await c.cache.set("c20-typed", b"before")
        with pytest.raises(TypeError):
            await c.cache.set("c20-typed", bad)  # type: ignore[arg-type]
        assert await c.cache.get("c20-typed") == b"before"


async def test_text_and_json_round_trip_with_the_codec_stated(
    shared_cluster: LocalCluster,
) -> None:
    async with Client(shared_cluster.addrs) as c:
        await c.cache.set("c20-text", "héllo")
        assert await c.cache.get("c20-text") == "héllo".encode()
        assert await c.cache.get("c20-text", codec="utf-8") == "héllo"
        doc = {"a": [1, 2, {"b": None}], "n": 5}
        await c.cache.set("c20-json", doc, codec="json")
        assert await c.cache.get("c20-json", codec="json") == doc
        await c.cache.set("c20-json5", 5, codec="json")
        assert await c.cache.get("c20-json5") == b"5"
        with pytest.raises(CacheCodecError):
            await c.cache.set("c20-json", b"x", codec="yaml")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await c.cache.set("c20-json", {1, 2}, codec="json")


def test_blocking_set_refuses_an_int(shared_cluster: LocalCluster) -> None:
    with BlockingClient(shared_cluster.addrs) as c:
        with pytest.raises(TypeError):
            c.cache.set("c20-blocking", 5)  # type: ignore[arg-type]
        assert c.cache.get("c20-blocking") is None


async def test_a_key_named_stats_is_a_key(shared_cluster: LocalCluster) -> None:
    """Bug 3: `set("stats", b"mine")` succeeded, then `get("stats")` answered the node's
    statistics. Statistics now live at `GET /v1/cache` (no key is empty), so every key,
    `stats` included, is the user's."""
    async with Client(shared_cluster.addrs) as c:
        await c.cache.set("stats", b"mine")
        assert await c.cache.get("stats") == b"mine"
        st = await c.cache.stats()
        assert "hits" in st or "states" in st, st
        await c.cache.set("state", b"also mine")
        assert await c.cache.get("state") == b"also mine"
        assert await c.cache.delete("stats") is True
        assert await c.cache.get("stats") is None


async def test_mget_mset(shared_cluster: LocalCluster) -> None:
    async with Client(shared_cluster.addrs) as c:
        versions = await c.cache.mset({"c20-m1": b"1", "c20-m2": "two"})
        assert set(versions) == {"c20-m1", "c20-m2"}
        await c.cache.delete("c20-m3")
        got = await c.cache.mget(["c20-m1", "c20-m2", "c20-m3"])
        assert got == {"c20-m1": b"1", "c20-m2": b"two", "c20-m3": None}
        with pytest.raises(TypeError):
            await c.cache.mset({"c20-m1": b"ok", "c20-m4": 4})  # type: ignore[dict-item]
        assert await c.cache.get("c20-m4") is None and await c.cache.get("c20-m1") == b"1"


async def test_get_or_set_runs_one_loader_per_key_across_clients(
    shared_cluster: LocalCluster,
) -> None:
    """Ten callers through three clients (one per node) miss at once: one loader runs and
    everyone gets its value."""
    lc = shared_cluster
    calls = 0

    async def loader() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # a slow database read, while the others wait
        return b"loaded"

    key = "c20-gos"
    clients = [Client([a]) for a in lc.addrs]
    try:
        await clients[0].cache.delete(key)
        got = await asyncio.gather(*(
            clients[i % len(clients)].cache.get_or_set(key, loader, ttl=30) for i in range(10)
        ))
        assert got == [b"loaded"] * 10
        assert calls == 1
        assert await clients[1].cache.get(key) == b"loaded"
        doc = await clients[2].cache.get_or_set("c20-gos-json", lambda: {"n": 1}, codec="json")
        assert doc == {"n": 1}
    finally:
        for c in clients:
            await c.close()


async def test_set_nx_and_if_version(shared_cluster: LocalCluster) -> None:
    """Conditional writes, through different nodes (so both the home's check and the E
    owner's local check are used), and many writers racing on one key: exactly one nx wins."""
    from distsync.client.cache import VersionMismatch

    lc = shared_cluster
    clients = [Client([a]) for a in lc.addrs]
    try:
        a, b, c3 = clients
        await a.cache.delete("c20-nx")
        v1 = await a.cache.set("c20-nx", b"first", nx=True)
        assert v1 is not None
        assert await b.cache.set("c20-nx", b"second", nx=True) is None
        assert await a.cache.set("c20-nx", b"again", nx=True) is None  # a holds it in E
        assert await c3.cache.get("c20-nx") == b"first"
        item = await b.cache.get_item("c20-nx")
        assert item is not None and item.version == v1
        v2 = await b.cache.set("c20-nx", b"third", if_version=v1)
        assert v2 > v1
        with pytest.raises(VersionMismatch) as ei:
            await a.cache.set("c20-nx", b"fourth", if_version=v1)
        assert ei.value.version == v2
        v3 = await b.cache.set("c20-nx", b"fifth", if_version=v2)  # b's own E line
        with pytest.raises(VersionMismatch):
            await b.cache.set("c20-nx", b"sixth", if_version=v2)
        assert await c3.cache.get("c20-nx") == b"fifth" and v3 > v2
        with pytest.raises(ValueError):
            await a.cache.set("c20-nx", b"x", nx=True, if_version=1)  # type: ignore[call-overload]

        await a.cache.delete("c20-race")
        got = await asyncio.gather(*(
            clients[i % 3].cache.set("c20-race", f"w{i}", nx=True) for i in range(12)))
        winners = [i for i, v in enumerate(got) if v is not None]
        assert len(winners) == 1, got
        assert await c3.cache.get("c20-race") == f"w{winners[0]}".encode()
    finally:
        for cl in clients:
            await cl.close()


async def test_get_or_set_after_a_failed_loader(shared_cluster: LocalCluster) -> None:
    """A loader that raises gives its fill lease back: the next caller loads at once rather
    than waiting for the lease to run out; a waiter gives up after `wait` seconds."""
    from distsync.client.cache import CacheFillTimeout

    lc = shared_cluster
    async with Client([lc.addrs[0]]) as a, Client([lc.addrs[1]]) as b:
        key = "c20-gos-fail"
        await a.cache.delete(key)

        def broken() -> bytes:
            raise RuntimeError("database down")

        with pytest.raises(RuntimeError):
            await a.cache.get_or_set(key, broken, lease=60)
        assert await asyncio.wait_for(b.cache.get_or_set(key, lambda: b"ok", wait=5), 10) == b"ok"

        await a.cache.delete(key)
        release, loading_now = asyncio.Event(), asyncio.Event()

        async def slow() -> bytes:
            loading_now.set()  # called only once the home has given a the lease
            await release.wait()
            return b"slow"

        loading = asyncio.create_task(a.cache.get_or_set(key, slow, lease=30))
        await asyncio.wait_for(loading_now.wait(), 10)
        with pytest.raises(CacheFillTimeout) as ei:
            await b.cache.get_or_set(key, lambda: b"second loader", wait=0.5)
        assert isinstance(ei.value, TimeoutError)
        release.set()
        assert await loading == b"slow"
        assert await b.cache.get(key) == b"slow"
