"""The cache's Prometheus collectors, created on the node's own registry, and the plain
counters behind `GET /v1/cache`.

The counters are plain ints, exported at scrape time by a collector of our own: a
prometheus_client Counter takes a lock on every increment, and a PUT bumps several of them
(a few percent of its CPU at c=64)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from .near import E, M, S

BUCKETS = (
    0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
)
COUNTERS = ("hits", "misses", "backend_reads", "invalidations_sent", "invalidations_received",
            "evictions", "backend_errors", "puts", "deletes", "silent_upgrades", "revocations",
            "broadcasts")


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry | None,
                 lines: Callable[[str], int], nbytes: Callable[[], int]):
        self.n = dict.fromkeys(COUNTERS, 0)
        self.lat_sum = {"hit": 0.0, "miss": 0.0, "put": 0.0}
        self.lat_n = {"hit": 0, "miss": 0, "put": 0}
        r = registry or CollectorRegistry()
        r.register(_Counters(self.n))
        self.hit_ratio = Gauge("distsync_cache_hit_ratio", "hits / (hits + misses)",
                               registry=r)
        self.hit_ratio.set_function(self.ratio)
        g = Gauge("distsync_cache_lines", "Lines held by this node, by MESI state", ["state"],
                  registry=r)
        for st in (M, E, S):
            g.labels(st).set_function(lambda st=st: lines(st))
        Gauge("distsync_cache_bytes", "Bytes held by this node's near cache",
              registry=r).set_function(nbytes)
        self.get_latency = Histogram(
            "distsync_cache_get_seconds", "GET latency by outcome", ["result"],
            buckets=BUCKETS, registry=r,
        )
        self._get_hit = self.get_latency.labels("hit")
        self._get_miss = self.get_latency.labels("miss")
        self.put_latency = Histogram(
            "distsync_cache_put_seconds", "PUT/DELETE latency (acknowledged)", buckets=BUCKETS,
            registry=r,
        )

    def inc(self, name: str, by: int = 1) -> None:
        self.n[name] += by

    def ratio(self) -> float:
        total = self.n["hits"] + self.n["misses"]
        return self.n["hits"] / total if total else 0.0

    def hit(self, seconds: float) -> None:
        self.n["hits"] += 1
        self._get_hit.observe(seconds)
        self.lat_sum["hit"] += seconds
        self.lat_n["hit"] += 1

    def miss(self, seconds: float) -> None:
        self.n["misses"] += 1
        self._get_miss.observe(seconds)
        self.lat_sum["miss"] += seconds
        self.lat_n["miss"] += 1

    def put(self, seconds: float) -> None:
        self.put_latency.observe(seconds)
        self.lat_sum["put"] += seconds
        self.lat_n["put"] += 1

    def mean_us(self) -> dict[str, float | None]:
        return {
            k: (round(self.lat_sum[k] / self.lat_n[k] * 1e6, 1) if self.lat_n[k] else None)
            for k in self.lat_sum
        }


class _Counters:
    """`distsync_cache_<name>_total` for every counter, read from the plain ints."""

    def __init__(self, n: dict[str, int]):
        self.n = n

    def collect(self):  # type: ignore[no-untyped-def]
        for name in COUNTERS:
            yield CounterMetricFamily(f"distsync_cache_{name}",
                                      f"Cache {name.replace('_', ' ')}", value=self.n[name])

    def describe(self):  # type: ignore[no-untyped-def]
        return [CounterMetricFamily(f"distsync_cache_{name}", f"Cache {name.replace('_', ' ')}")
                for name in COUNTERS]
