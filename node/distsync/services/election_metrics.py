"""Prometheus metrics of the election service (services/elections.py), read from its state
and counters at scrape time, like the lock service's `LockCollector` (metrics.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

EVENTS = {
    "campaigns": "Candidacies queued by campaign",
    "elected": "Candidates elected (each a new fencing token)",
    "resigned": "Leaders that resigned",
    "proclaims": "Leader values changed by proclaim",
    "session_ends": "Sessions that ended while they led or campaigned",
}


class ElectionCollector:
    """Elections with a leader, waiting candidates, and counters of applied events. The
    counters restart with the process (they count applies on this node)."""

    def __init__(self, svc: Any):
        self.svc = svc

    def collect(self) -> Iterator[Any]:
        svc = self.svc
        yield GaugeMetricFamily("distsync_elections_led", "Elections with a leader",
                                value=sum(1 for el in svc.elections.values() if el.leader))
        yield GaugeMetricFamily("distsync_elections_candidates",
                                "Candidates waiting behind a leader",
                                value=svc.candidate_count())
        for key, help_text in EVENTS.items():
            yield CounterMetricFamily(f"distsync_elections_{key}", help_text,
                                      value=svc.stats[key])

    def describe(self) -> list[Any]:
        return []
