"""Single flight for cache misses (`get_or_set`), at the key's home: one loader per key.

A client that misses asks the key's home for a *fill lease* (`FILL`). The home answers, under
the key's directory lock, with the value if the backend has it now, else with a lease (a
token and a duration) to the first asker and "wait" to the others until a write of the key
lands (any PUTX ends the lease) or the lease runs out (its holder died or gave up: the next
asker gets it). The holder loads, writes the value with an ordinary PUT, and the waiters then
find it. The leases are soft state at the home: after a ring change or a restart of the home
a second loader may run (never a wrong value: the writes themselves are coherent).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

MAX_LEASE_MS = 600_000


@dataclass
class FillLease:
    token: str
    until: float  # the home's clock


class FillRole:
    """Mixed into CacheService (with HomeRole): uses _check_home, dir.locks, backend,
    clock."""

    _fill_leases: dict[str, FillLease]

    async def _h_fill(self, msg: dict[str, Any]) -> dict[str, Any]:
        key, token = msg["key"], msg.get("token")
        await self._check_home(key)  # type: ignore[attr-defined]
        leases = self._fill_leases
        async with self.dir.locks.hold(key):  # type: ignore[attr-defined]
            now = self.clock()  # type: ignore[attr-defined]
            cur = leases.get(key)
            if cur is not None and cur.until <= now:
                del leases[key]
                cur = None
            if msg.get("cancel"):
                if cur is not None and cur.token == token:
                    del leases[key]
                return {"cancelled": True}
            if cur is not None:
                return {"wait_ms": max(1, int((cur.until - now) * 1000))}
            ld = await self.backend.load(key)  # type: ignore[attr-defined]
            if ld.value is not None:
                return {"value": ld.value, "version": ld.version}
            lease_ms = max(1, min(MAX_LEASE_MS, int(msg.get("lease_ms", 10_000))))
            tok = os.urandom(8).hex()
            leases[key] = FillLease(tok, now + lease_ms / 1000)
            return {"token": tok, "lease_ms": lease_ms}

    def _filled(self, key: str) -> None:
        """A write of `key` landed at its home: waiters will find the value."""
        self._fill_leases.pop(key, None)
