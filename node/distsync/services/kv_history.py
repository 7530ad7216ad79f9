"""The kv's recent changes, for watches (README "Watches"): one event per applied put or
delete, in revision order, bounded by count and bytes, oldest dropped first.

Fed by `KVStore.apply`, so it is a function of the applied log: every node that applied the
same entries holds the same events, and a node's history starts where its applied state
starts (`reset` at a snapshot restore: revisions up to the snapshot are compacted here).
It is volatile: not in the snapshot, rebuilt by replaying the log after a restart.

One revision may hold several events: a session's end deletes every key bound to it inside
one apply (kv.py, "Ephemeral keys"), all at that entry's index. They are recorded in key
order, the same on every node, and the bounds drop whole revisions: a revision is either
all here or compacted, never half (so "every event up to R was sent" stays meaningful).

No I/O and no clock. Listeners (the watch hub, watch.py) are told of each new event
synchronously, inside the apply; they must be cheap and must not raise.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, NamedTuple

# About the memory of one event besides its key and value objects: the tuple, its ints, the
# list slots (measured with tracemalloc: ~177 bytes per event, rounded up). A value stays
# alive here after the key is overwritten; it is weighed by its JSON size (`sz`).
EVENT_OVERHEAD_BYTES = 192
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_BYTES = 64 << 20


class KVEvent(NamedTuple):
    revision: int
    type: str  # "put" | "delete"
    key: str
    value: Any  # None for a delete
    prev_revision: int  # the key's revision before this change; 0: it did not exist
    size: int  # bytes this event weighs in the bound (key, value as the API measured it)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "value": self.value,
                "revision": self.revision, "prev_revision": self.prev_revision}


class Compacted(Exception):
    """The start revision is older than what the history holds."""

    def __init__(self, compact_revision: int):
        super().__init__(f"revisions up to {compact_revision} are compacted")
        self.compact_revision = compact_revision

    @property
    def oldest_revision(self) -> int:
        return self.compact_revision + 1


def key_matcher(key: str | None, prefix: str | None) -> Callable[[str], bool]:
    """Exactly `key`, or every key starting with `prefix` ("" matches all)."""
    if key is not None:
        return key.__eq__
    p = prefix or ""
    return lambda k: k.startswith(p)


class KVHistory:
    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if max_events < 1 or max_bytes < 1:
            raise ValueError("history bounds must be >= 1")
        self.max_events, self.max_bytes = max_events, max_bytes
        self._events: list[KVEvent] = []
        self._revs: list[int] = []  # revisions of _events, for bisect
        self._head = 0  # _events[:_head] are dropped (compacted lazily, amortized O(1))
        self.bytes = 0
        # Every revision <= this is gone (or before this node's applied state began).
        self.compact_revision = 0
        self.last_revision = 0  # the newest event's revision (or compact_revision)
        self.listeners: list[Callable[[KVEvent], None]] = []
        # Told of a reset (its revision) as it happens: the watch hub cancels the watchers
        # that needed a revision the reset skipped.
        self.reset_listeners: list[Callable[[int], None]] = []

    def __len__(self) -> int:
        return len(self._events) - self._head

    @property
    def oldest_revision(self) -> int:
        """The oldest revision a watch may start from."""
        return self.compact_revision + 1

    def record(self, revision: int, type_: str, key: str, value: Any, prev_revision: int,
               value_bytes: int) -> None:
        ev = KVEvent(revision, type_, key, value, prev_revision,
                     len(key) + value_bytes + EVENT_OVERHEAD_BYTES)
        # Replays never go back; several events of one apply share its revision.
        if revision < self.last_revision:
            raise ValueError(f"revision {revision} after {self.last_revision}")
        self._events.append(ev)
        self._revs.append(revision)
        self.bytes += ev.size
        self.last_revision = revision
        while len(self) > self.max_events or (self.bytes > self.max_bytes and len(self) > 1):
            self._drop()
        # Compaction takes whole revisions: the rest of a half-dropped one goes too.
        while len(self) and self._events[self._head].revision == self.compact_revision:
            self._drop()
        if self._head > 1024 and self._head * 2 > len(self._events):
            del self._events[:self._head]
            del self._revs[:self._head]
            self._head = 0
        for fn in self.listeners:
            fn(ev)

    def _drop(self) -> None:
        old = self._events[self._head]
        self._head += 1
        self.bytes -= old.size
        self.compact_revision = old.revision

    def reset(self, revision: int) -> None:
        """The applied state was replaced by a snapshot at `revision`: nothing before is
        known here any more."""
        self._events, self._revs, self._head, self.bytes = [], [], 0, 0
        self.compact_revision = self.last_revision = revision
        for fn in self.reset_listeners:
            fn(revision)

    def events_from(self, start: int, match: Callable[[str], bool] = lambda k: True,
                    limit: int = 1000) -> list[KVEvent]:
        """Up to `limit` matching events with revision >= `start`, oldest first, and then
        the rest of the last one's revision (a page never ends inside a revision, so the
        next starts at the last revision + 1); raises Compacted when `start` is not after
        `compact_revision`."""
        if start <= self.compact_revision:
            raise Compacted(self.compact_revision)
        out: list[KVEvent] = []
        i = bisect_left(self._revs, start, self._head)
        events = self._events
        full = 0  # once the page is full: the revision it must still finish
        for j in range(i, len(events)):
            ev = events[j]
            if full and ev.revision != full:
                break
            if match(ev.key):
                out.append(ev)
                if len(out) >= limit:
                    full = ev.revision
        return out
