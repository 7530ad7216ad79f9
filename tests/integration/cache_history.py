"""A recorded history of cache operations against real nodes, and its checker.

Every write carries a unique value; every acknowledged write records its version and the
interval it took. The checker proves: no read returned a version older than one whose PUT
had been acknowledged before the read started (versions are Redis-ordered, so "older" is
"smaller"), every value read was written by someone, and a version always pairs with the
value its acknowledged write stored.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Op:
    kind: str  # "w" or "r"
    key: str
    node: str
    start: float
    end: float
    value: bytes | None = None
    version: int = 0
    hit: bool = False


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    attempted: set[bytes] = field(default_factory=set)  # every value ever sent
    failures: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, status, error)

    def acked(self) -> list[Op]:
        return [o for o in self.ops if o.kind == "w"]

    def reads(self) -> list[Op]:
        return [o for o in self.ops if o.kind == "r"]

    def check(self) -> list[str]:
        problems = []
        by_key: dict[str, list[Op]] = {}
        value_of: dict[tuple[str, int], bytes] = {}
        for w in self.acked():
            by_key.setdefault(w.key, []).append(w)
            value_of[(w.key, w.version)] = w.value  # type: ignore[assignment]
        for ws in by_key.values():
            ws.sort(key=lambda o: o.end)
        for r in self.reads():
            floor = max((w.version for w in by_key.get(r.key, []) if w.end < r.start),
                        default=0)
            if r.version < floor:
                problems.append(f"stale read on {r.node} of {r.key}: v{r.version} "
                                f"({'hit' if r.hit else 'miss'}) but v{floor} was acknowledged "
                                f"before the read started")
            if r.value is not None and r.value not in self.attempted:
                problems.append(f"invented value {r.value!r} read on {r.node}")
            want = value_of.get((r.key, r.version))
            if want is not None and r.value != want:
                problems.append(f"{r.key} v{r.version} read as {r.value!r}, written {want!r}")
        return problems

    def last_acked(self) -> dict[str, Op]:
        out: dict[str, Op] = {}
        for w in self.acked():
            if w.key not in out or w.version > out[w.key].version:
                out[w.key] = w
        return out


class Workload:
    """Writers and readers on `keys` through the nodes in `addrs` (id -> host:port), until
    `stop` is set. Nodes in `down` are skipped. 503s are recorded, not retried."""

    def __init__(self, addrs: dict[str, str], keys: list[str], seed: int = 1):
        self.addrs = addrs
        self.keys = keys
        self.h = History()
        self.stop = asyncio.Event()
        self.down: set[str] = set()
        self.rng = random.Random(seed)
        self._seq = 0
        self.events: list[tuple[str, str, float]] = []

    def dump(self, path: str) -> None:
        """The whole history, in start order, for a failed run's post-mortem."""
        rows = [(o.start, f"{o.start:.4f}-{o.end:.4f} {o.kind} {o.node} {o.key} v{o.version} "
                 f"{'hit' if o.hit else ''} {o.value!r}") for o in self.h.ops]
        rows += [(t, f"{t:.4f} EVENT {what} {node}") for what, node, t in self.events]
        with open(path, "w") as f:
            f.write("\n".join(r for _, r in sorted(rows)))

    def _node(self) -> str:
        live = [n for n in self.addrs if n not in self.down]
        return self.rng.choice(live)

    async def write(self, s: aiohttp.ClientSession, key: str, node: str) -> Op | None:
        self._seq += 1
        value = f"{node}:{key}:{self._seq}".encode()
        self.h.attempted.add(value)
        t0 = time.monotonic()
        try:
            async with s.put(f"http://{self.addrs[node]}/v1/cache/{key}", data=value) as r:
                body = await r.json(content_type=None)
                if r.status == 200:
                    op = Op("w", key, node, t0, time.monotonic(), value, body["version"])
                    self.h.ops.append(op)
                    return op
                self.h.failures.append(("w", r.status, body.get("error", "?")))
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.h.failures.append(("w", 0, "connection"))
        return None

    async def read(self, s: aiohttp.ClientSession, key: str, node: str) -> Op | None:
        t0 = time.monotonic()
        try:
            async with s.get(f"http://{self.addrs[node]}/v1/cache/{key}") as r:
                body = await r.read()
                if r.status == 200:
                    op = Op("r", key, node, t0, time.monotonic(), body,
                            int(r.headers["X-Cache-Version"]), r.headers["X-Cache"] == "hit")
                    self.h.ops.append(op)
                    return op
                if r.status == 404:
                    op = Op("r", key, node, t0, time.monotonic(), None, 0)
                    self.h.ops.append(op)
                    return op
                self.h.failures.append(("r", r.status, body[:80].decode(errors="replace")))
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.h.failures.append(("r", 0, "connection"))
        return None

    async def _writer(self, s: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            await self.write(s, self.rng.choice(self.keys), self._node())
            await asyncio.sleep(self.rng.uniform(0, 0.01))

    async def _reader(self, s: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            await self.read(s, self.rng.choice(self.keys), self._node())
            await asyncio.sleep(self.rng.uniform(0, 0.003))

    async def run(self, s: aiohttp.ClientSession, writers: int = 3, readers: int = 6) -> None:
        await asyncio.gather(*(self._writer(s) for _ in range(writers)),
                             *(self._reader(s) for _ in range(readers)))


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8))
