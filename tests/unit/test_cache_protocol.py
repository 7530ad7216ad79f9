"""The MESI directory protocol, transition by transition, on three in-process nodes (direct
calls with msgpack round trips, an in-memory backend). Each test names the transition."""

from __future__ import annotations

import asyncio

import pytest

from distsync.cache import BackendUnavailable, CacheConfig, HomeUnavailable, MemoryBackend
from distsync.cache.inproc import InProcCluster
from distsync.cache.near import E, I, M, S

LEASE_MS = 300


class GatedBackend(MemoryBackend):
    """Writes (silent ones and the home's) wait for `gate`, to observe the window while a
    write is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.writing = asyncio.Event()

    async def write(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.writing.set()
        await self.gate.wait()
        return await super().write(*a, **kw)

    async def put(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.writing.set()
        await self.gate.wait()
        return await super().put(*a, **kw)


@pytest.fixture
def cl() -> InProcCluster:
    return InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))


def others(cl: InProcCluster, home: str) -> list[str]:
    return sorted(n for n in cl.nodes if n != home)


async def test_read_miss_without_sharers_grants_exclusive(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n1")
    await cl["n2"].put(k, b"v1")
    cl["n2"].near.drop(k)  # silently evicted: the directory still lists n2 (harmless)
    got = await cl["n3"].get(k)
    assert (got.value, got.hit) == (b"v1", False)
    assert cl.states(k) == {"n1": I, "n2": I, "n3": E}
    assert cl["n1"].dir.entries[k].owner == "n3"
    assert (await cl["n3"].get(k)).hit


async def test_read_miss_with_an_owner_downgrades_it_to_shared(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n1")
    await cl["n2"].put(k, b"v1")
    assert cl.states(k)["n2"] == E
    reads = cl.backend.ops
    got = await cl["n3"].get(k)
    assert got.value == b"v1"
    assert cl.backend.ops == reads, "value came from the owner (cache to cache), not Redis"
    assert cl.states(k) == {"n1": I, "n2": S, "n3": S}
    ent = cl["n1"].dir.entries[k]
    assert ent.owner is None and ent.sharers == {"n2", "n3"}


async def test_read_miss_with_sharers_grants_shared(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n2")
    await cl["n1"].put(k, b"v")
    await cl["n3"].get(k)
    await cl["n2"].get(k)
    assert cl.states(k) == {"n1": S, "n2": S, "n3": S}


async def test_write_with_sharers_invalidates_every_other_copy(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n3")
    await cl["n1"].put(k, b"v1")
    for n in ("n2", "n3"):
        await cl[n].get(k)
    assert set(cl.states(k).values()) == {S}
    before = {n: cl[n].metrics.n["invalidations_received"] for n in cl.nodes}
    res = await cl["n2"].put(k, b"v2")
    assert res["version"] == 2 and res["state"] == E
    assert cl.states(k) == {"n1": I, "n2": E, "n3": I}
    assert cl["n3"].dir.entries[k].owner == "n2"
    for n in ("n1", "n3"):
        assert cl[n].metrics.n["invalidations_received"] == before[n] + 1
    for n in cl.nodes:
        assert (await cl[n].get(k)).value == b"v2"


async def test_exclusive_owner_writes_silently_e_to_m(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n1")
    await cl["n2"].put(k, b"v1")
    cl.peers.record = True
    res = await cl["n2"].put(k, b"v2")
    assert res["version"] == 2 and cl.states(k)["n2"] == E
    assert cl.peers.sent == [], "an E line is upgraded without asking the home"
    assert cl["n2"].metrics.n["silent_upgrades"] == 1
    assert (await cl["n3"].get(k)).value == b"v2"


async def test_modified_line_is_written_back_before_a_downgrade() -> None:
    backend = GatedBackend()
    cl = InProcCluster(["n1", "n2", "n3"], backend=backend, cfg=CacheConfig(lease_ms=LEASE_MS))
    k = cl.key_homed_at("n1")
    assert (await cl["n2"].put(k, b"old"))["state"] == E
    backend.gate.clear()
    backend.writing.clear()
    writer = asyncio.create_task(cl["n2"].put(k, b"new"))  # silent: E -> M
    await backend.writing.wait()
    await asyncio.sleep(0.01)
    assert cl.states(k)["n2"] == M, "holding M while the write-through is in flight"
    reader = asyncio.create_task(cl["n3"].get(k))
    local = asyncio.create_task(cl["n2"].get(k))
    await asyncio.sleep(0.05)
    assert not reader.done() and not local.done(), "readers wait for the write-back"
    backend.gate.set()
    assert (await writer)["version"] == 2
    assert (await reader).value == b"new" and (await local).value == b"new"
    assert cl.states(k) == {"n1": I, "n2": S, "n3": S}


async def test_home_write_holds_readers_until_the_backend_has_it() -> None:
    """A write through the home (PUTX): the writer serves no copy meanwhile, and a miss
    anywhere waits at the home for the write to land."""
    backend = GatedBackend()
    cl = InProcCluster(["n1", "n2", "n3"], backend=backend, cfg=CacheConfig(lease_ms=LEASE_MS))
    k = cl.key_homed_at("n1")
    await cl["n3"].put(k, b"old")
    await cl["n2"].get(k)
    assert cl.states(k) == {"n1": I, "n2": S, "n3": S}
    backend.gate.clear()
    backend.writing.clear()
    writer = asyncio.create_task(cl["n2"].put(k, b"new"))
    await backend.writing.wait()
    assert cl.states(k)["n3"] == I, "every other copy is gone before the write"
    reader = asyncio.create_task(cl["n3"].get(k))
    local = asyncio.create_task(cl["n2"].get(k))
    await asyncio.sleep(0.05)
    assert not reader.done() and not local.done(), "misses wait at the home"
    backend.gate.set()
    assert (await writer)["version"] == 2
    assert (await reader).value == b"new" and (await local).value == b"new"


async def test_a_refused_or_failed_write_leaves_no_new_value_behind() -> None:
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))
    k = cl.key_homed_at("n1")
    other = cl.key_homed_at("n1", prefix="o")
    for key in (k, other):
        await cl["n2"].put(key, b"old")
        await cl["n3"].get(key)
    cl.backend.available = False  # the write reaches the home, which cannot write it
    with pytest.raises(BackendUnavailable):
        await cl["n3"].put(k, b"new")
    # The first failed write cost the key's copies (invalidated before the write failed);
    # after it, the home checks the backend first: other keys keep their valid lines.
    assert set(cl.states(k).values()) == {I}
    with pytest.raises(BackendUnavailable):
        await cl["n3"].put(other, b"new")
    assert cl.states(other) == {"n1": I, "n2": S, "n3": S}
    assert (await cl["n3"].get(other)).hit, "a refused write leaves the writer's copy valid"
    assert (await cl["n2"].get(other)).hit
    cl.backend.available = True
    assert (await cl["n2"].get(k)).value == b"old"

    async def broken_put(*a, **kw):  # type: ignore[no-untyped-def]
        raise BackendUnavailable("connection lost mid-write")

    cl.backend.put = broken_put  # the home's write-through fails
    with pytest.raises(BackendUnavailable):
        await cl["n1"].put(k, b"new")
    assert set(cl.states(k).values()) == {I}
    assert cl["n1"].dir.entries[k].holders() == set(), "nobody caches an unwritten value"
    del cl.backend.put
    got = await cl["n2"].get(k)
    assert got.value == b"old" and cl.states(k)["n2"] == E


async def test_backend_down_serves_valid_lines_and_fails_writes_then_recovers(
    cl: InProcCluster,
) -> None:
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    await cl["n2"].get(k)
    cl.backend.available = False
    got = await cl["n2"].get(k)
    assert got.hit and got.value == b"v1", "a valid line is still served"
    with pytest.raises(BackendUnavailable):
        await cl["n3"].put(k, b"v2")
    with pytest.raises(BackendUnavailable):
        await cl["n3"].get("other-key")
    assert cl["n3"].metrics.n["backend_errors"] == 2
    cl.backend.available = True
    assert (await cl["n3"].put(k, b"v2"))["version"] >= 2
    assert (await cl["n2"].get(k)).value == b"v2"


async def test_ttl_is_honoured_on_every_node(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n2")
    await cl["n1"].put(k, b"short", ttl_ms=150)
    got = await cl["n3"].get(k)
    assert got.value == b"short"
    line = cl["n3"].near.peek(k)
    assert line is not None and 0 < line.ttl_ms(cl.clock()) <= 150
    await asyncio.sleep(0.2)
    for n in cl.nodes:
        assert cl[n].near.state(k) == I
        assert (await cl[n].get(k)).value is None


async def test_delete_invalidates_everywhere(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n3")
    await cl["n1"].put(k, b"v")
    await cl["n2"].get(k)
    res = await cl["n3"].delete(k)
    assert res["existed"] and res["version"] == 2
    assert set(cl.states(k).values()) == {I}
    for n in cl.nodes:
        assert (await cl[n].get(k)).value is None
    assert not (await cl["n3"].delete(k))["existed"]


async def test_invalidation_during_a_pending_fill_keeps_the_grant_out(cl: InProcCluster) -> None:
    """A grant that may predate a write is returned to its reader but never cached."""
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    svc = cl["n3"]
    seen = svc._begin(k)  # as if a GETS were out
    await svc.dispatch("inv", {"keys": [k], "src": "n1"})
    assert svc._end(k, seen) is True


async def test_unreachable_sharer_is_waited_out_then_resynced(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    await cl["n3"].get(k)
    assert cl.states(k)["n3"] == S
    cl.peers.down.add("n3")  # partitioned: keeps its line but hears from nobody
    t0 = asyncio.get_running_loop().time()
    await cl["n2"].put(k, b"v2")
    waited = asyncio.get_running_loop().time() - t0
    assert waited >= LEASE_MS / 1000 * 0.5, "the home waited for n3's lease to run out"
    assert "n3" in cl["n1"].dir.suspect
    # n3 still has the old line but no valid lease: it does not serve it.
    assert cl["n3"].near.state(k) == S and not cl["n3"].lease_ok("n1")
    got = await cl["n3"].get(k)  # the home is unreachable for n3: read through, uncached
    assert (got.value, got.hit) == (b"v2", False)
    cl.peers.down.discard("n3")
    await cl["n3"].heartbeat()  # told to resync: drops every line from n1
    assert cl["n3"].near.state(k) == I and cl["n3"].homes["n1"].need_resync
    await cl["n3"].heartbeat()
    assert "n3" not in cl["n1"].dir.suspect and cl["n3"].lease_ok("n1")
    assert (await cl["n3"].get(k)).value == b"v2"


async def test_unreachable_owner_is_fenced(cl: InProcCluster) -> None:
    """An owner cut off mid-way cannot land a write after the home moved on."""
    k = cl.key_homed_at("n1")
    await cl["n2"].put(k, b"v1")
    line = cl["n2"].near.peek(k)
    assert line.state == E
    cl.peers.down.add("n2")
    got = await cl["n3"].get(k)  # FETCH fails: revoke n2, wait its lease, seal the key
    assert got.value == b"v1"
    nv, _ = await cl.backend.write(k, line.version, line.version + 1, b"late", None)
    assert nv == 0, "the late silent write of the revoked owner is rejected"
    with pytest.raises(HomeUnavailable):
        await cl["n2"].put(k, b"v9")  # its lease lapsed; the home is unreachable
    assert (await cl["n1"].get(k)).value == b"v1"


async def test_home_restart_rebuilds_by_broadcast_invalidation(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n1")
    await cl["n2"].put(k, b"v1")
    await cl["n3"].get(k)
    assert cl.states(k) == {"n1": I, "n2": S, "n3": S}
    new = cl.restart("n1")  # empty directory, new incarnation
    assert not new.dir.warm(k)
    await cl["n2"].put(k, b"v2")
    assert cl["n1"].metrics.n["broadcasts"] == 1
    assert cl.states(k) == {"n1": I, "n2": E, "n3": I}
    assert (await cl["n3"].get(k)).value == b"v2"


async def test_membership_change_moves_homes_and_drops_moved_lines() -> None:
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))
    keys = [f"m{i}" for i in range(60)]
    for i, k in enumerate(keys):
        await cl[f"n{1 + i % 3}"].put(k, b"v1")
        await cl["n2"].get(k)
    before = {k: cl.home(k) for k in keys}
    cl.set_members(["n1", "n2", "n3", "n4"])
    cl["n1"]._ring_check()
    moved = [k for k in keys if cl["n1"].home_of(k) != before[k]]
    assert moved and all(cl["n1"].home_of(k) == "n4" for k in moved)
    for k in moved:
        await cl["n4"].put(k, b"v2")
    for k in keys:
        want = b"v2" if k in moved else b"v1"
        for n in cl.nodes:
            assert (await cl[n].get(k)).value == want, (k, n)
    cl.set_members(["n1", "n2", "n4"])  # n3 removed
    for k in keys:
        await cl["n1"].put(k, b"v3")
        for n in ("n1", "n2", "n4"):
            assert (await cl[n].get(k)).value == b"v3"


async def test_concurrent_writers_and_readers_never_read_older_than_acknowledged() -> None:
    """An in-process history check (the real-cluster one is in tests/integration)."""
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))
    keys = ["h0", "h1", "h2"]
    acked: dict[str, list[tuple[float, int]]] = {k: [] for k in keys}  # (ack time, version)
    bad: list[str] = []
    loop = asyncio.get_running_loop()

    async def writer(i: int) -> None:
        for j in range(40):
            k = keys[(i + j) % 3]
            res = await cl[f"n{1 + (i + j) % 3}"].put(k, f"{i}-{j}".encode())
            acked[k].append((loop.time(), res["version"]))
            await asyncio.sleep(0)

    async def reader(i: int) -> None:
        for j in range(150):
            k = keys[j % 3]
            start = loop.time()
            floor = max((v for t, v in acked[k] if t < start), default=0)
            got = await cl[f"n{1 + (i + j) % 3}"].get(k)
            if got.value is not None and got.version < floor:
                bad.append(f"{k}: read v{got.version} after v{floor} was acknowledged")
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(i) for i in range(3)), *(reader(i) for i in range(4)))
    assert not bad, bad[:5]


async def test_a_resync_during_the_writers_own_write_keeps_it_listed() -> None:
    """A suspect node's resync (which makes the home forget it everywhere) lands while the
    home is writing that node's PUT: the writer's E grant must still be in the directory, or
    a later write never invalidates it and it serves its value as a hit after newer PUTs
    (found by the chaos suite: seed 1713011460, a restarted node's resync heartbeat crossed
    its own PUT)."""
    backend = GatedBackend()
    cl = InProcCluster(["n1", "n2", "n3"], backend=backend, cfg=CacheConfig(lease_ms=LEASE_MS))
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    await cl["n3"].get(k)
    cl.peers.down.add("n3")
    await cl["n2"].put(k, b"v2")  # n3 does not answer: revoked, suspect
    cl.peers.down.discard("n3")
    await cl["n3"].heartbeat()  # told to resync: drops its lines from n1
    assert cl["n3"].homes["n1"].need_resync and "n3" in cl["n1"].dir.suspect
    backend.gate.clear()
    backend.writing.clear()
    writer = asyncio.create_task(cl["n3"].put(k, b"v3"))
    await backend.writing.wait()  # the home is writing n3's value
    await cl["n3"].heartbeat()  # the resync echo crosses the write
    assert "n3" not in cl["n1"].dir.suspect
    backend.gate.set()
    assert (await writer)["version"] == 3
    if cl["n3"].near.state(k) != I:  # n3 kept its line: the home must know it
        assert cl["n1"].dir.entries[k].owner == "n3"
    await cl["n2"].put(k, b"v4")
    got = await cl["n3"].get(k)
    assert got.value == b"v4", f"n3 served {got.value!r} (hit={got.hit}) after v4"


async def test_a_former_home_invalidating_its_own_copy_does_not_wait_for_itself() -> None:
    """A home transaction that outlives a ring change invalidates the home's own copy: the
    handler must not wait for the key's directory lock, which that transaction holds."""
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))
    ring4 = InProcCluster(["n1", "n2", "n3", "n4"])
    k = next(f"k{i}" for i in range(10_000)
             if cl.home(f"k{i}") == "n1" and ring4.home(f"k{i}") == "n4")
    await cl["n2"].put(k, b"v1")
    await cl["n1"].get(k)
    assert cl.states(k)["n1"] == S
    svc = cl["n1"]
    async with svc.dir.locks.hold(k):  # a transaction of n1 as k's home ...
        cl.set_members(["n1", "n2", "n3", "n4"])  # ... outlives the ring change
        await asyncio.wait_for(svc.dispatch("inv", {"keys": [k], "src": "n1"}), 2)
        assert svc.near.state(k) == I
        # An invalidation from the new home still waits for the former home's transaction.
        from_new_home = asyncio.create_task(svc.dispatch("inv", {"keys": [k], "src": "n4"}))
        await asyncio.sleep(0.05)
        assert not from_new_home.done()
    assert (await asyncio.wait_for(from_new_home, 2))["ok"]


async def test_a_late_resync_echo_does_not_clear_a_newer_revocation(cl: InProcCluster) -> None:
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    await cl["n3"].get(k)
    cl.peers.down.add("n3")
    await cl["n2"].put(k, b"v2")  # revocation 1
    cl.peers.down.discard("n3")
    await cl["n3"].heartbeat()
    first = cl["n3"].homes["n1"].need_resync
    await cl["n3"].heartbeat()  # echoes revocation 1: cleared
    assert (await cl["n3"].get(k)).value == b"v2" and cl["n3"].near.state(k) == S
    cl.peers.down.add("n3")
    await cl["n2"].put(k, b"v3")  # revocation 2, while n3 holds v2
    cl.peers.down.discard("n3")
    rep = await cl["n1"].dispatch("hb", {"src": "n3", "resynced": first})  # a late echo
    assert rep.get("resync") and rep.get("lease_ms") == 0
    assert "n3" in cl["n1"].dir.suspect
    assert (await cl["n3"].get(k)).value == b"v3"


async def test_own_fill_granted_before_own_write_is_not_cached(cl: InProcCluster) -> None:
    """A node's read miss and its own write race: the grant of the read predates the write,
    so it must not overwrite the written line (no invalidation tells the writer)."""
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    svc = cl["n3"]
    seen = svc._begin(k)  # a GETS of n3 is out ...
    await svc.put(k, b"v2")  # ... while n3 writes
    assert svc._end(k, seen) is True


class HeldReplies:
    """Wraps LocalPeers: the reply to `op` from `src` is held back (already processed by the
    receiver, still on its way back, as under packet loss) until `release` is set."""

    def __init__(self, peers, src: str, op: str) -> None:  # type: ignore[no-untyped-def]
        self.peers, self.src, self.op = peers, src, op
        self.release = asyncio.Event()
        self.held = asyncio.Event()

    async def call(self, node, op, msg):  # type: ignore[no-untyped-def]
        reply = await self.peers.call(node, op, msg)
        if op == self.op and msg.get("src") == self.src and not self.release.is_set():
            self.held.set()
            await self.release.wait()
        return reply


async def test_fetch_before_a_delayed_exclusive_grant_keeps_the_grant_out(
        cl: InProcCluster) -> None:
    """Found by the chaos suite (tests/chaos/data/cache-stale-hit-after-loss.jsonl): n2's
    GETS is granted E, but the reply is slow (packet loss); meanwhile n3's miss makes the home
    FETCH from n2, which has no line yet and answers so, and the home drops it as owner and
    grants n3 E. The late grant must not be installed: n2 would hold an E line the directory
    does not list, write it silently, and serve that write as a hit after later PUTs."""
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    cl["n1"].near.drop(k)
    held = HeldReplies(cl.peers, "n2", "gets")
    cl["n2"].peers = held
    slow = asyncio.create_task(cl["n2"].get(k))
    await held.held.wait()
    assert cl["n1"].dir.entries[k].owner == "n2"
    assert (await cl["n3"].get(k)).value == b"v1"  # FETCH from n2 finds nothing
    held.release.set()
    assert (await slow).value == b"v1"
    assert cl["n2"].near.state(k) == I, "a grant the home has since taken back"
    await cl["n2"].put(k, b"v2")
    await cl["n1"].put(k, b"v3")
    for n in cl.nodes:
        assert (await cl[n].get(k)).value == b"v3", n


async def test_fetch_before_a_delayed_write_grant_keeps_the_grant_out(
        cl: InProcCluster) -> None:
    """The same race for a write: the home wrote n2's value and listed n2 as owner, but the
    answer is slow; n3's miss makes the home FETCH from n2 (no line yet), so the home reads
    Redis (the new value) and stops listing n2, whose late grant must then not be cached."""
    k = cl.key_homed_at("n1")
    await cl["n1"].put(k, b"v1")
    cl["n1"].near.drop(k)
    held = HeldReplies(cl.peers, "n2", "putx")
    cl["n2"].peers = held
    slow = asyncio.create_task(cl["n2"].put(k, b"v2"))
    await held.held.wait()
    assert cl["n1"].dir.entries[k].owner == "n2"
    assert (await cl["n3"].get(k)).value == b"v2", "the write landed before its answer"
    assert cl.states(k)["n3"] == E
    held.release.set()
    assert (await slow)["version"] == 2
    assert cl.states(k)["n2"] == I, "a grant the home has since taken back"
    await cl["n3"].put(k, b"v3")  # silent: n3 is the only holder
    for n in cl.nodes:
        assert (await cl[n].get(k)).value == b"v3", n
    await cl["n2"].put(k, b"v4")
    for n in cl.nodes:
        assert (await cl[n].get(k)).value == b"v4", n


async def test_concurrent_writes_of_one_node_cache_neither_grant(cl: InProcCluster) -> None:
    """Two writes of n2 to one key out at once: their answers may cross, so the node keeps
    neither grant (it would otherwise risk keeping the older value as its E line)."""
    k = cl.key_homed_at("n1")
    await cl["n3"].put(k, b"v0")
    a, b = await asyncio.gather(cl["n2"].put(k, b"a"), cl["n2"].put(k, b"b"))
    assert {a["version"], b["version"]} == {2, 3}
    assert cl.states(k)["n2"] == I
    last = b"a" if a["version"] == 3 else b"b"
    for n in cl.nodes:
        assert (await cl[n].get(k)).value == last, n


class HeldRequests:
    """Wraps LocalPeers: `op` from `src` reaches its receiver only once `release` is set."""

    def __init__(self, peers, src: str, op: str) -> None:  # type: ignore[no-untyped-def]
        self.peers, self.src, self.op = peers, src, op
        self.release = asyncio.Event()
        self.held = asyncio.Event()

    async def call(self, node, op, msg):  # type: ignore[no-untyped-def]
        if op == self.op and msg.get("src") == self.src and not self.release.is_set():
            self.held.set()
            await self.release.wait()
        return await self.peers.call(node, op, msg)


async def test_own_read_miss_of_an_absent_key_keeps_the_writer_listed() -> None:
    """Found by the chaos suite (`crashes` seed 502): n1 reads and writes a key that does not
    exist yet, at once, and its read reaches the home only after the write. The home must
    keep n1 listed as owner: n1 may hold the line in E from its write, so a later PUT
    elsewhere has to invalidate it (it used to be forgotten, and n1 served its write as a
    hit after). The read's own grant predates nothing n1 knows and is not cached."""
    backend = GatedBackend()
    cl = InProcCluster(["n1", "n2", "n3"], backend=backend, cfg=CacheConfig(lease_ms=LEASE_MS))
    k = cl.key_homed_at("n2")
    held = HeldRequests(cl.peers, "n1", "gets")
    cl["n1"].peers = held
    reader = asyncio.create_task(cl["n1"].get(k))
    await held.held.wait()
    backend.gate.clear()
    writer = asyncio.create_task(cl["n1"].put(k, b"v1"))
    await backend.writing.wait()  # the home is writing n1's value
    held.release.set()
    backend.gate.set()
    assert (await writer)["version"] == 1
    assert (await reader).value in (None, b"v1")
    assert cl["n2"].dir.entries[k].owner == "n1"
    await cl["n3"].put(k, b"v2")
    for n in cl.nodes:
        assert (await cl[n].get(k)).value == b"v2", n


class _FrozenView:
    """A node's view of a membership it never moves on from: a removed node that did not
    learn of its removal (Raft need not tell it), still up and serving reads."""

    def __init__(self, node_id: str, members: frozenset[str]) -> None:
        self.id, self._members, self._tok = node_id, members, object()

    def members(self) -> frozenset[str]:
        return self._members

    def conf_token(self) -> object:
        return self._tok

    def conf_index(self) -> int:
        return 1

    async def wait_conf(self, index: int, timeout: float) -> bool:
        return False

    # It hears from no leader (nobody sends a removed node anything), so it cannot prove
    # its membership current.
    def leader(self) -> str | None:
        return None

    def applied_index(self) -> int:
        return 1

    async def wait_applied(self, index: int, timeout: float) -> bool:
        return False

    async def read_index(self, timeout: float) -> int | None:
        return None


async def test_a_removed_node_unaware_of_its_removal_serves_nothing_older_than_a_later_write(
) -> None:
    """Found by the whole-cluster simulation (seed 35): n3 holds a key in E, is removed from
    the cluster without applying the removal itself, and keeps serving its copy under the
    lease the home renewed before the removal. The home's broadcast for the now cold key
    went only to the current members, so a PUT acknowledged after it did not stop n3 from
    returning the older value."""
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))
    key = "r1"  # its home is n1 with or without n3
    assert cl.home(key) == "n1"
    await cl["n3"].put(key, b"v1")
    assert (await cl["n3"].get(key)).hit
    cl["n3"].view = _FrozenView("n3", frozenset({"n1", "n2", "n3"}))
    cl.set_members(["n1", "n2"])
    await cl["n2"].put(key, b"v2")  # acknowledged
    got = await cl["n3"].get(key)
    assert got.value == b"v2", got


async def test_a_removed_home_unaware_of_its_removal_stops_serving_its_own_lines() -> None:
    """Found by the whole-cluster simulation (seeds 339 and 386): n1 was removed while it was
    down and came back from a log without its removal, so it still saw itself as the home
    of its keys. A home's own lines had no lease at all: it served its E copy for ever,
    while the key's new home acknowledged newer PUTs. A home now serves its own lines, and
    acts as home, only for a lease after it last proved its configuration current."""
    cl = InProcCluster(["n1", "n2", "n3"], cfg=CacheConfig(lease_ms=LEASE_MS))
    key = next(k for k in (f"h{i}" for i in range(1000)) if cl.home(k) == "n3")
    await cl["n3"].put(key, b"v1")
    assert (await cl["n3"].get(key)).hit
    cl["n3"].view = _FrozenView("n3", frozenset({"n1", "n2", "n3"}))
    cl.set_members(["n1", "n2"])
    await cl["n2"].put(key, b"v2")  # acknowledged
    got = await cl["n3"].get(key)
    assert got.value == b"v2", got
    assert not got.hit
    with pytest.raises(HomeUnavailable):
        await cl["n3"].put(key, b"v3")  # it cannot prove it is still the home
    assert (await cl["n1"].get(key)).value == b"v2"
