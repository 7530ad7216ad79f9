"""The cache workload: writers and readers pinned to different nodes (a cache read is served
from the node it is sent to), PUTting unique values to a few shared keys and GETting them.

Checked (the cache's promise in README: "after a PUT is acknowledged no GET on any node
returns the old value"):

* no stale read: a GET sent after PUT(v) was acknowledged never returns a value whose PUT
  finished before PUT(v) began, nor "absent" (the workload never deletes);
* nothing invented: a GET returns a value some PUT of that key had begun writing before the
  GET finished.

A PUT answered 503 (`backend_unavailable`, `home_unavailable`, `contention`) or not answered
may or may not have taken effect, so it neither proves nor rules out anything.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib.util
import shutil
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import quote

import aiohttp

from .history import Event, History
from .workload import KeyPool, Verdict, Workload

LEASE_MS = 1500  # nodes' cache leases: short, so a partitioned node's lines age out fast


class CacheWorkload(Workload):
    name = "cache"
    needs_cache_backend = True
    node_env = {"DISTSYNC_CACHE_LEASE_MS": str(LEASE_MS)}

    def __init__(self, *a: Any, active_keys: int = 3, ops_per_key: int = 400, **kw: Any):
        super().__init__(*a, **kw)
        tag = f"{self.rng.getrandbits(32):08x}"
        self.pool = KeyPool(f"chaos-{tag}-c", active_keys, ops_per_key, 1 << 30)
        self.values = iter(range(1, 1 << 62))
        self.scheme = "http"

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("distsync.api.cache") is None:
            return "the cache service is not in this build"
        if shutil.which("redis-server") is None:
            return "redis-server is not installed (the cache's shared backend)"
        return None

    async def _op(self, s: aiohttp.ClientSession, addr: str, process: str, key: str,
                  inp: list[Any]) -> Event:
        h = self.history
        p = h.invoke(self.name, process, inp[0], key, inp + [addr])
        url = f"{self.scheme}://{addr}/v1/cache/{quote(key)}"
        try:
            if inp[0] == "put":
                async with s.put(url, data=str(inp[1]).encode()) as r:
                    body = await r.read()
                    if r.status == 200:
                        return h.ok(p, {"version": (await r.json())["version"]})
                    return h.info(p, f"{r.status} {body[:120]!r}")
            async with s.get(url) as r:
                body = await r.read()
                if r.status == 200:
                    return h.ok(p, {"value": int(body), "version":
                                    r.headers.get("X-Cache-Version"),
                                    "hit": r.headers.get("X-Cache")})
                if r.status == 404:
                    return h.ok(p, {"value": None})
                return h.fail(p, None, f"{r.status} {body[:120]!r}")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            if inp[0] == "get":
                return h.fail(p, None, f"{type(e).__name__}: {e}"[:200])
            return h.info(p, f"{type(e).__name__}: {e}"[:200])

    async def run(self, stop: asyncio.Event) -> None:
        async def worker(w: int) -> None:
            addr = self.addrs[w % len(self.addrs)]
            timeout = aiohttp.ClientTimeout(total=self.op_timeout)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                while not stop.is_set():
                    key = self.pool.pick(self.rng)
                    inp: list[Any] = (["put", next(self.values)] if self.rng.random() < 0.3
                                      else ["get"])
                    ev = await self._op(s, addr, f"{w}", key, inp)
                    # Back off after a failure: a node being restarted refuses at once.
                    pause = self.think_s if ev.type == "ok" else 0.2
                    await asyncio.sleep(self.rng.uniform(0, pause))

        await asyncio.gather(*(worker(w) for w in range(self.workers)))

    async def final(self) -> None:
        """Every key read once on every node."""
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            for i, addr in enumerate(self.addrs):
                for key in self.pool.all:
                    await self._op(s, addr, f"final.{i}", key, ["get"])

    @classmethod
    def check(cls, history: History) -> Verdict:
        puts: dict[str, list[tuple[float, float, int]]] = defaultdict(list)  # call, ret, v
        gets: dict[str, list[tuple[Event, Event]]] = defaultdict(list)
        problems: list[str] = []
        for inv, comp in history.pairs(cls.name):
            if comp is not None and comp.error and comp.error[:1] == "4":
                problems.append(f"{inv.key}: {inv.value} -> unexpected {comp.error}")
            if inv.f == "put":
                ret = comp.time if comp is not None and comp.type == "ok" else float("inf")
                puts[inv.key].append((inv.time, ret, inv.value[1]))
            elif comp is not None and comp.type == "ok":
                gets[inv.key].append((inv, comp))
        for key, gs in gets.items():
            ps = puts.get(key, [])
            by_value = {v: (call, ret) for call, ret, v in ps}
            acked = sorted((ret, call) for call, ret, _ in ps if ret != float("inf"))
            rets = [r for r, _ in acked]
            prefix_max_call: list[float] = []
            m = float("-inf")
            for _, call in acked:
                m = max(m, call)
                prefix_max_call.append(m)
            for inv, comp in gs:
                got = comp.value["value"]
                n = bisect.bisect_left(rets, inv.time)  # PUTs acknowledged before the GET
                latest_start = prefix_max_call[n - 1] if n else None
                node = inv.value[-1]
                if got is None:
                    if latest_start is not None:
                        problems.append(f"{key}: GET on {node} at {inv.time / 1e9:.3f}s found "
                                        f"nothing after {n} acknowledged PUTs")
                    continue
                if got not in by_value:
                    problems.append(f"{key}: GET on {node} returned {got}, never written")
                    continue
                call_u, ret_u = by_value[got]
                if call_u > comp.time:
                    problems.append(f"{key}: GET on {node} returned {got} before its PUT began")
                elif latest_start is not None and ret_u < latest_start:
                    problems.append(
                        f"{key}: stale read on {node} at {inv.time / 1e9:.3f}s: got {got}, "
                        f"whose PUT finished before a PUT acknowledged before this GET began")
        counts = dict(history.counts().get(cls.name, Counter()))
        n_gets = sum(len(g) for g in gets.values())
        n_acked = sum(1 for ps in puts.values() for _, r, _ in ps if r != float("inf"))
        if not n_acked:
            problems.append("no PUT was acknowledged")
        finals = [c for i, c in history.pairs(cls.name) if i.process.startswith("final.")]
        if any(c is None or c.type != "ok" for c in finals):
            problems.append("final reads not served by every node after healing")
        detail = f"{n_acked} acknowledged PUTs, {n_gets} answered GETs checked"
        return Verdict(cls.name, not problems, counts, problems, detail)
