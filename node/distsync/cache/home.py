"""The home side of the protocol: what a node does for the keys the ring makes it home of.

Every transaction on a key runs under that key's directory lock, so the home serializes all
reads-with-miss and writes of a key. A transaction on a *cold* key (not in the directory)
first broadcasts an invalidation to every member (`_warm`): a new or restarted home, or one
whose ring just changed, learns nothing from anyone, it makes sure nobody holds a copy.

A holder that does not acknowledge an invalidation or a fetch is revoked: the home stops
renewing its lease and waits until the last lease it granted has surely run out (the holder
stops serving by then, see service.py), then proceeds as if the holder had answered.

Writes that are not silent upgrades are written through by the home itself (PUTX): the value
travels with the request, so a PUT costs one message to the home and one backend round trip,
and the key's lock is held across both the invalidations and the write. Invalidations for
different keys to the same holder are coalesced into one message (batching.py).

Once the backend has failed, the next write first checks that it is back (a PING) before
invalidating anything: while Redis is down, writes fail without costing other nodes their
valid copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from .backend import BackendUnavailable
from .conditions import cond_holds
from .near import E, I
from .protocol import FETCH, INV, HomeUnavailable, NotHome, PeerUnreachable


class HomeRole:
    """Mixed into CacheService; uses its view, backend, dir (Directory), metrics, _call."""

    async def _check_home(self, key: str) -> int:
        self._ring_check()
        home = self.home_of(key)
        if home != self.id:
            raise NotHome(key, home)
        if not self.lease_ok(self.id):
            # Our configuration is not proved current: we may have been removed without
            # knowing it (see service.py). Readers go to the backend, writers retry later.
            if not await self.confirm_self():
                raise HomeUnavailable(key, self.id)
            home = self.home_of(key)
            if home != self.id:
                raise NotHome(key, home)
        return self.ring_epoch

    def _settle(self, key: str, epoch: int) -> None:
        """A transaction that outlived a ring change must not leave a warm entry behind."""
        if self.ring_epoch != epoch:
            self.dir.entries.pop(key, None)

    def _lease(self, src: str) -> dict[str, Any]:
        if src == self.id:
            return {}
        # No lease for a node that is not (or no longer) a member: its lines lapse.
        lease = self.dir.renew(src) if src in self.members else 0.0
        out: dict[str, Any] = {"inc": self.inc, "lease_ms": int(lease * 1000)}
        if src in self.dir.suspect:
            out["resync"] = self.dir.suspect[src]
        return out

    async def _h_gets(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Read miss: downgrade the owner (value from it) or load from the backend; grant E
        if nobody else holds the key, else S."""
        key, src = msg["key"], msg["src"]
        epoch = await self._check_home(key)
        async with self.dir.locks.hold(key):
            try:
                fence = await self._warm(key, src)
                ent = self.dir.entry(key)
                got = None
                if ent.owner is not None and ent.owner != src:
                    owner = ent.owner
                    try:
                        rep = await self._call(owner, FETCH, {"key": key, "src": self.id})
                    except PeerUnreachable:
                        await self._revoke([owner])
                        rep, fence = {}, True
                    kept = rep.get("value") is not None
                    ent.downgrade_owner(kept)
                    if kept:
                        got = (rep["value"], rep["version"], rep.get("ttl_ms"))
                if got is None:
                    if fence:
                        # A revoked node may have been the owner with a silent write in
                        # flight: move the counter so that write can never land, and re-stamp.
                        await self.backend.reserve(key, self.view.conf_index())
                    self.metrics.inc("backend_reads")
                    ld = await self.backend.load(key, seal=True)
                    if ld.value is None:
                        # The requester missed, so it holds no shared copy. If it is the
                        # owner, keep it listed: the E grant of a write of its own may still
                        # be on its way (a read and a write of its own crossing), and a later
                        # write must invalidate that line. At worst an extra invalidation.
                        ent.sharers.discard(src)
                        return {"value": None, **self._lease(src)}
                    got = (ld.value, ld.version, ld.ttl_ms)
                state = ent.grant_read(src)
                return {"value": got[0], "version": got[1], "ttl_ms": got[2], "state": state,
                        **self._lease(src)}
            finally:
                self._settle(key, epoch)

    async def _h_putx(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Write (or delete) through: invalidate every other copy and collect the
        acknowledgements, then store the value in one backend step that moves the version
        counter on (so an older owner's silent write still in flight can never land after
        it); the writer becomes the only holder, in E."""
        key, src, value = msg["key"], msg["src"], msg.get("value")
        epoch = await self._check_home(key)
        async with self.dir.locks.hold(key):
            try:
                await self._backend_back()
                fenced = await self._warm(key, src)
                ent = self.dir.entry(key)
                fenced = bool(await self._invalidate(key, ent.others(src))) or fenced
                # Every other copy is gone. The writer stays listed (as a sharer) while the
                # write is out: it may still hold its old line. It drops that line when the
                # write fails (service.py), so a failure leaves nobody listed.
                ent.owner, ent.sharers = None, {src}
                cond = msg.get("cond")
                if cond is not None:
                    cur = await self._current_version(key, fenced)
                    if not cond_holds(cond, cur):
                        ent.sharers.discard(src)  # the writer drops its line (service.py)
                        return {"cond_failed": True, "version": cur, **self._lease(src)}
                try:
                    ver, existed = await self.backend.put(key, value, msg.get("ttl_ms"),
                                                          self.view.conf_index())
                except BackendUnavailable:
                    self._backend_down = True
                    ent.sharers.discard(src)
                    raise
                if not ver:  # a home under a newer configuration has the key: not us
                    ent.sharers.discard(src)
                    raise NotHome(key, None)
                # The grant is recorded here, with no await before the lease below: a resync
                # of src handled during the write (which forgets src everywhere) must not
                # erase a grant that the same answer renews (chaos seed 1713011460).
                self._filled(key)
                if value is not None:
                    ent.grant_write(src)
                else:
                    ent.sharers.clear()  # a deleter keeps no line
                return {"version": ver, "existed": existed,
                        "state": E if value is not None else I, **self._lease(src)}
            finally:
                self._settle(key, epoch)

    async def _current_version(self, key: str, fenced: bool) -> int:
        """The key's version (0: absent) for a conditional write, with every other copy
        invalidated and the key's lock held: every holder that answered has finished its
        silent writes (INV waits for them). If one had to be revoked instead, `reserve`
        first moves the counter on, as a GETS does, so a silent write of it still in flight
        cannot land between this read and the write that follows (its compare fails)."""
        if fenced:
            await self.backend.reserve(key, self.view.conf_index())
        ld = await self.backend.load(key)
        return ld.version if ld.value is not None else 0

    async def _backend_back(self) -> None:
        """After a backend failure seen here, refuse writes untouched until a PING answers."""
        if self._backend_down:
            if not await self.backend.ping():
                raise BackendUnavailable("the cache backend is unreachable", untouched=True)
            self._backend_down = False

    async def _h_hb(self, msg: dict[str, Any]) -> dict[str, Any]:
        src = msg["src"]
        if msg.get("resynced"):
            self.dir.resynced(src, msg["resynced"])
        return {"ok": True, **self._lease(src)}

    async def _warm(self, key: str, src: str) -> bool:
        """Make a cold key warm; True if some member had to be revoked on the way."""
        if self.dir.warm(key):
            return False
        self.metrics.inc("broadcasts")
        # A node removed lately may still be up without knowing it was removed (Raft need
        # not tell it), serving lines under a lease some home renewed before applying the
        # removal: it is invalidated too, and if it does not answer, it is revoked and
        # waited out for a whole lease from now (every member has applied the removal once
        # this broadcast is acknowledged, so no home renews it after this). Found by the
        # whole-cluster simulation (seed 35).
        former = set(self.former) - {src}
        for n in former:
            until = self.clock() + self.dir.lease_s
            self.dir.granted_until[n] = max(self.dir.granted_until.get(n, 0.0), until)
        targets = (set(self.members) | former) - {src}
        failed = await self._invalidate(key, targets, conf=self.view.conf_index())
        self.dir.entry(key)
        return bool(failed)

    async def _invalidate(self, key: str, targets: set[str],
                          conf: int | None = None) -> list[str]:
        """INV to `targets`; those that do not answer are revoked. Returns them."""
        if not targets:
            return []
        order = sorted(targets)
        if len(order) == 1:  # the common case (the previous writer): no gather, no task
            try:
                results = [await self._invs.submit(key, (order[0], conf))]
            except Exception as e:  # noqa: BLE001 - judged below, as gather's would be
                results = [e]
        else:
            results = await asyncio.gather(
                *(self._invs.submit(key, (n, conf)) for n in order), return_exceptions=True
            )
        self.metrics.inc("invalidations_sent", len(order))
        failed = []
        for n, r in zip(order, results, strict=True):
            if isinstance(r, BaseException):
                if n == self.id or not isinstance(r, Exception):
                    raise r
                failed.append(n)
        if failed:
            await self._revoke(failed)
        return failed

    async def _send_invs(self, group: Hashable, keys: list[str]) -> list[Any]:
        """One INV message for every key invalidated at `node` in this loop turn."""
        node, conf = group  # type: ignore[misc]
        msg: dict[str, Any] = {"keys": keys, "src": self.id}
        if conf is not None:
            msg["conf"] = conf
        await self._call(node, INV, msg)
        return [True] * len(keys)

    async def _revoke(self, nodes: list[str]) -> None:
        """Treat `nodes`' copies as invalid once their leases have surely expired."""
        self.metrics.inc("revocations", len(nodes))
        wait = max(self.dir.revoke(n) for n in nodes)
        if wait > 0:
            await asyncio.sleep(wait)
