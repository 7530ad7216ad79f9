"""Prometheus metrics for one node. Each node owns its registry, so several nodes can live in
one process (tests, the simulator) without colliding."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Counters and histograms would each add a `*_created` gauge (a timestamp) that dashboards
# never use and that doubles the series count; they are off for the whole process.
disable_created_metrics()

ROLES = ("follower", "pre_candidate", "candidate", "leader")  # raft.types.Role order

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)

# From a local socket (~0.1 ms) to a peer across regions or a stalled event loop (1 s).
_RTT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)


STORAGE_FAULT_KINDS = ("lost_tail", "corrupt_entry", "lost_snapshot", "lost_hard_state",
                       "empty_after_use", "empty_data_dir", "rolled_back")


class NodeMetrics:
    def __init__(self, node_id: str):
        self.registry = CollectorRegistry()
        r = self.registry
        self.term = Gauge("distsync_raft_term", "Current Raft term", registry=r)
        self.is_leader = Gauge("distsync_raft_is_leader", "1 if this node is leader", registry=r)
        self.role = Gauge(
            "distsync_raft_role", "1 for this node's current Raft role, 0 for the others",
            ["role"], registry=r,
        )
        self._role: int | None = None
        self.set_role(0)
        self.commit_index = Gauge("distsync_raft_commit_index", "Commit index", registry=r)
        self.applied_index = Gauge("distsync_raft_applied_index", "Applied index", registry=r)
        self.last_index = Gauge("distsync_raft_last_index", "Last log index", registry=r)
        self.snapshot_index = Gauge(
            "distsync_raft_snapshot_index", "Index of the latest snapshot", registry=r
        )
        self.leader_changes = Counter(
            "distsync_raft_leader_changes", "Times this node saw the leader change", registry=r
        )
        self.proposals = Counter(
            "distsync_proposals", "Commands proposed through this node", ["outcome"], registry=r
        )
        self.apply_latency = Histogram(
            "distsync_apply_latency_seconds",
            "Time from proposal to the command being applied on the leader",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.fsync_latency = Histogram(
            "distsync_storage_fsync_seconds", "Time of one group-commit write + fsync",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_entries = Histogram(
            "distsync_storage_batch_entries", "Entries persisted per fsync",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )
        # A histogram, not the latest value: the leader measures a round trip on every
        # heartbeat (many a second), and a gauge scraped every 15 s shows one in hundreds and
        # no percentile; from buckets a dashboard draws p50/p99 per peer.
        self.peer_rtt = Histogram(
            "distsync_peer_rtt_seconds", "Heartbeat round-trip time to a peer, on the leader",
            ["peer"], buckets=_RTT_BUCKETS, registry=r,
        )
        self.peer_connected = Gauge(
            "distsync_peer_connected", "1 if the outbound peer connection is up", ["peer"],
            registry=r,
        )
        self.reads = Counter(
            "distsync_linearizable_reads", "ReadIndex reads served", ["outcome"], registry=r
        )
        # 1 for the kind of storage fault this node is recovering from (README "Storage
        # faults"), 0 for the others: a dashboard alerts on any 1 without knowing the kinds.
        self.storage_fault = Gauge(
            "distsync_storage_fault",
            "1 while this node recovers from a storage fault of this kind (not voting)",
            ["kind"], registry=r,
        )
        for kind in STORAGE_FAULT_KINDS:
            self.storage_fault.labels(kind).set(0)
        self.http_requests = Counter(
            "distsync_http_requests", "HTTP requests by route and status",
            ["route", "status"], registry=r,
        )
        self.locks_acquire_latency = Histogram(
            "distsync_locks_acquire_latency_seconds",
            "Time from an acquire request to its grant, on the leader (waiting included)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )

        # Watches (watch.py): watchers served by this node, events written to them, and
        # watchers this node cancelled, by reason (slow_consumer, compacted, shutdown).
        self.watchers = Gauge("distsync_watchers", "Watch streams open on this node",
                              registry=r)
        self.watch_events_sent = Counter(
            "distsync_watch_events_sent", "kv events written to watch streams", registry=r)
        self.watch_cancellations = Counter(
            "distsync_watch_cancellations", "Watch streams this node cancelled, by reason",
            ["reason"], registry=r,
        )
        for reason in ("slow_consumer", "compacted", "shutdown"):
            self.watch_cancellations.labels(reason)

    def set_role(self, role: int) -> None:
        """A label per role (`distsync_raft_role{role="leader"} 1`), so a query can select
        or count by role instead of decoding a number."""
        if role == self._role:
            return
        self._role = role
        for i, name in enumerate(ROLES):
            self.role.labels(name).set(1 if i == role else 0)

    def set_storage_fault(self, kind: str | None) -> None:
        for k in {*STORAGE_FAULT_KINDS, *([kind] if kind else [])}:
            self.storage_fault.labels(k).set(1 if k == kind else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestIdCollector:
    """The request-id table (services/registry.py), read at scrape time: how many ids it
    holds, how many requests it answered, and how far back it reaches (README "Request
    ids": a client must not count on a retry later than that)."""

    def __init__(self, registry: Any):
        self.reg = registry

    def collect(self) -> Any:
        yield GaugeMetricFamily("distsync_request_ids", "Request ids remembered",
                                value=len(self.reg.dedupe))
        yield CounterMetricFamily("distsync_request_id_replays",
                                  "Requests answered from the request-id table",
                                  value=self.reg.replays)
        window = self.reg.window_ms(int(time.time() * 1000))
        yield GaugeMetricFamily(
            "distsync_request_id_window_seconds",
            "Age of the oldest remembered request id (by the leader clock it was applied with)",
            value=float("nan") if window is None else window / 1000,
        )

    def describe(self) -> list[Any]:
        return []


class IdentityCollector:
    """Whose data this node holds and whom it shuts out, read at scrape time (README "Storage
    faults"): the cluster's id as an info metric (an alert on more than one value among a
    cluster's members finds a foreign data directory), and one series per refused stream."""

    def __init__(self, node: Any):
        self.node = node

    def collect(self) -> Any:
        info = GaugeMetricFamily("distsync_cluster_id_info",
                                 "The cluster id this node has applied (absent until then)",
                                 labels=["cluster_id"])
        if self.node.core.cluster_id:
            info.add_metric([self.node.core.cluster_id.hex()], 1)
        yield info
        refused = GaugeMetricFamily(
            "distsync_peer_stream_refusals",
            "1 per peer whose stream this node refuses (side=refusing) or that refuses this "
            "node's (side=refused_by), by reason (foreign_cluster, start_chain)",
            labels=["peer", "side", "reason"])
        chains = self.node.start_chains
        if chains is not None:
            for side, peers in (("refusing", chains.refusing), ("refused_by", chains.refused_by)):
                for peer in sorted(peers):
                    foreign = (side, peer) in chains.foreign
                    refused.add_metric(
                        [peer, side, "foreign_cluster" if foreign else "start_chain"], 1)
        yield refused

    def describe(self) -> list[Any]:
        return []


class QuotaCollector:
    """Quotas (services/quotas.py) at scrape time: the limits, the weighed state, the NOSPACE
    alarm and refusals by limit (this node's, since it started)."""

    def __init__(self, quota: Any):
        self.quota = quota

    def collect(self) -> Any:
        q = self.quota
        st = q.status()
        yield GaugeMetricFamily("distsync_state_bytes",
                                "About the bytes of the replicated state (weighed by the "
                                "services' estimates)", value=st["state_bytes"])
        yield GaugeMetricFamily("distsync_quota_alarm",
                                "1 while the NOSPACE alarm is on (max_state_bytes reached)",
                                value=1 if q.alarm else 0)
        limits = GaugeMetricFamily("distsync_quota_limit", "Quotas in force", labels=["limit"])
        for name, value in sorted(q.limits.items()):
            limits.add_metric([name], value)
        yield limits
        refused = CounterMetricFamily("distsync_quota_refusals",
                                      "Commands refused for a quota, by limit", labels=["limit"])
        for name, n in sorted(q.refused.items()):
            refused.add_metric([name], n)
        yield refused

    def describe(self) -> list[Any]:
        return []


class LockCollector:
    """The lock service (services/locks.py) at scrape time: held locks, waiters and sessions,
    and counters of applied events (grants, releases, expiries, timeouts, deadlocks)."""

    def __init__(self, svc: Any):
        self.svc = svc

    def collect(self) -> Any:
        svc = self.svc
        yield GaugeMetricFamily(
            "distsync_locks_held", "Locks with at least one holder",
            value=sum(1 for lk in svc.locks.values() if lk.holders),
        )
        yield GaugeMetricFamily("distsync_locks_waiters", "Queued lock requests",
                                value=len(svc.waits))
        yield GaugeMetricFamily("distsync_locks_sessions", "Open sessions",
                                value=len(svc.sessions))
        for key, help_text in (
            ("grants", "Lock grants applied"), ("releases", "Lock releases applied"),
            ("expiries", "Sessions expired by the leader"),
            ("timeouts", "Waits removed at their deadline"),
            ("deadlocks", "Acquires refused because they would close a cycle"),
        ):
            yield CounterMetricFamily(f"distsync_locks_{key}", help_text, value=svc.stats[key])

    def describe(self) -> list[Any]:
        return []
