"""A single `redis-server` as the non-replicated baseline for the queue and the cache, with
redis-py's asyncio client. It is one process with no replica: an acknowledged write is on
one machine only, so it is a floor for latency and a ceiling for throughput, not a peer with
the same guarantees. Two durability settings are run and named in every table:
`appendfsync always` (each write fsynced before the answer, as close as one node gets to
distsync's fsync-before-ack) and `everysec` (up to a second of writes lost on a crash).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from benchmarks.harness import ensure_bench_path
from benchmarks.systems.base import Unsupported, WorkloadTable

ensure_bench_path()
from queue_bench import Redis as RedisQueue  # noqa: E402
from queue_bench import start_redis  # noqa: E402

CACHE_VALUE = b"c" * 100
CACHE_KEYS = 100
MAX_CONNECTIONS = 128


class Redis(WorkloadTable):
    nodes = 1
    WORKLOADS = {"cache_get": "_get", "cache_put": "_set"}
    NO_WORKLOAD = "Redis is the baseline for the queue and cache only, not {workload!r}"

    def __init__(self, fsync: str = "everysec", data_dir: Path | None = None):
        if fsync not in ("always", "everysec"):
            raise ValueError("fsync is 'always' or 'everysec'")
        self.fsync = fsync
        self.name = f"redis (appendfsync {fsync})"
        self.durability = (f"one node, no replica; AOF appendfsync {fsync}: "
                           + ("fsynced before the answer" if fsync == "always"
                              else "fsynced once a second (up to 1 s lost on a crash)"))
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="distsync-bench-redis-")
        self.dir = Path(data_dir or self._tmp or ".")
        self.proc = None
        self.port = 0
        self.client: aioredis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> float:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server is not on PATH (apt-get install redis-server)")
        t0 = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True)
        started = await asyncio.to_thread(start_redis, self.dir, self.fsync)
        if started is None:
            raise RuntimeError("redis-server did not start")
        self.proc, self.port = started
        self.client = aioredis.Redis(host="127.0.0.1", port=self.port,
                                     max_connections=MAX_CONNECTIONS)
        await self.client.set("bench:ready", b"1")
        return time.perf_counter() - t0

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except Exception:  # noqa: BLE001 - it is going away either way
                self.proc.kill()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        alive = self.proc is not None and self.proc.poll() is None
        return {"redis": self.proc.pid} if alive else {}  # type: ignore[union-attr]

    async def leader(self) -> str:
        return "redis"

    def kill(self, node: str) -> None:
        raise Unsupported("a single Redis has no failover")

    def restart(self, node: str) -> None:
        raise Unsupported("a single Redis has no failover")

    def queue(self) -> RedisQueue:
        """queue_bench's Redis list queue (RPUSH; LMOVE to a processing list + LREM as ack)
        on this server."""
        return RedisQueue(self.client, self.proc.pid, self.fsync)  # type: ignore[union-attr]

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        if workload == "cache_get":
            assert self.client is not None
            await self.client.mset({f"bench-{i}": CACHE_VALUE for i in range(CACHE_KEYS)})

    async def _get(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        assert self.client is not None
        if await self.client.get(f"bench-{hash(key) % CACHE_KEYS}") is None:
            raise KeyError("cache key missing")

    async def _set(self, s: aiohttp.ClientSession, worker: int, key: str) -> None:
        assert self.client is not None
        await self.client.set(f"bench-put-{worker}-{hash(key) % 100}", CACHE_VALUE)

    async def write_once(self, session: aiohttp.ClientSession, key: str) -> None:
        assert self.client is not None
        await self.client.set(key, CACHE_VALUE)
