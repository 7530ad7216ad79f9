"""distsync as a system under test: real `distsync node` processes on loopback
(`LocalCluster`), driven through the HTTP API with raw aiohttp requests, the same kind of
client `run.py` uses for etcd's gateway, so neither side gets a smarter client library.
Every request goes to the leader (found in `prepare`), as a leader-aware client would send it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.systems.base import WorkloadTable
from distsync.local import LocalCluster

VALUE = "v" * 100  # 100-byte value, as in every system's "put"
CACHE_VALUE = b"c" * 100
SESSION_TTL_MS = 3_600_000  # the longest lease: no keepalive traffic during the benchmark
READ_KEYS = 100
CACHE_KEYS = 100
READY_TIMEOUT_S = 60.0


class HttpError(Exception):
    """A non-2xx answer; the status code names it in the error column."""


async def _json(resp: aiohttp.ClientResponse) -> Any:
    if resp.status >= 300:
        raise HttpError(f"HTTP {resp.status}: {(await resp.text())[:100]}")
    return await resp.json()


class Distsync(WorkloadTable):
    name = "distsync"
    WORKLOADS = {"put": "_put", "get": "_get", "lock": "_lock",
                 "cache_get": "_cache_get", "cache_put": "_cache_put"}
    NO_WORKLOAD = "distsync has no {workload!r} workload here"

    def __init__(self, nodes: int = 3, data_dir: Path | None = None,
                 redis_url: str | None = None, extra_args: list[str] | None = None,
                 python: str | Path | None = None):
        self.nodes = nodes
        self.durability = ("fsync on a majority: one fdatasync of the segmented log per batch on every node, "
                           "acknowledged once fsynced on leader + 1 follower and applied")
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="distsync-bench-")
        extra = ["--redis-url", redis_url] if redis_url else []
        extra += extra_args or []
        # A long cache lease, so a hit stays a hit for the whole phase (as in cache_bench).
        self.lc = LocalCluster(nodes, data_dir=data_dir or self._tmp, extra_args=extra,
                               env={"DISTSYNC_CACHE_LEASE_MS": "60000"}, python=python)
        self.base = ""  # leader URL, set by prepare()
        self.read_keys: list[str] = []
        self.sessions: dict[int, str] = {}
        self._any = itertools.cycle(sorted(self.lc.nodes))
        self._rid = itertools.count()
        self._run = f"{int(time.time())}-{os.getpid()}"

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> float:
        """Start the nodes and return the seconds until the first acknowledged write. A
        start that fails stops what it started: callers such as ab.py start a cluster
        before the try/finally that would stop it."""
        t0 = time.perf_counter()
        try:
            self.lc.start()
            deadline = t0 + READY_TIMEOUT_S
            async with aiohttp.ClientSession() as s:
                while True:
                    try:
                        await self.write_once(s, f"bench/{self._run}/ready")
                        break
                    except Exception as e:  # noqa: BLE001 - not up yet
                        if time.perf_counter() > deadline:
                            raise RuntimeError(
                                f"no acknowledged write in {READY_TIMEOUT_S:.0f} s ({e!r}); "
                                f"{self._log_tail()}") from None
                        await asyncio.sleep(0.05)
            ready = time.perf_counter() - t0
            await asyncio.to_thread(self.lc.wait_ready, READY_TIMEOUT_S)
        except BaseException:
            await asyncio.to_thread(self.lc.stop)
            raise
        return ready

    def _log_tail(self) -> str:
        tails = []
        for nid, nd in self.lc.nodes.items():
            try:
                last = nd.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            except OSError:
                last = ["<no log>"]
            tails.append(f"{nid}: " + " | ".join(last))
        return "; ".join(tails)

    async def stop(self) -> None:
        await asyncio.to_thread(self.lc.close)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        return {nid: nd.proc.pid for nid, nd in self.lc.nodes.items()
                if nd.proc is not None and nd.alive()}

    async def leader(self) -> str:
        return await asyncio.to_thread(self.lc.leader, 30.0)

    def kill(self, node: str) -> None:
        self.lc.kill(node, signal.SIGKILL)

    def restart(self, node: str) -> None:
        """Start the node again and block until every node is ready (has a leader and has
        caught up): otherwise the next failover round could kill a leader while this node
        is still starting, leaving no quorum, and time that instead of a failover."""
        self.lc.start_node(node)
        self.lc.wait_ready(READY_TIMEOUT_S)

    # -- workloads --------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        # What distsync.client sends on every mutating call (the at-most-once table's key).
        return {"Request-Id": f"b{self._run}-{next(self._rid)}"}

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        self.base = self.lc.nodes[await self.leader()].url
        if workload == "get" and not self.read_keys:
            keys = [f"bench/{self._run}/read/{i}" for i in range(READ_KEYS)]
            for k in keys:
                await self._put(session, 0, k)
            self.read_keys = keys
        elif workload == "lock":
            for w in range(workers):
                if w not in self.sessions:
                    async with session.post(
                        f"{self.base}/v1/sessions", headers=self._headers(),
                        json={"ttl_ms": SESSION_TTL_MS, "name": f"bench-w{w}"},
                    ) as r:
                        self.sessions[w] = (await _json(r))["session"]
        elif workload == "cache_get":
            for i in range(CACHE_KEYS):  # written, then read once here so the line is local
                async with session.put(f"{self.base}/v1/cache/bench-{i}",
                                       data=CACHE_VALUE) as r:
                    await _json(r)
                async with session.get(f"{self.base}/v1/cache/bench-{i}") as r:
                    await r.read()

    async def _put(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        async with s.put(f"{self.base}/v1/kv/{key}", json={"value": VALUE},
                         headers=self._headers()) as r:
            await _json(r)

    async def _get(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        k = self.read_keys[random.randrange(len(self.read_keys))]
        async with s.get(f"{self.base}/v1/kv/{k}") as r:
            await _json(r)

    async def _lock(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        body = {"session": self.sessions[worker]}
        url = f"{self.base}/v1/locks/bench-w{worker}"
        async with s.post(f"{url}/acquire", json={**body, "wait_ms": 0},
                          headers=self._headers()) as r:
            got = await _json(r)
        if not got.get("granted"):
            raise HttpError(f"not granted: {got}")
        async with s.post(f"{url}/release", json=body, headers=self._headers()) as r:
            await _json(r)

    async def _cache_get(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        async with s.get(f"{self.base}/v1/cache/bench-{random.randrange(CACHE_KEYS)}") as r:
            if r.status != 200:
                raise HttpError(f"HTTP {r.status}")
            await r.read()

    async def _cache_put(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        # A bounded key set per worker: each PUT invalidates a line other nodes may hold.
        async with s.put(f"{self.base}/v1/cache/bench-put-{worker}-{hash(key) % 100}",
                         data=CACHE_VALUE) as r:
            await _json(r)

    async def write_once(self, session: aiohttp.ClientSession, key: str) -> None:
        """A PUT through the next live node in turn (a follower forwards it to the leader),
        with a short timeout so a dead leader costs the failover clock little."""
        live = [n for n in sorted(self.lc.nodes) if self.lc.nodes[n].alive()]
        node = next(self._any)
        while node not in live and live:
            node = next(self._any)
        async with session.put(f"{self.lc.nodes[node].url}/v1/kv/{key}", json={"value": VALUE},
                               headers=self._headers(),
                               timeout=aiohttp.ClientTimeout(total=1.0)) as r:
            await _json(r)

    def cache_stats_url(self) -> str:
        return f"{self.base}/v1/cache"

    # -- watches (watch_bench.py) -------------------------------------------------------

    def watch_urls(self) -> list[str]:
        """Every live member: watchers spread over them (any node serves a watch)."""
        return [self.lc.nodes[n].url for n in sorted(self.lc.nodes) if self.lc.nodes[n].alive()]

    async def watch_put(self, s: aiohttp.ClientSession, key: str) -> int:
        """A PUT to the leader (found by `prepare`); its revision."""
        async with s.put(f"{self.base}/v1/kv/{key}", json={"value": VALUE},
                         headers=self._headers()) as r:
            return int((await _json(r))["revision"])

    async def watch(self, s: aiohttp.ClientSession, url: str, prefix: str,
                    on_revisions: Callable[[list[int]], None], ready: asyncio.Event) -> None:
        """GET /v1/watch on `url` from the next change: `ready` once the stream is open (its
        first line, the start's progress), then `on_revisions` with the revisions of each
        chunk's events, as they are read. Returns when the stream ends; raises on an error
        answer."""
        # progress_ms: a stream whose client left ends at the node's next write, so a phase's
        # closed streams are gone from the node within a second (no progress line is sent
        # while events flow).
        async with s.get(f"{url}/v1/watch", params={"prefix": prefix, "progress_ms": "1000"},
                         timeout=aiohttp.ClientTimeout(total=None)) as r:
            if r.status != 200:
                raise HttpError(f"HTTP {r.status}: {(await r.text())[:100]}")
            lines = LineSplitter()
            async for chunk in r.content.iter_any():
                revs = []
                for line in lines.feed(chunk):
                    ev = orjson.loads(line)
                    if ev["type"] in ("put", "delete"):
                        revs.append(ev["revision"])
                    elif ev["type"] == "progress":
                        ready.set()
                    elif ev["type"] == "canceled":
                        raise HttpError(f"watch canceled: {ev['reason']}")
                if revs:
                    on_revisions(revs)


class LineSplitter:
    """Newline-delimited JSON out of a byte stream cut anywhere: whole lines only."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        return [ln for ln in lines if ln.strip()]
