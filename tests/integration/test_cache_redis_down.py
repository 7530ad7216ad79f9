"""Redis stopped and restarted under a cache workload: writes fail with a clean 503
`backend_unavailable` while it is down, valid near-cache lines are still served, nothing
acknowledged is lost, and the cluster recovers by itself when Redis is back."""

from __future__ import annotations

import asyncio
import time

from cache_history import Workload, session
from cluster_helpers import diag

from distsync.cache.redis_proc import RedisServer
from distsync.local import LocalCluster

KEYS = [f"rd:{i}" for i in range(4)]


async def test_redis_down_then_back(cache_cluster: LocalCluster, redis_server: RedisServer
                                    ) -> None:
    lc = cache_cluster
    addrs = {nid: nd.addr for nid, nd in lc.nodes.items()}
    wl = Workload(addrs, KEYS, seed=3)
    async with session() as s:
        for k in KEYS:
            assert await wl.write(s, k, "n1") is not None
        for k in KEYS:  # every node caches every key
            for nid in addrs:
                assert await wl.read(s, k, nid) is not None
        task = asyncio.create_task(wl.run(s, writers=2, readers=4))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(redis_server.stop)
        down_at = time.monotonic()
        await asyncio.sleep(3)  # longer than a lease: hits are served by renewed leases
        # While down: a write, a delete and a read of an uncached key fail cleanly.
        for nid, addr in addrs.items():
            async with s.put(f"http://{addr}/v1/cache/rd:0", data=b"x") as r:
                body = await r.json()
                assert r.status == 503 and body["error"] == "backend_unavailable", (nid, body)
                assert body["message"]
            async with s.delete(f"http://{addr}/v1/cache/rd:1") as r:
                assert r.status == 503 and (await r.json())["error"] == "backend_unavailable"
            async with s.get(f"http://{addr}/v1/cache/never-written-{nid}") as r:
                assert r.status == 503 and (await r.json())["error"] == "backend_unavailable"
        up_at = time.monotonic()
        await asyncio.to_thread(redis_server.start)
        await asyncio.sleep(3)
        wl.stop.set()
        await task

        problems = wl.h.check()
        assert not problems, diag(lc, "\n".join(problems[:20]))
        during = [o for o in wl.h.ops if down_at + 0.2 < o.start and o.end < up_at]
        assert not [o for o in during if o.kind == "w"], "no write acknowledged while down"
        hits = [o for o in during if o.kind == "r" and o.hit]
        assert hits, "valid lines were served while Redis was down"
        codes = {(kind, status, err) for kind, status, err in wl.h.failures}
        assert codes and all(st == 503 for _, st, _ in codes), codes
        assert {err for kind, _, err in codes if kind == "w"} == {"backend_unavailable"}, codes
        after = [o for o in wl.h.acked() if o.start > up_at]
        assert after, "writes succeed again once Redis is back, without a restart"
        # Nothing acknowledged was lost (Redis kept its AOF across the restart).
        last = wl.h.last_acked()
        for k in KEYS:
            for nid in addrs:
                r = await wl.read(s, k, nid)
                assert r is not None and r.version >= last[k].version, (k, nid, r)
        async with s.get(f"http://{addrs['n1']}/v1/cache") as r:
            st = await r.json()
        assert st["backend_errors"] > 0 and st["backend"] == "redis"
