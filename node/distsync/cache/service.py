"""A node's cache: its near cache (requester side) and its home role, wired to the ring,
the backend and the other nodes.

Reads: a valid line (not expired, its home's lease valid) is a hit served from memory. A miss
asks the key's home (GETS) and installs the granted line, unless an invalidation for the key
arrived while the request was out (the grant may be older than that write), the ring changed,
or the home asked for a resync. If the home is unreachable, the backend is read directly and
nothing is cached: with write-through, the backend always holds every acknowledged write.

Writes (write-through): a line held in E is upgraded to M silently and written with a
compare on its version (one backend round trip, no message); otherwise the value goes to the
home (PUTX), which invalidates every other copy and then writes it (one message, one backend
round trip), and the writer keeps the line in E. The PUT is acknowledged only once the
backend has it. While a write of this node to a key is out, the node serves no copy of that
key and caches no grant for it (the home may already have written the new value while an
older copy or grant is still here); a write's own E grant is kept only if no other write of
this node to the key was out meanwhile.

Leases: every answer from a home renews, for `lease_ms` from when the request was sent, this
node's right to serve that home's lines; a heartbeat renews it every lease/4. A node that has
not heard from a home for a lease stops serving the lines it has from that home.

A home's own lines, and its acting as home at all, are leased too: from its last proof that
its configuration is current (a ReadIndex round on the Raft leader, then applied here), for one lease. A
node removed while it was down or cut off may restart from a log without its removal and see
itself as home for ever; the key's new home waits a lease out for it (HomeRole._warm), and
by then it has stopped (found by the whole-cluster simulation, seeds 339 and 386).
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
from .batching import Batcher
from .conditions import cond_holds
from .directory import Directory, KeyLocks
from .fill import FillLease, FillRole
from .home import HomeRole
from .metrics import CacheMetrics
from .near import E, I, Line, M, NearCache, S
from .protocol import (
    CONFIRM,
    FETCH,
    FILL,
    GETS,
    HB,
    INV,
    PUTX,
    STATE,
    HomeUnavailable,
    NotHome,
    PeerUnreachable,
)
from .view import ClusterView

log = logging.getLogger("distsync.cache")


# How long (in leases) a removed node is still treated as a possible holder of every key.
FORMER_MEMBER_LEASES = 4


class Contention(Exception):
    """A write kept being sent back (the ring was changing under it); retry."""


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


class CacheService(HomeRole, FillRole):
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
        self._writing: dict[str, int] = {}  # key -> writes of ours out at its home
        self._invs: Batcher[str] = Batcher(self._send_invs, max_inflight=4)
        self._backend_down = False
        self._epochs: dict[str, list[int]] = {}  # key -> [invalidations seen, ops pending]
        self._fills: dict[str, asyncio.Future] = {}
        self._fill_leases: dict[str, FillLease] = {}  # at the home (fill.py)
        self._tok: object = None
        self.members: frozenset[str] = frozenset()
        # Nodes removed from the ring lately -> when we noticed (see HomeRole._warm).
        self.former: dict[str, float] = {}
        self.ring: HashRing | None = None
        self._homes_cache: dict[str, str] = {}  # key -> home under the current ring
        self.ring_epoch = 0
        self._task: asyncio.Task | None = None
        self._self_until = 0.0  # we may serve our own lines, and act as home, until then
        self._confirming: asyncio.Future[bool] | None = None
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
        now = self.clock()
        for n in self.members - members:
            self.former[n] = now
        for n in [n for n, t in self.former.items() if n in members or
                  now - t > FORMER_MEMBER_LEASES * self.dir.lease_s]:
            del self.former[n]
        self.members = members
        self.ring = HashRing(members) if members else None
        self._homes_cache.clear()
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
        # A PUT asks several times (writer, home, keep check); the ring hashes with blake2b.
        home = self._homes_cache.get(key)
        if home is None:
            if self.ring is None:
                raise HomeUnavailable(key, "-")
            if len(self._homes_cache) >= 65_536:
                self._homes_cache.clear()
            home = self._homes_cache[key] = self.ring.owner(key)
        return home

    def _home(self, home: str) -> HomeLease:
        h = self.homes.get(home)
        if h is None:
            h = self.homes[home] = HomeLease()
        return h

    def lease_ok(self, home: str) -> bool:
        if home == self.id:
            return self.clock() < self._self_until
        h = self.homes.get(home)
        return h is not None and self.clock() < h.until

    async def confirm_self(self) -> bool:
        """Prove our configuration current (one ReadIndex round, shared by concurrent
        callers) and extend our own lease to a lease from when the proof began: a removal
        committed before then is applied here now, and one committed later is applied by
        every other node later too, so the key's new home outwaits us."""
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.ensure_future(self._confirm_round())
        return await asyncio.shield(self._confirming)

    async def _confirm_round(self) -> bool:
        sent = self.clock()
        if await self._conf_current(self.cfg.rpc_timeout / 2):
            self._self_until = max(self._self_until, sent + self.dir.lease_s)
        self._ring_check()
        return self.clock() < self._self_until

    async def _conf_current(self, timeout: float) -> bool:
        """A ReadIndex, on the leader directly or asked of it (CONFIRM), then applied here.
        A removed node never gets there: no leader sends it the entries up to the index."""
        index = await self.view.read_index(timeout)
        if index is None:
            leader = self.view.leader()
            if leader is None or leader == self.id:
                return False
            try:
                rep = await self._call(leader, CONFIRM, {"src": self.id})
            except (PeerUnreachable, HomeUnavailable, NotHome):
                return False
            index = rep["index"]
        return await self.view.wait_applied(index, timeout)

    async def _h_confirm(self, msg: dict[str, Any]) -> dict[str, Any]:
        index = await self.view.read_index(self.cfg.rpc_timeout / 2)
        if index is None:
            raise PeerUnreachable("not the leader")
        return {"index": index}

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

    async def member_line_state(self, node: str, key: str) -> dict[str, Any]:
        """Member `node`'s line for `key` (and its directory entry if it is the home), for
        operators: raises PeerUnreachable when that member does not answer."""
        return await self._call(node, "state", {"key": key, "src": self.id})

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> Got:
        t0 = time.perf_counter()
        self._ring_check()
        while True:
            line = self.near.get(key)
            if line is None or key in self._writing:
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
            self._backend_down = True
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
                    and key not in self._writing
                    and (cur is None or cur.version < rep["version"])):
                line = self.near.put(key, value, rep["version"], state, home, rep.get("ttl_ms"))
            return Got(value, rep["version"], False, line.state if line else I)
        # The home cannot be reached (or views of the ring keep disagreeing): the backend has
        # every acknowledged write, so read it directly and cache nothing.
        self.metrics.inc("backend_reads")
        ld = await self.backend.load(key)
        return Got(ld.value, ld.version, False, I)

    async def fill(self, key: str, lease_ms: int = 10_000, token: str | None = None,
                   cancel: bool = False) -> dict[str, Any]:
        """Ask the key's home for a fill lease (see fill.py)."""
        msg: dict[str, Any] = {"key": key, "src": self.id, "lease_ms": lease_ms}
        if token is not None:
            msg["token"] = token
        if cancel:
            msg["cancel"] = True
        for attempt in range(self.cfg.retries):
            self._ring_check()
            home = self.home_of(key)
            try:
                return await self._call(home, FILL, msg)
            except NotHome:
                await asyncio.sleep(0.02 * (attempt + 1))
            except PeerUnreachable:
                raise HomeUnavailable(key, home) from None
        raise Contention(f"fill of {key!r} sent back {self.cfg.retries} times (ring changing)")

    # -- writes --------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, ttl_ms: int | None = None,
                  cond: dict[str, Any] | None = None) -> dict[str, Any]:
        """`cond`: {"nx": True} (only if absent) or {"if_version": n} (only if the current
        version is n; 0: absent). When it does not hold, nothing is written and the answer
        is {"cond_failed": True, "version": current}. Checked where the write is ordered: at
        the E owner for a silent write, else at the home under the key's lock."""
        return await self._write(key, bytes(value), ttl_ms, cond or None)

    async def delete(self, key: str) -> dict[str, Any]:
        return await self._write(key, None, None)

    async def _write(self, key: str, value: bytes | None, ttl_ms: int | None,
                     cond: dict[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        self._ring_check()
        try:
            res = await self._write_loop(key, value, ttl_ms, cond)
        except BackendUnavailable:
            self.metrics.inc("backend_errors")
            self._backend_down = True
            raise
        if res.get("cond_failed"):
            return res
        self.metrics.inc("puts" if value is not None else "deletes")
        self.metrics.put(time.perf_counter() - t0)
        return res

    async def _write_loop(self, key: str, value: bytes | None, ttl_ms: int | None,
                          cond: dict[str, Any] | None = None) -> dict[str, Any]:
        for attempt in range(self.cfg.retries):
            async with self._wlocks.hold(key):
                line = self.near.peek(key)
                if (line is not None and line.state == E and key not in self._writing
                        and not line.expired(self.clock()) and self.lease_ok(line.home)):
                    # An E line is the current value (every other write would have come
                    # through the home and invalidated it first): check the condition here.
                    if cond is not None and not cond_holds(cond, line.version):
                        return {"key": key, "cond_failed": True, "version": line.version,
                                "state": line.state}
                    res = await self._silent_write(key, line, value, ttl_ms)
                    if res is not None:
                        self.metrics.inc("silent_upgrades")
                        return res
                # The home invalidates every copy but the writer's: ours is not served while
                # the write is out, and replaced or dropped when it is answered.
                self._writing[key] = self._writing.get(key, 0) + 1
            try:
                res = await self._home_write(key, value, ttl_ms, attempt, cond)
            except BackendUnavailable as e:
                if not e.untouched:
                    self.near.drop(key)
                raise
            except BaseException:
                self.near.drop(key)
                raise
            finally:
                n = self._writing.pop(key) - 1
                if n:
                    self._writing[key] = n
            if res is not None:
                return res
        raise Contention(f"write to {key!r} sent back {self.cfg.retries} times (ring changing)")

    async def _home_write(self, key: str, value: bytes | None, ttl_ms: int | None,
                          attempt: int, cond: dict[str, Any] | None = None,
                          ) -> dict[str, Any] | None:
        """PUTX to the key's home; None if the ring moved under us (retry)."""
        home = self.home_of(key)
        gen = self._home(home).gen
        seen = self._begin(key)
        sent = self.clock()
        msg: dict[str, Any] = {"key": key, "src": self.id, "value": value, "ttl_ms": ttl_ms}
        if cond is not None:
            msg["cond"] = cond
        try:
            rep = await self._call(home, PUTX, msg)
        except NotHome:
            self._end(key, seen)
            self.near.drop(key)  # the home may have stopped listing our copy
            await asyncio.sleep(0.02 * (attempt + 1))
            self._ring_check()
            return None
        except PeerUnreachable:
            self._end(key, seen)
            raise HomeUnavailable(key, home) from None
        except BaseException:
            self._end(key, seen)
            raise
        poisoned = self._end(key, seen)
        if rep.get("cond_failed"):
            self._renewed(home, rep, sent, gen)
            self.near.drop(key)
            return {"key": key, "cond_failed": True, "version": rep["version"],
                    "state": self.near.state(key)}
        keep = (self._renewed(home, rep, sent, gen) and not poisoned and value is not None
                and rep.get("state") == E and self._writing.get(key) == 1
                and self.ring is not None and self.home_of(key) == home)
        self._poison(key)  # a fill of ours still out may have been granted before this write
        if keep:
            self.near.put(key, value, rep["version"], E, home, ttl_ms)  # type: ignore[arg-type]
        else:
            self.near.drop(key)
        return {"key": key, "version": rep["version"], "existed": rep["existed"],
                "state": self.near.state(key)}

    async def _silent_write(self, key: str, line: Line, value: bytes | None,
                            ttl_ms: int | None) -> dict[str, Any] | None:
        """With the key's local lock held and its line in E: hold the new value in M, write
        it to the backend with a compare on the line's version, then keep it as E (or drop
        it). None if the compare failed (the home moved the counter on: we are no longer
        the owner)."""
        home, expect = line.home, line.version
        gen = self._home(home).gen
        self.near.drop(key)
        if value is not None:
            self.near.put(key, value, expect + 1, M, home, ttl_ms)
        try:
            nv, existed = await self.backend.write(key, expect, expect + 1, value, ttl_ms)
        except BaseException:
            self.near.drop(key)
            raise
        cur = self.near.peek(key)
        if not nv:
            self.near.drop(key)
            return None
        self._poison(key)  # a fill of ours still out was granted before this write
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
        keys, conf = msg["keys"], msg.get("conf")
        if conf is not None and self.view.conf_index() < conf:
            if not await self.view.wait_conf(conf, self.cfg.rpc_timeout / 2):
                raise PeerUnreachable("behind the home's membership configuration")
        self._ring_check()
        # Our own invalidation comes from a home transaction of ours that holds each key's
        # directory lock: waiting for that lock would wait for ourselves, for ever (found
        # by the membership test: a transaction that outlived a ring change hung every
        # later read of the key at this node).
        own = msg.get("src") == self.id
        busy = []
        for key in keys:
            self._poison(key)
            if self._wlocks.busy(key) or (not own and self._former_home_busy(key)):
                busy.append(key)
            else:
                self.near.drop(key)
        if busy:
            await asyncio.gather(*(self._drop_after_write(k) for k in busy))
        self.metrics.inc("invalidations_received", len(keys))
        return {"ok": True}

    def _former_home_busy(self, key: str) -> bool:
        """A transaction of ours as the key's home under the previous ring is still running
        (it may be about to write the key)."""
        return self.dir.locks.busy(key) and self.ring is not None and self.home_of(key) != self.id

    async def _drop_after_write(self, key: str) -> None:
        """Drop the line once any write to the key that started here has finished: a silent
        write of ours (the key's local lock), or a home transaction of ours from before the
        ring changed (the new home must not hear "done" while we may still write)."""
        if self._former_home_busy(key):
            async with self.dir.locks.hold(key):
                pass
        async with self._wlocks.hold(key):
            self.near.drop(key)

    def _poison(self, key: str) -> None:
        """A grant of ours for `key` still on its way is not cached when it arrives."""
        slot = self._epochs.get(key)
        if slot is not None:
            slot[0] += 1

    async def _h_fetch(self, msg: dict[str, Any]) -> dict[str, Any]:
        key, home = msg["key"], msg["src"]
        # The home only fetches from the node it lists as owner; if that grant (E, from a
        # GETS or a PUTX) has not reached us yet, we answer "no copy" below and the home
        # stops listing us. The grant must then not be installed when it arrives: an E line
        # the directory does not list gets no invalidation, is written silently and served
        # as a hit after later PUTs (found by the chaos suite under packet loss). A PUTX's
        # write has landed by then (the home loads it); its line is just not kept.
        self._poison(key)
        async with self._wlocks.hold(key):  # an M line is written back (its write completes)
            line = self.near.peek(key)
            now = self.clock()
            # While a write of ours is out, our line may predate a value the home has written
            # already: "no copy" is always safe (the home reads the backend).
            if (line is None or line.home != home or line.expired(now)
                    or key in self._writing):
                self.near.drop(key)
                return {"value": None}
            self.near.set_state(line, S)
            return {"value": line.value, "version": line.version, "ttl_ms": line.ttl_ms(now)}

    async def _h_state(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.line_state(msg["key"])

    _handlers = {
        GETS: HomeRole._h_gets, PUTX: HomeRole._h_putx, HB: HomeRole._h_hb,
        FILL: FillRole._h_fill, CONFIRM: _h_confirm,
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

    async def close(self) -> None:
        """Stop, then close the backend and peers this service was handed (a node's own;
        inproc.py's services share one backend and call `stop`)."""
        await self.stop()
        await self.peers.close()
        await self.backend.close()

    async def stop(self) -> None:
        await self._invs.close()
        if self._confirming is not None and not self._confirming.done():
            self._confirming.cancel()
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
                # Renewed before half of our own lease is gone (rounds come every lease/4).
                if (self.id in self.members
                        and self._self_until - self.clock() < self.dir.lease_s / 2):
                    await asyncio.gather(self.heartbeat(), self.confirm_self())
                else:
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
