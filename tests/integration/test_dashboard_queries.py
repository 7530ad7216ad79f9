"""Issue 20: every query of the Grafana dashboard runs against series a real node exposes.

A 3-node cluster with a real redis-server gets a little of each kind of traffic (kv, a lock,
queue messages acked, nacked, redelivered and dead-lettered, cache writes, hits and a miss) so
that every series a panel draws has samples, then each query
of `charts/distsync/dashboards/distsync.json` is parsed and checked against the nodes'
`/metrics` (see promql_checks.py for the rules)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cluster_helpers import raw_request
from promql_checks import check_dashboard, undrawn_latency_histograms

from distsync.client import BlockingClient
from distsync.local import LocalCluster

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/distsync/dashboards/distsync.json"


def _scrape(lc: LocalCluster) -> list[str]:
    out = []
    for nd in lc.nodes.values():
        status, _, text = raw_request("GET", f"{nd.url}/metrics")
        assert status == 200 and isinstance(text, str)
        out.append(text)
    return out


def test_every_dashboard_query_matches_a_real_nodes_metrics(
    cache_cluster: LocalCluster,
) -> None:
    tag = uuid.uuid4().hex[:8]
    with BlockingClient(cache_cluster.addrs) as c:
        c.put(f"dash-{tag}", "v")
        lock = c.lock(f"dash-{tag}")
        lock.acquire(timeout=5)
        lock.release()
        q = c.queue(f"dash-{tag}")
        q.create(partitions=1, max_deliveries=2)
        q.put_many([{"body": 1}, {"body": 2}])
        first = q.get("w", max=2)
        assert q.nack(*first).nacked == 2
        again = q.get("w", max=2)  # redelivered
        assert sorted(m.body for m in again) == [1, 2]
        q.ack(again[0])
        q.nack(again[1])  # its second delivery: dead-lettered
        assert q.info()["messages"] == 0
        c.cache.set(f"dash-{tag}", b"v")
        assert c.cache.get(f"dash-{tag}") == b"v"
        assert c.cache.get(f"dash-{tag}") == b"v"
        assert c.cache.get(f"dash-absent-{tag}") is None
    expositions = _scrape(cache_cluster)
    dash = json.loads(DASHBOARD.read_text())
    faults = check_dashboard(dash, expositions)
    assert faults == [], "\n".join(faults)
    empty = [p["title"] for p in dash["panels"] if p["type"] != "row" and not p.get("targets")]
    assert empty == []


def test_every_latency_histogram_has_a_panel(cache_cluster: LocalCluster) -> None:
    """The lock, queue and cache latencies were measured and never drawn."""
    with BlockingClient(cache_cluster.addrs) as c:  # so the queue's (per queue) exist
        q = c.queue(f"dash-lat-{uuid.uuid4().hex[:8]}")
        q.create(partitions=1)
        q.put({"n": 1})
        q.ack(*q.get("w", max=1))
    expositions = _scrape(cache_cluster)
    assert "distsync_queue_end_to_end_seconds_bucket" in "".join(expositions)
    missing = undrawn_latency_histograms(json.loads(DASHBOARD.read_text()), expositions)
    assert missing == []


# The checker itself, on a small exposition written here: each rule can fail.

_EXPOSITION = """\
# HELP g_depth A gauge
# TYPE g_depth gauge
g_depth 3.0
# HELP c_events_total A counter
# TYPE c_events_total counter
c_events_total 5.0
# HELP h_seconds A histogram
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1"} 1.0
h_seconds_bucket{le="+Inf"} 2.0
h_seconds_count 2.0
h_seconds_sum 0.3
# HELP x_hit_ratio A ratio
# TYPE x_hit_ratio gauge
x_hit_ratio 0.5
"""


def _panel(expr: str, unit: str | None = None) -> dict:
    p: dict = {"title": "p", "targets": [{"refId": "A", "expr": expr}]}
    if unit:
        p["fieldConfig"] = {"defaults": {"unit": unit}}
    return {"panels": [p]}


@pytest.mark.parametrize(("expr", "unit", "fault"), [
    ("g_depth", "short", None),
    ("sum(rate(c_events_total[1m]))", "ops", None),
    ("histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket[5m])))", "s", None),
    ("sum(rate(c_events_total[5m])) / sum(rate(h_seconds_count[5m]))", "percentunit", None),
    ("g_inflight", "short", "not in the node's /metrics"),
    ('{__name__=~"g_.*"}', "short", "does not name its series"),
    ("rate(g_depth[1m])", "ops", "rate() over g_depth, a gauge"),
    ("increase(g_depth[1h])", "short", "increase() over g_depth, a gauge"),
    ("histogram_quantile(0.9, rate(c_events_total[1m]))", "short", "not a _bucket"),
    ("avg(x_hit_ratio)", "percentunit", "avg() of the ratio x_hit_ratio"),
    ("rate(c_events_total[1m])", "short", "measures per_second, on an axis of unit 'short'"),
    ("g_depth + rate(c_events_total[1m])", "short", "measures mixed"),
    ("sum(h_seconds_sum) + sum(g_depth", "s", "does not parse"),
])
def test_the_checker_finds_each_fault(expr: str, unit: str, fault: str | None) -> None:
    faults = check_dashboard(_panel(expr, unit), [_EXPOSITION])
    if fault is None:
        assert faults == []
    else:
        assert len(faults) == 1 and fault in faults[0], faults
