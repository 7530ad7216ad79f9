"""Leader-only, volatile bookkeeping of session leases (the lock service's clock side).

Keepalives never touch the log. The leader keeps each session's deadline in memory, on its own
monotonic clock (so a wall-clock step cannot expire anybody), and when a deadline passes it
proposes an `expire` command; the expiry itself is replicated and applied deterministically.

Why a keepalive answered "ok" is never contradicted by an expiry applied later:

* The leader that proposes an expiry marks the session `expiring` at once and answers every
  later keepalive for it with 404 (the client must assume the session lost). The proposal may
  be lost with a leader change; then the session lives on, and the conservative 404 only
  makes the client give up early.
* A leader answers a keepalive only after a ReadIndex round in its own term (the API handler
  runs `read_barrier` first). Every expiry proposed by an earlier leader that will ever commit
  precedes this leader's first entry in the log, so it has been applied by then: the session
  is gone and the keepalive gets 404. After that point only this leader proposes expiries.
* A deposed leader cannot answer: the ReadIndex round needs a quorum in its term. A leader
  elected later gives every session a fresh full TTL (`start`), counted from after it was
  elected, hence after the quorum confirmed the keepalive. So a client that counts its lease
  from the moment it *sent* a keepalive never overestimates it.
* The `expire` command carries the leader's view (`idle_ms`), and apply refuses it unless
  `idle_ms >= ttl_ms` of the session as replicated: the deadline condition is re-checked from
  replicated data only. An unknown session makes it a no-op, so repeating it is harmless.

The tracker also remembers the term it was started in; the API refuses keepalives (503,
retry) until the current term's tracker exists, so a node that regains leadership never
answers from a view it kept from an earlier term.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

# Re-propose an expiry or timeout that has not been applied after this long (a lost
# proposal); both commands are idempotent.
RETRY_MS = 1_000


class NotReady(Exception):
    """This leader has not started its lease view for the current term yet; retry."""


class _HasTTL(Protocol):
    ttl_ms: int


def _mono_ms() -> float:
    return time.monotonic() * 1000.0


class LeaseTracker:
    def __init__(self, clock: Callable[[], float] | None = None):
        self.clock = clock or _mono_ms
        self.term: int | None = None  # the leadership term this view belongs to
        self.deadlines: dict[str, float] = {}  # session -> clock ms
        self.last_seen: dict[str, float] = {}  # session -> last keepalive (or lease start)
        self.expiring: dict[str, float] = {}  # session -> when its expiry was proposed
        self.timeouts_sent: dict[int, int] = {}  # wait id -> leader wall ms of the proposal
        self.dirty = True  # the set of sessions changed: rescan
        self._next_scan = 0.0

    def start(self, sessions: Mapping[str, _HasTTL], term: int | None) -> None:
        """A new leadership: every session gets a fresh full TTL from now."""
        now = self.clock()
        self.term = term
        self.deadlines = {sid: now + s.ttl_ms for sid, s in sessions.items()}
        self.last_seen = dict.fromkeys(sessions, now)
        self.expiring = {}
        self.timeouts_sent = {}
        self.dirty = True

    def keepalive(self, sid: str, ttl_ms: int) -> None:
        now = self.clock()
        self.deadlines[sid] = now + ttl_ms
        self.last_seen[sid] = now

    def remaining_ms(self, sid: str) -> float | None:
        d = self.deadlines.get(sid)
        return None if d is None else max(0.0, d - self.clock())

    def due(self, sessions: Mapping[str, _HasTTL]) -> list[tuple[str, int]]:
        """Sessions whose lease ran out, as (session, idle ms); each is reported again every
        RETRY_MS until it is gone. O(1) until the earliest deadline, O(sessions) then."""
        now = self.clock()
        if not self.dirty and now < self._next_scan:
            return []
        out: list[tuple[str, int]] = []
        nxt = math.inf
        for sid, s in sessions.items():
            d = self.deadlines.get(sid)
            if d is None:  # opened since the last scan
                d = self.deadlines[sid] = now + s.ttl_ms
                self.last_seen[sid] = now
            if d <= now:
                sent = self.expiring.get(sid)
                if sent is None or now - sent >= RETRY_MS:
                    self.expiring[sid] = now
                    out.append((sid, int(now - self.last_seen[sid])))
                d = now + RETRY_MS
            nxt = min(nxt, d)
        if len(self.deadlines) > len(sessions):
            for sid in [k for k in self.deadlines if k not in sessions]:
                self.deadlines.pop(sid, None)
                self.last_seen.pop(sid, None)
                self.expiring.pop(sid, None)
        self._next_scan = nxt
        self.dirty = False
        return out
