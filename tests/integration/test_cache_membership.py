"""Membership changes under a cache workload: a fourth node joins (the ring, and so the
homes of about a quarter of the keys, move to it; the new home starts cold and rebuilds by
broadcast invalidation), then leaves again. The history checker runs across both changes."""

from __future__ import annotations

import asyncio

import aiohttp
from cache_history import Workload, session
from cluster_helpers import diag

from distsync.client import Client, DistSyncError
from distsync.local import LocalCluster

KEYS = [f"mem:{i}" for i in range(8)]


async def until_no_conflict(call) -> None:  # type: ignore[no-untyped-def]
    """Membership changes are one at a time: a 409 means the previous one (or a retry of
    this one) is still being applied; both calls are idempotent, so try again."""
    for _ in range(150):
        try:
            await call()
            return
        except DistSyncError as e:
            if e.code != "membership_conflict":
                raise
            await asyncio.sleep(0.1)
    await call()


async def join_then_leave(lc: LocalCluster, wl: Workload, s: aiohttp.ClientSession,
                          admin: Client) -> tuple[str, list[str]]:
    await asyncio.sleep(1.5)
    n4 = lc.add_joiner()
    await until_no_conflict(lambda: admin.add_member(n4.node_id, n4.addr))
    wl.addrs[n4.node_id] = n4.addr  # clients use the new node too
    await asyncio.sleep(3)
    async with s.get(f"http://{n4.addr}/v1/cache") as r:
        st4 = await r.json()
    assert st4["members"] == sorted(lc.nodes), st4
    moved = []
    for k in KEYS:
        async with s.get(f"http://{lc.nodes['n1'].addr}/v1/cache/{k}/state") as r:
            if (await r.json())["home"] == n4.node_id:
                moved.append(k)
    wl.down.add(n4.node_id)  # clients stop using it before it leaves
    await asyncio.sleep(0.2)
    await until_no_conflict(lambda: admin.remove_member(n4.node_id))
    await asyncio.sleep(2.5)
    return n4.node_id, moved


async def test_join_and_leave_under_load(cache_cluster: LocalCluster) -> None:
    lc = cache_cluster
    wl = Workload({nid: nd.addr for nid, nd in lc.nodes.items()}, KEYS, seed=5)
    n4 = None
    try:
        async with session() as s, Client(lc.addrs) as admin:
            for k in KEYS:
                assert await wl.write(s, k, "n1") is not None
            task = asyncio.create_task(wl.run(s, writers=2, readers=5))
            try:
                n4, moved = await join_then_leave(lc, wl, s, admin)
            finally:
                wl.stop.set()
                await task
            problems = wl.h.check()
            assert not problems, diag(lc, "\n".join(problems[:20]))
            assert moved, "some keys' home moved to the new node"
            assert [o for o in wl.h.reads() if o.node == n4], "the joined node served reads"
            last = wl.h.last_acked()
            for k in KEYS:
                for nid in ("n1", "n2", "n3"):
                    r = await wl.read(s, k, nid)
                    assert r is not None and r.version >= last[k].version, (
                        k, nid, r, wl.h.failures[-3:])
    finally:
        for nid in [n for n in lc.nodes if n not in ("n1", "n2", "n3")]:
            await asyncio.to_thread(lc.kill, nid)  # leave the module's cluster as it was
            del lc.nodes[nid]
