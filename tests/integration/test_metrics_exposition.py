"""What a node's /metrics exposes (issue 20): the Raft role as a label, and no `*_created`
series beside every counter and histogram."""

from __future__ import annotations

import re

from cluster_helpers import agreed_leader, raw_request, wait_until

from distsync.local import LocalCluster


def test_role_is_a_label_and_no_created_series(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    leader = agreed_leader(lc)
    for nid, nd in lc.nodes.items():
        status, _, text = raw_request("GET", f"{nd.url}/metrics")
        assert status == 200 and isinstance(text, str)
        created = [ln for ln in text.splitlines()
                   if not ln.startswith("#") and re.match(r"^\w+_created[{ ]", ln)]
        assert created == [], created[:5]
        roles = dict(re.findall(r'^distsync_raft_role\{role="(\w+)"\} ([0-9.]+)$', text,
                                flags=re.M))
        assert set(roles) == {"follower", "pre_candidate", "candidate", "leader"}, roles
        want = "leader" if nid == leader else "follower"
        assert {r for r, v in roles.items() if float(v) == 1.0} == {want}, (nid, roles)


def test_peer_rtt_is_a_histogram_per_peer(shared_cluster: LocalCluster) -> None:
    """Peer RTT was a gauge of the latest heartbeat's round trip: a scrape every 15 s saw one
    sample in hundreds, and no percentile could be drawn. It is a histogram now, observed on
    every heartbeat answer the leader gets."""
    lc = shared_cluster
    leader = agreed_leader(lc)

    def rtt_counts() -> dict[str, float] | None:
        _, _, text = raw_request("GET", f"{lc.nodes[leader].url}/metrics")
        assert isinstance(text, str)
        assert re.search(r"^# TYPE distsync_peer_rtt_seconds histogram$", text, flags=re.M), \
            [ln for ln in text.splitlines() if "peer_rtt" in ln][:5]
        counts = {p: float(v) for p, v in re.findall(
            r'^distsync_peer_rtt_seconds_count\{peer="([^"]+)"\} ([0-9.e+]+)$', text,
            flags=re.M)}
        return counts if set(counts) == set(lc.nodes) - {leader} and all(
            v > 0 for v in counts.values()) else None

    counts = wait_until(lc, rtt_counts, 10.0, "an RTT observation for every follower")
    assert set(counts) == set(lc.nodes) - {leader}
