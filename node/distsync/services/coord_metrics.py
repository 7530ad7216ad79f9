"""Prometheus collectors for the semaphore and barrier services (read at scrape time, like
metrics.py's LockCollector): what is held and waiting now, and counters of applied events
(volatile: they restart with the process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .barriers import BarrierService
from .semaphores import SemaphoreService


class SemaphoreCollector:
    def __init__(self, svc: SemaphoreService):
        self.svc = svc

    def collect(self) -> Iterator[Any]:
        svc = self.svc
        yield GaugeMetricFamily("distsync_semaphores", "Semaphores with holders or waiters",
                                value=len(svc.sems))
        yield GaugeMetricFamily("distsync_semaphores_permits_held",
                                "Permits held, over all semaphores",
                                value=sum(s.used for s in svc.sems.values()))
        yield GaugeMetricFamily("distsync_semaphores_waiters", "Queued semaphore requests",
                                value=len(svc.waits))
        for key, help_text in (
            ("grants", "Semaphore grants applied"), ("releases", "Permit releases applied "
             "(by release or session end)"),
            ("timeouts", "Semaphore waits removed at their deadline"),
            ("deadlocks", "Semaphore acquires refused because they would close a cycle"),
            ("conflicts", "Semaphore acquires refused for naming another permit count"),
        ):
            yield CounterMetricFamily(f"distsync_semaphores_{key}", help_text,
                                      value=svc.stats[key])

    def describe(self) -> list[Any]:
        return []


class BarrierCollector:
    def __init__(self, svc: BarrierService):
        self.svc = svc

    def collect(self) -> Iterator[Any]:
        svc = self.svc
        yield GaugeMetricFamily("distsync_barriers_raised", "Barriers raised",
                                value=len(svc.barriers))
        yield GaugeMetricFamily("distsync_double_barriers", "Double barriers with participants",
                                value=len(svc.doubles))
        yield GaugeMetricFamily(
            "distsync_double_barriers_participants", "Sessions in double barriers' rounds",
            value=sum(len(d.entered) - len(d.left) for d in svc.doubles.values()))
        for key, help_text in (
            ("sets", "Barriers raised"), ("removes", "Barriers removed (by remove or the end "
                                          "of their session)"),
            ("enters", "Double-barrier enters counted in a round"),
            ("leaves", "Double-barrier leaves (by leave or session end)"),
            ("rounds_full", "Double-barrier rounds that filled (enters released)"),
            ("rounds_done", "Double-barrier rounds that ended (leaves released)"),
        ):
            yield CounterMetricFamily(f"distsync_barriers_{key}", help_text,
                                      value=svc.stats[key])

    def describe(self) -> list[Any]:
        return []
