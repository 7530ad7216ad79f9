"""The cache's coherence guarantee on a real 3-node cluster with a real Redis: concurrent
writers and readers through different nodes, checked by a history checker, then the same
with the SIGKILL of a key's home node in the middle (and its restart)."""

from __future__ import annotations

import asyncio
import time

from cache_history import Workload, session
from cluster_helpers import diag, ready

from distsync.local import LocalCluster

KEYS = [f"hist:{i}" for i in range(6)]


def addrs(lc: LocalCluster) -> dict[str, str]:
    return {nid: nd.addr for nid, nd in lc.nodes.items()}


async def test_concurrent_writers_and_readers_never_read_stale(cache_cluster: LocalCluster
                                                               ) -> None:
    lc = cache_cluster
    wl = Workload(addrs(lc), KEYS, seed=7)
    async with session() as s:
        for k in KEYS:  # every key exists before the readers start
            assert await wl.write(s, k, "n1") is not None
        task = asyncio.create_task(wl.run(s))
        await asyncio.sleep(6)
        wl.stop.set()
        await task
        problems = wl.h.check()
        reads, hits = wl.h.reads(), [r for r in wl.h.reads() if r.hit]
        assert not problems, diag(lc, "\n".join(problems[:20]))
        assert len(wl.h.acked()) >= 30 and len(reads) >= 100, (len(wl.h.acked()), len(reads))
        assert hits, "some reads were near-cache hits"
        assert not wl.h.failures, wl.h.failures[:10]
        # Every node now reads the last acknowledged value of every key.
        last = wl.h.last_acked()
        for k in KEYS:
            for nid in lc.nodes:
                r = await wl.read(s, k, nid)
                assert r is not None and r.version >= last[k].version, (k, nid, r)


async def test_sigkill_of_a_home_node_mid_workload(cache_cluster: LocalCluster) -> None:
    lc = cache_cluster
    wl = Workload(addrs(lc), KEYS, seed=11)
    async with session() as s:
        async with s.get(f"http://{lc.nodes['n1'].addr}/v1/cache/{KEYS[0]}/state") as r:
            victim = (await r.json())["home"]
        for k in KEYS:
            assert await wl.write(s, k, "n2") is not None
        task = asyncio.create_task(wl.run(s))
        await asyncio.sleep(2)
        wl.down.add(victim)
        wl.events.append(("kill", victim, time.monotonic()))
        await asyncio.to_thread(lc.kill, victim)  # SIGKILL
        await asyncio.sleep(3)  # longer than a lease: lines from the dead home go stale
        lc.start_node(victim)
        wl.events.append(("start", victim, time.monotonic()))
        await asyncio.to_thread(ready, lc, 30)
        wl.events.append(("ready", victim, time.monotonic()))
        wl.down.discard(victim)
        await asyncio.sleep(3)
        wl.stop.set()
        await task
        problems = wl.h.check()
        if problems:
            wl.dump("/tmp/cache_sigkill_history.txt")
        assert not problems, diag(lc, "\n".join(problems[:20]))
        # Only the dead home's keys may have failed, and only with a clean retryable 503.
        bad = [f for f in wl.h.failures if f[0] == "w" and f[1] not in (0, 503)]
        assert not bad, bad[:10]
        # No acknowledged PUT lost: every node reads the last acknowledged version (or a
        # newer one from a write whose answer was lost with the killed node).
        last = wl.h.last_acked()
        for k in KEYS:
            for nid in lc.nodes:
                r = await wl.read(s, k, nid)
                assert r is not None and r.version >= last[k].version, (k, nid, r)
                if r.version == last[k].version:
                    assert r.value == last[k].value
        acked_after = [w for w in wl.h.acked() if w.start > 0]
        assert acked_after, "writes went on"
