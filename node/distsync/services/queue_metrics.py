"""Prometheus metrics of the queue service, on the node's own registry.

Counters and latencies are observed as commands are applied, so every node reports the same
values for the same log (the latencies use the leader's timestamps carried in the commands).
Gauges (depth, in flight, ...) are read from the state when scraped.

One custom collector renders everything from plain integers: an apply of a 100-message batch
observes 100 latencies, and prometheus_client's locked Counter/Histogram objects cost several
microseconds per call on the apply path; a list increment does not.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

EVENTS = {
    "enqueued": "Messages enqueued (committed)",
    "duplicates": "Enqueues dropped as duplicates of a client id in the dedupe window",
    "rejected": "Messages refused because the queue was full (max_length / max_bytes)",
    "dequeued": "Deliveries (first deliveries and redeliveries)",
    "acked": "Messages acknowledged (deleted)",
    "nacked": "Messages given back by a consumer (nack)",
    "redelivered": "Deliveries of a message that had been delivered before",
    "dead_lettered": "Messages moved to the dead-letter queue after max_deliveries",
    "expired": "Messages deleted by the retention limit",
}
HISTOGRAMS = {
    "end_to_end": ("distsync_queue_end_to_end_seconds",
                   "Enqueue to ack, by the leader's clock at each (the whole life of a message)"),
    "first_delivery": ("distsync_queue_wait_seconds",
                       "Enqueue to first delivery (time spent waiting in the queue)"),
}
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
           60.0, 300.0)
_GAUGES = (
    ("distsync_queue_depth", "Messages ready for delivery", lambda q: q.ready()),
    ("distsync_queue_in_flight", "Messages delivered and not yet acked", lambda q: q.inflight),
    ("distsync_queue_delayed", "Messages nacked with a delay, not yet ready",
     lambda q: q.delayed),
    ("distsync_queue_bytes", "Bytes held (body + key + headers)", lambda q: q.bytes),
    ("distsync_queue_consumers", "Registered consumers", lambda q: len(q.consumers)),
)


class QueueMetrics:
    """The service's observer (see NullObserver in services/queue_core.py) and a collector."""

    def __init__(self, registry: CollectorRegistry, svc: Any):
        self.svc = svc
        self._counts: dict[tuple[str, str], int] = {}
        # (kind, queue) -> [count per bucket (non-cumulative, +Inf last), sum]
        self._hist: dict[tuple[str, str], list[Any]] = {}
        registry.register(self)

    def count(self, queue: str, event: str, n: int = 1) -> None:
        key = (event, queue)
        self._counts[key] = self._counts.get(key, 0) + n

    def latency(self, queue: str, kind: str, seconds: float) -> None:
        self.latencies(queue, kind, [seconds])

    def latencies(self, queue: str, kind: str, seconds: list[float]) -> None:
        """Observe a batch (the messages of one dequeue or ack) with one table lookup."""
        h = self._hist.get((kind, queue))
        if h is None:
            h = self._hist[(kind, queue)] = [[0] * (len(BUCKETS) + 1), 0.0]
        counts, find = h[0], bisect.bisect_left
        for s in seconds:
            counts[find(BUCKETS, s)] += 1
        h[1] += sum(seconds)

    # -- prometheus_client collector ----------------------------------------------------

    def describe(self) -> list[Any]:
        return list(self._families(empty=True))

    def collect(self) -> Iterator[Any]:
        return self._families(empty=False)

    def _families(self, empty: bool) -> Iterator[Any]:
        for event, doc in EVENTS.items():
            c = CounterMetricFamily(f"distsync_queue_{event}", doc, labels=["queue"])
            if not empty:
                for (e, q), n in sorted(self._counts.items()):
                    if e == event:
                        c.add_metric([q], n)
            yield c
        for kind, (name, doc) in HISTOGRAMS.items():
            h = HistogramMetricFamily(name, doc, labels=["queue"])
            if not empty:
                for (k, q), (counts, total) in sorted(self._hist.items()):
                    if k != kind:
                        continue
                    acc, buckets = 0, []
                    for le, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                        acc += n
                        buckets.append((le, acc))
                    h.add_metric([q], buckets, total)
            yield h
        queues = [] if empty else list(self.svc.queues.values())
        for name, doc, fn in _GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["queue"])
            for q in queues:
                g.add_metric([q.name], fn(q))
            yield g
