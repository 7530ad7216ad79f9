"""Watchers of kv keys and prefixes on one node (README "Watches"): who watches what, from
which revision, and what each has yet to send. The HTTP route (api/watch.py) writes the
lines; this module decides what they are and when a watcher is cancelled.

A watcher starts *unsynced*: it pages through the history (services/kv_history.py) from its
start revision. Once a page comes back short it is caught up, and in the same step (no await
between) it joins the hub's *synced* set, which `on_event` feeds from the apply: so no event
falls between the history and the live feed, and none comes twice (etcd's unsynced/synced
watcher groups).

Bounds: `max_watchers` per node; each synced watcher queues at most `buffer_events` events
(references to the history's events, ~8 bytes each) that its connection has not taken yet.
A watcher whose queue is full is cancelled (`slow_consumer`); one whose next revision the
history dropped while it paged is cancelled too (`compacted`): it may resume, and will be
told with a 410 which revision is the oldest left.

Several events may share a revision (a session's end deletes its ephemeral keys in one
apply). A page taken here never ends inside a revision, so `next_revision` is always the
start of a whole revision: the `canceled` line's revision never hides part of one. A
connection may still break between two lines of one revision; the client resumes from that
revision and skips the events of it it already has (client/watch.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .services.kv_history import Compacted, KVEvent, KVHistory, key_matcher

PAGE = 256  # events taken from the history per step while catching up


class WatchLimit(Exception):
    """This node serves its maximum number of watchers."""


class Watcher:
    def __init__(self, key: str | None, prefix: str | None, start: int,
                 buffer_events: int):
        self.key, self.prefix = key, prefix
        self.match = key_matcher(key, prefix)
        self.start = start
        self.next_revision = start  # every matching event before it is taken
        self.synced = False
        self.queue: deque[KVEvent] = deque()
        self.buffer_events = buffer_events
        self.canceled: str | None = None  # the reason, once cancelled
        self.wake = asyncio.Event()


class WatchHub:
    def __init__(self, history: KVHistory, max_watchers: int = 10_000,
                 buffer_events: int = 1000, metrics: Any = None):
        self.history = history
        self.max_watchers, self.buffer_events = max_watchers, buffer_events
        self.metrics = metrics  # NodeMetrics or None
        self.watchers: set[Watcher] = set()
        self._synced: set[Watcher] = set()
        history.listeners.append(self.on_event)

    def open(self, start: int, key: str | None = None, prefix: str | None = None) -> Watcher:
        """A watcher from revision `start`; raises Compacted or WatchLimit."""
        if len(self.watchers) >= self.max_watchers:
            raise WatchLimit(f"this node serves its maximum of {self.max_watchers} watchers")
        if start <= self.history.compact_revision:
            raise Compacted(self.history.compact_revision)
        w = Watcher(key, prefix, start, self.buffer_events)
        self.watchers.add(w)
        self._gauge()
        return w

    def close(self, w: Watcher) -> None:
        self.watchers.discard(w)
        self._synced.discard(w)
        self._gauge()

    def take(self, w: Watcher, limit: int = PAGE) -> list[KVEvent]:
        """The next events for `w` (empty: nothing yet; then wait on `w.wake`). Sets
        `w.canceled` when the watcher cannot go on."""
        if w.canceled:
            return []
        if not w.synced:
            try:
                page = self.history.events_from(w.next_revision, w.match, limit)
            except Compacted:
                self.cancel(w, "compacted")
                return []
            if len(page) < limit:  # caught up: live from here, in the same step
                w.synced = True
                self._synced.add(w)
                w.next_revision = max(w.next_revision, self.history.last_revision + 1)
            elif page:
                w.next_revision = page[-1].revision + 1
            return page
        out: list[KVEvent] = []
        q = w.queue
        # Whole revisions only (a session's end deletes several keys at one revision), so
        # that `next_revision` (the cancellation line's revision + 1) never splits one.
        while q and (len(out) < limit or q[0].revision == out[-1].revision):
            out.append(q.popleft())
        if out:
            w.next_revision = out[-1].revision + 1
        return out

    def on_event(self, ev: KVEvent) -> None:
        for w in list(self._synced):  # a cancel leaves the set
            # A node behind the start (a client resuming on a lagging follower) applies
            # events the watcher must not see again.
            if ev.revision >= w.start and w.match(ev.key):
                if len(w.queue) >= w.buffer_events:
                    self.cancel(w, "slow_consumer")
                else:
                    w.queue.append(ev)
                    w.wake.set()

    def cancel(self, w: Watcher, reason: str) -> None:
        if w.canceled is None:
            w.canceled = reason
            w.queue.clear()  # nothing more is sent but the cancellation
            self._synced.discard(w)
            w.wake.set()
            if self.metrics is not None:
                self.metrics.watch_cancellations.labels(reason).inc()

    def sent(self, n: int) -> None:
        if self.metrics is not None:
            self.metrics.watch_events_sent.inc(n)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.watchers.set(len(self.watchers))
