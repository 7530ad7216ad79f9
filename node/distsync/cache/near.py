"""The near cache: one node's lines, each in state M, E or S (I = absent), LRU by bytes.

A line remembers which home granted it and the version it holds. It is served only while it
has not expired (the key's TTL) and while its home's lease is valid (checked by the caller,
see service.py). M lines are pinned: a modified line is written back (in this write-through
design: its write to the backend completes) before it may be evicted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

M, E, S, I = "M", "E", "S", "I"  # noqa: E741 - the protocol's own names
STATES = (M, E, S, I)
LINE_OVERHEAD = 96  # bytes charged per line besides key and value (object, dict slot)


@dataclass(slots=True)
class Line:
    key: str
    value: bytes
    version: int
    state: str
    home: str
    expires_at: float | None = None  # monotonic seconds; None: no TTL

    @property
    def size(self) -> int:
        return len(self.key) + len(self.value) + LINE_OVERHEAD

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def ttl_ms(self, now: float) -> int | None:
        """Milliseconds left (>= 1), or None for no TTL."""
        if self.expires_at is None:
            return None
        return max(1, int((self.expires_at - now) * 1000))


class NearCache:
    """Lines by key, least recently used first. `max_bytes` bounds the sum of line sizes;
    adding past it evicts clean lines (E, S) from the LRU end. `on_evict` is told of every
    eviction (the service counts them and, for a line it cannot drop yet, never sees it:
    M lines are skipped until they are clean)."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic,
                 on_evict: Callable[[Line], None] | None = None):
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.clock = clock
        self.on_evict = on_evict
        self._lines: OrderedDict[str, Line] = OrderedDict()
        self.bytes = 0
        self.counts = {M: 0, E: 0, S: 0}

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, key: str) -> bool:
        return key in self._lines

    def __iter__(self) -> Iterator[Line]:
        return iter(list(self._lines.values()))

    def peek(self, key: str) -> Line | None:
        """The line without touching LRU order or expiry (state queries, protocol handlers)."""
        return self._lines.get(key)

    def get(self, key: str) -> Line | None:
        """A live line, made most recently used; an expired line is dropped (TTL)."""
        line = self._lines.get(key)
        if line is None:
            return None
        if line.expires_at is not None and self.clock() >= line.expires_at:
            self.drop(key)
            return None
        self._lines.move_to_end(key)
        return line

    def state(self, key: str) -> str:
        line = self._lines.get(key)
        if line is None or line.expired(self.clock()):
            return I
        return line.state

    def put(self, key: str, value: bytes, version: int, state: str, home: str,
            ttl_ms: int | None = None) -> Line | None:
        """Install (or replace) a line; returns it, or None if it alone exceeds capacity."""
        if state not in (M, E, S):
            raise ValueError(f"bad state {state!r}")
        self.drop(key)
        expires = None if ttl_ms is None else self.clock() + ttl_ms / 1000
        line = Line(key, value, version, state, home, expires)
        if line.size > self.max_bytes:
            return None
        self._lines[key] = line
        self.bytes += line.size
        self.counts[state] += 1
        self._evict()
        return line if key in self._lines else None

    def set_state(self, line: Line, state: str) -> None:
        if state == I:
            self.drop(line.key)
            return
        if self._lines.get(line.key) is line and line.state != state:
            self.counts[line.state] -= 1
            self.counts[state] += 1
        line.state = state
        if state != M:
            self._evict()

    def drop(self, key: str) -> Line | None:
        line = self._lines.pop(key, None)
        if line is not None:
            self.bytes -= line.size
            self.counts[line.state] -= 1
        return line

    def drop_where(self, pred: Callable[[Line], bool]) -> int:
        victims = [ln.key for ln in self._lines.values() if pred(ln)]
        for k in victims:
            self.drop(k)
        return len(victims)

    def sweep(self) -> int:
        """Drop every expired line; returns how many."""
        now = self.clock()
        return self.drop_where(lambda ln: ln.expired(now))

    def clear(self) -> None:
        self._lines.clear()
        self.bytes = 0
        self.counts = {M: 0, E: 0, S: 0}

    def _evict(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        for key in list(self._lines):
            if self.bytes <= self.max_bytes:
                break
            line = self._lines[key]
            if line.state == M:
                continue  # pinned until written back
            self.drop(key)
            if self.on_evict is not None:
                self.on_evict(line)
