"""The near cache (cache/) inside the whole-cluster simulation (sim.py): each simulated node
runs the real `CacheService` in its own process, over the cluster's Raft membership
(`NodeView`), with one shared in-memory backend standing in for Redis (`MemoryBackend`, on
the loop's clock: Redis's own), and its coherence messages carried by `SimCachePeers` over
the simulated network (delay, drop, partitions; a paused receiver answers late, a dead one
breaks the connection).

The workload and its check are the chaos suite's (testing/wl_cache.py): writers PUT unique
values to a few keys through one node, readers GET them through others, and README's
guarantee is checked: after a PUT is acknowledged, no GET that starts later, on any node,
returns an older value (nor nothing: the workload never deletes); nothing invented.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from ..cache.backend import MemoryBackend
from ..cache.protocol import PeerUnreachable, decode, encode
from ..cache.service import CacheConfig, CacheService
from ..cache.transport import dispatch_safe, raise_for
from ..cache.view import NodeView
from ..node import Node
from .history import History
from .simnet import SimNetwork
from .simproc import ConnectionLost, Process
from .wl_cache import LEASE_MS, CacheWorkload

WORKLOAD = CacheWorkload.name
CONFIG = CacheConfig(lease_ms=LEASE_MS, rpc_timeout=1.0, retries=8)


class SimHistory(History):
    """A History on the simulation's virtual clock (ns), so a seed replays it exactly."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(t0=0)
        self._clock = now

    def _now(self) -> int:
        return int(self._clock() * 1e9)


class SimCachePeers:
    """A node's cache RPCs over the simulated network (cache/transport.py's `HttpPeers`,
    in process): a request or reply lost to a cut link or a drop is a timeout."""

    def __init__(self, net: SimNetwork, src: str,
                 resolve: Callable[[str], tuple[Process, CacheService] | None],
                 timeout: float) -> None:
        self.net = net
        self.src = src
        self.resolve = resolve
        self.timeout = timeout

    def _hop(self, a: str, b: str) -> float | None:
        """The delay of one message from a to b, or None if it is lost."""
        return self.net.rpc_delay(a, b)

    async def call(self, node: str, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._call(node, op, msg), self.timeout)
        except TimeoutError:
            raise PeerUnreachable(f"{node}: no answer in {self.timeout} s") from None

    async def _call(self, node: str, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        self.net.counts["cache.messages"] += 1
        there = self._hop(self.src, node)
        if there is None:
            await asyncio.sleep(2 * self.timeout)  # lost: the caller times out
        await asyncio.sleep(there or 0)
        target = self.resolve(node)
        if target is None:
            raise PeerUnreachable(f"{node} is down")
        proc, svc = target
        try:
            reply = await proc.call(dispatch_safe(svc.dispatch, op, decode(encode(msg))))
        except ConnectionLost:
            raise PeerUnreachable(f"{node} died") from None
        back = self._hop(node, self.src)
        if back is None:
            await asyncio.sleep(2 * self.timeout)
        await asyncio.sleep(back or 0)
        return raise_for(decode(encode(reply)))

    async def close(self) -> None:
        pass


def build_cache(node: Node, backend: MemoryBackend, peers: SimCachePeers) -> CacheService:
    """What the composition root builds for a real node, with simulated parts. Call inside
    the node's process: its heartbeat task belongs to it."""
    svc = CacheService(NodeView(node), backend, peers, CONFIG, clock=node.clock.monotonic)
    svc.start()
    return svc


class CacheClients:
    """Writers and readers, each pinned to a node, and the final reads after healing."""

    def __init__(self, rng: random.Random, history: History,
                 target: Callable[[str], tuple[Process, CacheService] | None],
                 ids: list[str], now: Callable[[], float],
                 trace: Callable[[str], None] = lambda _: None) -> None:
        self.rng = rng
        self.trace = trace
        self.history = history
        self.target = target
        self.ids = ids
        self.now = now
        self.keys = [f"c{i}" for i in range(rng.choice((1, 2, 3)))]
        self._values = iter(range(1, 1 << 62))
        self.acked_puts = 0
        self.gets = 0

    async def op(self, process: str, nid: str, key: str, inp: list[Any]) -> bool:
        h = self.history
        p = h.invoke(WORKLOAD, process, inp[0], key, [*inp, nid])
        t = self.target(nid)
        if t is None:
            (h.info if inp[0] == "put" else h.fail)(p, None if inp[0] == "get" else "down")
            return False
        proc, svc = t
        self.trace(f"{process}@{nid}: cache {inp[0]} {key} {inp[1:]}")
        coro = svc.put(key, str(inp[1]).encode()) if inp[0] == "put" else svc.get(key)
        try:
            res = await asyncio.wait_for(proc.call(coro), 3.0)
        except Exception as e:  # noqa: BLE001 - 503s, timeouts, a dead node: unknown
            self.trace(f"{process}@{nid}: cache {inp[0]} {key}: {type(e).__name__}")
            if inp[0] == "put":
                h.info(p, type(e).__name__)
            else:
                h.fail(p, None, type(e).__name__)
            return False
        self.trace(f"{process}@{nid}: cache {inp[0]} {key} -> {res!r}")
        if inp[0] == "put":
            self.acked_puts += 1
            h.ok(p, {"version": res["version"]})
        else:
            self.gets += 1
            h.ok(p, {"value": None if res.value is None else int(res.value),
                     "version": res.version, "hit": res.hit})
        return True

    async def worker(self, name: str, end: float) -> None:
        rng = random.Random(self.rng.random())
        nid = rng.choice(self.ids)
        while self.now() < end:
            key = rng.choice(self.keys)
            inp: list[Any] = ["put", next(self._values)] if rng.random() < 0.3 else ["get"]
            ok = await self.op(name, nid, key, inp)
            await asyncio.sleep(rng.uniform(0, 0.05 if ok else 0.2))

    async def final(self) -> bool:
        """Every key read once on every node after healing; False if one was not served."""
        ok = True
        for i, nid in enumerate(self.ids):
            for key in self.keys:
                ok = await self.op(f"final.{i}", nid, key, ["get"]) and ok
        return ok

    def problems(self) -> list[str]:
        v = CacheWorkload.check(self.history)
        # A seed may acknowledge no PUT (its homes down most of the run): that proves
        # nothing either way; the CI seeds as a whole must (test_sim.py counts them).
        return [p for p in v.problems if p != "no PUT was acknowledged"]
