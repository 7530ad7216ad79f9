"""What a node's /metrics exposes (issue 20): the Raft role as a label, and no `*_created`
series beside every counter and histogram."""

from __future__ import annotations

import re

from cluster_helpers import agreed_leader, raw_request

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
