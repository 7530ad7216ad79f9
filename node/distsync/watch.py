"""Watchers of kv keys and prefixes on one node (README "Watches"): who watches what, from
which revision, and what each has yet to send. The HTTP route (api/watch.py) writes the
lines; this module decides what they are and when a watcher is cancelled.

A watcher starts *unsynced*: it pages through the history (services/kv_history.py) from its
start revision. Once a page comes back short it is caught up, and in the same step (no await
between) it joins the hub's *synced* set, which `on_event` feeds from the apply: so no event
falls between the history and the live feed, and none comes twice (etcd's unsynced/synced
watcher groups).

Bounds: `max_watchers` per node, of which at most `max_watchers_per_client` per client (the
caller's scope: api/watch.py `watch_client`); each synced watcher queues at most
`buffer_events` events (references to the history's events, ~8 bytes each) that its
connection has not taken yet.
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
    """This node serves its maximum number of watchers, in all or for this client: `limit`
    names the bound (`max_watchers` or `max_watchers_per_client`), `value` is its size."""

    def __init__(self, message: str, limit: str, value: int):
        super().__init__(message)
        self.limit, self.value = limit, value


class Watcher:
    def __init__(self, key: str | None, prefix: str | None, start: int,
                 buffer_events: int, client: str | None = None):
        self.key, self.prefix = key, prefix
        self.client = client  # whose watcher it is, for max_watchers_per_client
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
                 buffer_events: int = 1000, metrics: Any = None,
                 max_watchers_per_client: int = 1000):
        self.history = history
        self.max_watchers, self.buffer_events = max_watchers, buffer_events
        self.max_watchers_per_client = max_watchers_per_client
        self.metrics = metrics  # NodeMetrics or None
        # Dicts as ordered sets: events reach the watchers in the order they opened, the
        # same in every run (a set of objects iterates in address order, which would make
        # the simulation's schedules differ between runs of one seed).
        self.watchers: dict[Watcher, None] = {}
        self.by_client: dict[str, int] = {}  # client -> its open watchers (none: absent)
        self._synced: dict[Watcher, None] = {}
        self.closing = False  # the node is stopping: no new watcher
        history.listeners.append(self.on_event)
        history.reset_listeners.append(self.on_reset)

    def open(self, start: int, key: str | None = None, prefix: str | None = None,
             client: str | None = None) -> Watcher:
        """A watcher from revision `start` for `client` (None: counted in the node's bound
        only); raises Compacted or WatchLimit."""
        if len(self.watchers) >= self.max_watchers:
            raise WatchLimit(f"this node serves its maximum of {self.max_watchers} watchers",
                             "max_watchers", self.max_watchers)
        if client is not None and \
                self.by_client.get(client, 0) >= self.max_watchers_per_client:
            raise WatchLimit(
                f"this client has {self.by_client[client]} watchers open on this node, its "
                f"maximum (max_watchers_per_client); end one, or watch a wider prefix",
                "max_watchers_per_client", self.max_watchers_per_client)
        if start <= self.history.compact_revision:
            raise Compacted(self.history.compact_revision)
        w = Watcher(key, prefix, start, self.buffer_events, client)
        self.watchers[w] = None
        if client is not None:
            self.by_client[client] = self.by_client.get(client, 0) + 1
        self._gauge()
        return w

    def close(self, w: Watcher) -> None:
        if w in self.watchers and w.client is not None:
            left = self.by_client.get(w.client, 1) - 1
            if left > 0:
                self.by_client[w.client] = left
            else:
                self.by_client.pop(w.client, None)
        self.watchers.pop(w, None)
        self._synced.pop(w, None)
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
                self._synced[w] = None
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

    def on_reset(self, revision: int) -> None:
        """The node's applied state jumped to a snapshot at `revision` (one installed from
        the leader while running): a watcher that still needed a revision up to it would
        never get the changes the snapshot skipped, so it is cancelled (`compacted`) and
        resumes elsewhere, or is told with a 410 how far back this node's history reaches.
        (Found by the simulation's watchers: a follower restarted behind, then sent a
        snapshot, went on streaming after a gap.)"""
        for w in list(self.watchers):
            if w.next_revision <= revision:
                self.cancel(w, "compacted")

    def shutdown(self) -> None:
        """The node is stopping: every stream ends now with `canceled` reason `shutdown`, so
        its client resumes on another node at once, and the node's HTTP server, which waits
        for its handlers before it exits, is not held up until each stream's next progress
        line (a stream whose client has gone notices only when it writes)."""
        self.closing = True
        for w in list(self.watchers):
            self.cancel(w, "shutdown")

    def cancel(self, w: Watcher, reason: str) -> None:
        if w.canceled is None:
            w.canceled = reason
            w.queue.clear()  # nothing more is sent but the cancellation
            self._synced.pop(w, None)
            w.wake.set()
            if self.metrics is not None:
                self.metrics.watch_cancellations.labels(reason).inc()

    def sent(self, n: int) -> None:
        if self.metrics is not None:
            self.metrics.watch_events_sent.inc(n)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.watchers.set(len(self.watchers))
