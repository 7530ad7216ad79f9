"""A node's cache: its near cache (requester side) and its home role, wired to the ring,
the backend and the other nodes.

Reads: a valid line (not expired, its home's lease valid) is a hit served from memory. A miss
asks the key's home (GETS) and installs the granted line, unless an invalidation for the key
arrived while the request was out (the grant may be older than that write), the ring changed,
or the home asked for a resync. If the home is unreachable, the backend is read directly and
nothing is cached: with write-through, the backend always holds every acknowledged write.

Writes (write-through): a line held in E is upgraded to M silently and written with a
compare on its version; otherwise the home grants M (GETX) after invalidating every other
copy, and the value is written with the reserved version. The PUT is acknowledged only once
the backend has it; the line is then clean (E). Concurrent fenced writes retry.

Leases: every answer from a home renews, for `lease_ms` from when the request was sent, this
node's right to serve that home's lines; a heartbeat renews it every lease/4. A node that has
not heard from a home for a lease stops serving the lines it has from that home.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..hashring import HashRing
from .backend import Backend, BackendUnavailable
from .directory import Directory, KeyLocks
from .home import HomeRole
from .metrics import CacheMetrics
from .near import E, I, Line, M, NearCache, S
from .protocol import (
    FETCH,
    GETS,
    GETX,
    HB,
    INV,
    STATE,
    HomeUnavailable,
    NotHome,
    PeerUnreachable,
)
from .view import ClusterView

log = logging.getLogger("distsync.cache")


class Contention(Exception):
    """A write kept losing its reserved version to concurrent writers; retry."""


@dataclass
class CacheConfig:
    max_bytes: int = 64 << 20
    max_value_bytes: int = 512 << 10
    lease_ms: int = 3000
    rpc_timeout: float = 2.0  # a peer that has not answered by then is treated as unreachable
    retries: int = 8


@dataclass(slots=True)
class Got:
    value: bytes | None
    version: int
    hit: bool
    state: str


class HomeLease:
    __slots__ = ("until", "inc", "gen", "need_resync")

    def __init__(self) -> None:
        self.until = 0.0  # this node may serve the home's lines until then (monotonic)
        self.inc: str | None = None  # the home's incarnation
        self.gen = 0  # bumped whenever all lines from the home are dropped
        self.need_resync = 0  # the home's revocation number to echo (0: none)


class CacheService(HomeRole):
    def __init__(self, view: ClusterView, backend: Backend, peers: Any,
                 cfg: CacheConfig | None = None, registry: Any = None, clock=time.monotonic):
        self.view = view
        self.id = view.id
        self.backend = backend
        self.peers = peers
        self.cfg = cfg or CacheConfig()
        self.clock = clock
        self.inc = os.urandom(8).hex()
        self.near = NearCache(self.cfg.max_bytes, clock, on_evict=self._evicted)
        self.dir = Directory(self.cfg.lease_ms / 1000, clock)
        self.metrics = CacheMetrics(registry, lambda st: self.near.counts[st],
                                    lambda: self.near.bytes)
        self.homes: dict[str, HomeLease] = {}
        self._wlocks = KeyLocks()
        self._epochs: dict[str, list[int]] = {}  # key -> [invalidations seen, ops pending]
        self._fills: dict[str, asyncio.Future] = {}
        self._tok: object = None
        self.members: frozenset[str] = frozenset()
        self.ring: HashRing | None = None
        self.ring_epoch = 0
        self._task: asyncio.Task | None = None
        self._ring_check()

    # -- ring and leases -----------------------------------------------------------------

    def _ring_check(self) -> None:
        tok = self.view.conf_token()
        if tok is self._tok:
            return
        self._tok = tok
        members = self.view.members()
        if members == self.members:
            return
        self.members = members
        self.ring = HashRing(members) if members else None
        self.ring_epoch += 1
        self.dir.clear()
        if self.ring is not None:
            moved = self.near.drop_where(
                lambda ln: ln.state != M and self.ring.owner(ln.key) != ln.home
            )
            if moved:
                log.info("%s: ring is now %s; dropped %d lines whose home moved",
                         self.id, sorted(members), moved)

    def home_of(self, key: str) -> str:
        if self.ring is None:
            raise HomeUnavailable(key, "-")
        return self.ring.owner(key)

    def _home(self, home: str) -> HomeLease:
        h = self.homes.get(home)
        if h is None:
            h = self.homes[home] = HomeLease()
        return h

    def lease_ok(self, home: str) -> bool:
        if home == self.id:
            return True
        h = self.homes.get(home)
        return h is not None and self.clock() < h.until

    def _drop_home(self, home: str) -> None:
        h = self._home(home)
        h.gen += 1
        h.until = 0.0
        self.near.drop_where(lambda ln: ln.home == home and ln.state != M)

    def _renewed(self, home: str, rep: dict[str, Any], sent: float, gen: int) -> bool:
        """Take in a home's answer: incarnation, resync request, lease. True if a line it
        granted may be installed."""
        if home == self.id:
            return True
        h = self._home(home)
        inc = rep.get("inc")
        if inc is not None and inc != h.inc:
            if h.inc is not None:
                self._drop_home(home)  # the home restarted: its former grants are void
                gen = h.gen  # (this answer comes from the new incarnation)
            h.inc = inc
        if rep.get("resync"):
            self._drop_home(home)
            h.need_resync = rep["resync"]
            return False
        if h.gen != gen:
            return False
        lease = rep.get("lease_ms", 0) / 1000
        if lease:
            h.until = max(h.until, sent + lease)
        return True

    def _begin(self, key: str) -> int:
        slot = self._epochs.get(key)
        if slot is None:
            slot = self._epochs[key] = [0, 0]
        slot[1] += 1
        return slot[0]

    def _end(self, key: str, seen: int) -> bool:
        """Finish an operation begun with `_begin`; True if an invalidation came meanwhile."""
        slot = self._epochs[key]
        slot[1] -= 1
        if slot[1] == 0:
            del self._epochs[key]
        return slot[0] != seen

    def _evicted(self, line: Line) -> None:
        self.metrics.inc("evictions")

    async def _call(self, node: str, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        if node == self.id:
            return await self.dispatch(op, msg)
        return await self.peers.call(node, op, msg)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> Got:
        t0 = time.perf_counter()
        self._ring_check()
        while True:
            line = self.near.get(key)
            if line is None:
                break
            if line.state == M:  # a write-through of ours is in flight: wait for its outcome
                async with self._wlocks.hold(key):
                    pass
                continue
            if self.lease_ok(line.home):
                self.metrics.hit(time.perf_counter() - t0)
                return Got(line.value, line.version, True, line.state)
            break
        # Never join a fill already in flight: its answer may predate a PUT acknowledged
        # before this GET arrived, i.e. a stale read (found by the chaos suite: a GET sent
        # after PUT v49 was acknowledged joined a GETS sent during packet loss and got v47).
        fut = asyncio.ensure_future(self._fill(key))
        self._fills[key] = fut
        fut.add_done_callback(lambda f, k=key: self._fill_done(k, f))
        try:
            got = await asyncio.shield(fut)
        except BackendUnavailable:
            self.metrics.inc("backend_errors")
            raise
        self.metrics.miss(time.perf_counter() - t0)
        return got

    def _fill_done(self, key: str, fut: asyncio.Future) -> None:
        if self._fills.get(key) is fut:
            del self._fills[key]
        if not fut.cancelled():
            fut.exception()  # retrieved by the awaiting callers; never "never retrieved"

    async def _fill(self, key: str) -> Got:
        for attempt in range(self.cfg.retries):
            home = self.home_of(key)
            gen = self._home(home).gen
            seen = self._begin(key)
            sent = self.clock()
            try:
                rep = await self._call(home, GETS, {"key": key, "src": self.id})
            except NotHome:
                self._end(key, seen)
                await asyncio.sleep(0.02 * (attempt + 1))
                self._ring_check()
                continue
            except (PeerUnreachable, HomeUnavailable):
                self._end(key, seen)
                break
            poisoned = self._end(key, seen)
            ok = self._renewed(home, rep, sent, gen)
            value = rep.get("value")
            if value is None:
                return Got(None, 0, False, I)
            state, line = rep.get("state"), None
            cur = self.near.peek(key)
            if (state in (E, S) and ok and not poisoned and self.home_of(key) == home
                    and (cur is None or cur.version < rep["version"])):
                line = self.near.put(key, value, rep["version"], state, home, rep.get("ttl_ms"))
            return Got(value, rep["version"], False, line.state if line else I)
        # The home cannot be reached (or views of the ring keep disagreeing): the backend has
        # every acknowledged write, so read it directly and cache nothing.
        self.metrics.inc("backend_reads")
        ld = await self.backend.load(key)
        return Got(ld.value, ld.version, False, I)

    # -- writes --------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, ttl_ms: int | None = None) -> dict[str, Any]:
        return await self._write(key, bytes(value), ttl_ms)

    async def delete(self, key: str) -> dict[str, Any]:
        return await self._write(key, None, None)

    async def _write(self, key: str, value: bytes | None, ttl_ms: int | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        self._ring_check()
        try:
            res = await self._write_loop(key, value, ttl_ms)
        except BackendUnavailable:
            self.metrics.inc("backend_errors")
            raise
        self.metrics.inc("puts" if value is not None else "deletes")
        self.metrics.put(time.perf_counter() - t0)
        return res

    async def _write_loop(self, key: str, value: bytes | None,
                          ttl_ms: int | None) -> dict[str, Any]:
        for attempt in range(self.cfg.retries):
            async with self._wlocks.hold(key):
                line = self.near.peek(key)
                if (line is not None and line.state == E and not line.expired(self.clock())
                        and self.lease_ok(line.home)):
                    gen = self._home(line.home).gen
                    res = await self._write_through(
                        key, line.home, line.version, line.version + 1, value, ttl_ms, gen
                    )
                    if res is not None:
                        self.metrics.inc("silent_upgrades")
                        return res
            # Ask the home for M. A copy we hold in S stays valid (and served) until the
            # grant arrives; it is replaced then (a refused GETX leaves it alone).
            home = self.home_of(key)
            gen = self._home(home).gen
            seen = self._begin(key)
            sent = self.clock()
            try:
                rep = await self._call(home, GETX, {"key": key, "src": self.id})
            except NotHome:
                self._end(key, seen)
                await asyncio.sleep(0.02 * (attempt + 1))
                self._ring_check()
                continue
            except PeerUnreachable:
                self._end(key, seen)
                raise HomeUnavailable(key, home) from None
            except BaseException:
                self._end(key, seen)
                raise
            poisoned = self._end(key, seen)
            keep = self._renewed(home, rep, sent, gen) and not poisoned
            async with self._wlocks.hold(key):
                v = rep["version"]
                res = await self._write_through(
                    key, home, v, v, value, ttl_ms, self._home(home).gen if keep else None
                )
            if res is not None:
                return res
            await asyncio.sleep(0.001 * attempt)
        raise Contention(f"write to {key!r} lost {self.cfg.retries} times to other writers")

    async def _write_through(self, key: str, home: str, expect: int, newver: int,
                             value: bytes | None, ttl_ms: int | None,
                             gen: int | None) -> dict[str, Any] | None:
        """With the key's local lock held: hold the new value in M, write it to the backend,
        then keep it as E (or drop it). None if the compare on the version failed."""
        self.near.drop(key)
        if value is not None and gen is not None:
            self.near.put(key, value, newver, M, home, ttl_ms)
        try:
            nv, existed = await self.backend.write(key, expect, newver, value, ttl_ms)
        except BaseException:
            self.near.drop(key)
            raise
        cur = self.near.peek(key)
        if not nv:
            self.near.drop(key)
            return None
        slot = self._epochs.get(key)
        if slot is not None:
            slot[0] += 1  # a fill of ours still out was granted before this write: keep it out
        if cur is not None:
            if (self._home(home).gen == gen and self.ring is not None
                    and self.home_of(key) == home):
                self.near.set_state(cur, E)
            else:
                self.near.drop(key)
        return {"key": key, "version": nv, "existed": existed, "state": self.near.state(key)}

    # -- handlers (home -> holder, and dispatch) -----------------------------------------

    async def dispatch(self, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(op)
        if handler is None:
            raise PeerUnreachable(f"unknown cache op {op!r}")
        return await handler(self, msg)

    async def _h_inv(self, msg: dict[str, Any]) -> dict[str, Any]:
        key, conf = msg["key"], msg.get("conf")
        if conf is not None and self.view.conf_index() < conf:
            if not await self.view.wait_conf(conf, self.cfg.rpc_timeout / 2):
                raise PeerUnreachable("behind the home's membership configuration")
        self._ring_check()
        self._poison(key)
        async with self._wlocks.hold(key):
            self.near.drop(key)
        self.metrics.inc("invalidations_received")
        return {"ok": True}

    def _poison(self, key: str) -> None:
        """A grant of ours for `key` still on its way is not cached when it arrives."""
        slot = self._epochs.get(key)
        if slot is not None:
            slot[0] += 1

    async def _h_fetch(self, msg: dict[str, Any]) -> dict[str, Any]:
        key, home = msg["key"], msg["src"]
        # The home only fetches from the node it lists as owner; if that grant (GETS: E, or
        # GETX: M) has not reached us yet, we answer "no copy" below and the home stops
        # listing us. The grant must then not be installed when it arrives: an E line the
        # directory does not list gets no invalidation, is written silently and served as a
        # hit after later PUTs (found by the chaos suite under packet loss). An M grant's
        # write is fenced by the home's sealed load; it just is not kept either.
        self._poison(key)
        async with self._wlocks.hold(key):  # an M line is written back (its write completes)
            line = self.near.peek(key)
            now = self.clock()
            if line is None or line.home != home or line.expired(now):
                self.near.drop(key)
                return {"value": None}
            self.near.set_state(line, S)
            return {"value": line.value, "version": line.version, "ttl_ms": line.ttl_ms(now)}

    async def _h_state(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.line_state(msg["key"])

    _handlers = {
        GETS: HomeRole._h_gets, GETX: HomeRole._h_getx, HB: HomeRole._h_hb,
        INV: _h_inv, FETCH: _h_fetch, STATE: _h_state,
    }

    # -- views ---------------------------------------------------------------------------

    def line_state(self, key: str) -> dict[str, Any]:
        self._ring_check()
        line = self.near.peek(key)
        st = self.near.state(key)
        out: dict[str, Any] = {
            "node": self.id, "state": st, "version": line.version if st != I else None,
            "home": self.home_of(key) if self.ring else None,
            "lease_valid": bool(line) and st != I and self.lease_ok(line.home),
        }
        if out["home"] == self.id:
            ent = self.dir.entries.get(key)
            out["directory"] = None if ent is None else {
                "owner": ent.owner, "sharers": sorted(ent.sharers)
            }
        return out

    def stats(self) -> dict[str, Any]:
        n = self.metrics.n
        return {
            "node": self.id, "backend": self.backend.kind, "lines": len(self.near),
            "bytes": self.near.bytes, "max_bytes": self.near.max_bytes,
            "max_value_bytes": self.cfg.max_value_bytes, "lease_ms": self.cfg.lease_ms,
            "states": {st: self.near.counts[st] for st in (M, E, S)},
            "hit_ratio": round(self.metrics.ratio(), 4), **n,
            "mean_latency_us": self.metrics.mean_us(),
            "directory_keys": len(self.dir), "suspect": sorted(self.dir.suspect),
            "members": sorted(self.members),
        }

    # -- background: heartbeats and expiry ------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._background(), name=f"cache-{self.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None

    async def _background(self) -> None:
        period = self.cfg.lease_ms / 4000
        rounds = 0
        while True:
            await asyncio.sleep(period)
            rounds += 1
            try:
                self._ring_check()
                await self.heartbeat()
                if rounds % 8 == 0:
                    self.near.sweep()
            except Exception:  # noqa: BLE001 - a bad round must not end the loop
                log.exception("%s: cache heartbeat round failed", self.id)

    async def heartbeat(self) -> None:
        """Renew the lease with every other member (resyncing where a home asked for it)."""
        peers = sorted(self.members - {self.id})
        await asyncio.gather(*(self._hb(p) for p in peers))

    async def _hb(self, home: str) -> None:
        h = self._home(home)
        gen, resynced, sent = h.gen, h.need_resync, self.clock()
        try:
            rep = await self._call(home, HB, {"src": self.id, "resynced": resynced})
        except (PeerUnreachable, NotHome, HomeUnavailable):
            return
        if resynced and not rep.get("resync") and h.gen == gen:
            h.need_resync = 0
        self._renewed(home, rep, sent, gen)
