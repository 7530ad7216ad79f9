"""The directory a home node keeps for the keys it is home of.

For each key it knows (a *warm* key): which node holds it exclusively (E or M: `owner`) and
which nodes hold shared copies (`sharers`). A key not in the directory is *cold*: this home
does not know who may hold it (it just started, or the ring just changed), so before serving
it the service broadcasts an invalidation to every member (service.py `_warm`). The directory
may list a node that has since dropped its line (evictions are silent): that only costs an
extra invalidation, never coherence.

It also keeps, per requesting node, until when that node may serve lines this home granted
(`granted_until`, the end of the last lease it renewed) and which nodes are `suspect`: their
copies were revoked without an acknowledgement, so they get no renewal until they confirm
they dropped every line from this home (a resync).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Entry:
    owner: str | None = None  # the E/M holder
    sharers: set[str] = field(default_factory=set)

    def holders(self) -> set[str]:
        return self.sharers | ({self.owner} if self.owner else set())

    def others(self, node: str) -> set[str]:
        return self.holders() - {node}

    # -- transitions (pure; the service performs the messages they imply) -----------------

    def grant_read(self, node: str) -> str:
        """After any owner has been downgraded: the requester gets E if it is alone, else S."""
        self.sharers.discard(node)
        if self.owner == node:
            self.owner = None
        if not self.holders():
            self.owner = node
            return "E"
        self.sharers.add(node)
        return "S"

    def downgrade_owner(self, kept: bool) -> None:
        """The owner answered a FETCH: it keeps an S copy (kept) or had none."""
        if self.owner is not None and kept:
            self.sharers.add(self.owner)
        self.owner = None

    def grant_write(self, node: str) -> None:
        """Every other copy has been invalidated: `node` holds the only one, in M."""
        self.owner = node
        self.sharers = set()


class KeyLocks:
    """One asyncio lock per key, created on demand and dropped when nobody holds or waits.
    (`hold` is taken several times per PUT: a plain class, not a generator-based context
    manager, keeps that cheap.)"""

    def __init__(self) -> None:
        self._locks: dict[str, list] = {}

    def hold(self, key: str) -> _Held:
        return _Held(self._locks, key)

    def busy(self, key: str) -> bool:
        return key in self._locks

    def __len__(self) -> int:
        return len(self._locks)


class _Held:
    __slots__ = ("locks", "key", "slot")

    def __init__(self, locks: dict[str, list], key: str):
        self.locks, self.key = locks, key

    async def __aenter__(self) -> None:
        slot = self.locks.get(self.key)
        if slot is None:
            slot = self.locks[self.key] = [asyncio.Lock(), 0]
        slot[1] += 1
        self.slot = slot
        try:
            await slot[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.slot[0].release()
        self._leave()

    def _leave(self) -> None:
        self.slot[1] -= 1
        if self.slot[1] == 0:
            del self.locks[self.key]

class Directory:
    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 200_000):
        self.lease_s = lease_s
        self.clock = clock
        self.max_entries = max_entries
        self.entries: dict[str, Entry] = {}
        self.locks = KeyLocks()
        self.granted_until: dict[str, float] = {}
        # A restarted home cannot know what its former incarnation granted: until one lease
        # after start, assume every node may still hold a lease from it.
        self.started_until = clock() + lease_s
        # node -> number of its latest revocation; it must echo that number (proving it
        # dropped every line it had from us after hearing of it) before it is renewed again
        self.suspect: dict[str, int] = {}
        self._revocations = 0

    def __len__(self) -> int:
        return len(self.entries)

    def warm(self, key: str) -> bool:
        return key in self.entries

    def entry(self, key: str) -> Entry:
        ent = self.entries.get(key)
        if ent is None:
            if len(self.entries) >= self.max_entries:
                self._trim()
            ent = self.entries[key] = Entry()
        return ent

    def _trim(self) -> None:
        """Forget keys nobody holds (they turn cold again: safe, just a broadcast later)."""
        for k in [k for k, e in self.entries.items() if not e.holders()
                  and not self.locks.busy(k)]:
            del self.entries[k]

    def clear(self) -> None:
        """The ring changed: every key turns cold."""
        self.entries.clear()

    def forget_node(self, node: str) -> None:
        for ent in self.entries.values():
            ent.sharers.discard(node)
            if ent.owner == node:
                ent.owner = None

    # -- leases ---------------------------------------------------------------------------

    def renew(self, node: str) -> float:
        """Record a lease renewal for `node`; returns the lease in seconds (0: suspect)."""
        if node in self.suspect:
            return 0.0
        self.granted_until[node] = max(
            self.granted_until.get(node, self.started_until), self.clock() + self.lease_s
        )
        return self.lease_s

    def revoke(self, node: str) -> float:
        """`node` did not acknowledge: stop renewing it and return how long to wait before
        its copies are surely no longer served (its last lease plus a clock-rate margin)."""
        self._revocations += 1
        self.suspect[node] = self._revocations
        end = self.granted_until.get(node, self.started_until) + 0.05 + 0.05 * self.lease_s
        return max(0.0, end - self.clock())

    def resynced(self, node: str, rev: int) -> bool:
        """`node` dropped every line from us after hearing of revocation `rev`. An echo of
        an older revocation (a late heartbeat) proves nothing about later grants."""
        if self.suspect.get(node) != rev:
            return False
        del self.suspect[node]
        self.forget_node(node)
        return True
