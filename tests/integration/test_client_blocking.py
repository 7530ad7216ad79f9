"""BlockingClient against a real cluster: key-value round trips, leader discovery, and a
leadership transfer to a named follower."""

from __future__ import annotations

import threading

import pytest
from cluster_helpers import agreed_leader, diag, wait_until

from distsync.client import BlockingClient, CompareFailed, DistSyncError, NotFound
from distsync.local import LocalCluster


def test_kv_operations(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    with BlockingClient(lc.addrs) as c:
        res = c.put("bc/k", {"x": 1, "y": [1, 2]})
        rev = res["revision"]
        assert rev > 0 and res["prev_revision"] == 0
        assert c.get("bc/k") == {"key": "bc/k", "value": {"x": 1, "y": [1, 2]}, "revision": rev}
        assert c.get_value("bc/k") == {"x": 1, "y": [1, 2]}

        res2 = c.put("bc/k", "second")
        assert res2["revision"] > rev and res2["prev_revision"] == rev
        assert c.get("bc/k", consistency="stale")["value"] in ({"x": 1, "y": [1, 2]}, "second")
        assert c.get_value("bc/k") == "second"

        with pytest.raises(CompareFailed):
            c.cas("bc/k", rev, "stale-cas")
        assert c.cas("bc/k", res2["revision"], "third")["prev_revision"] == res2["revision"]

        d = c.delete("bc/k")
        assert d["deleted"] is True
        with pytest.raises(NotFound):
            c.get("bc/k")
        assert c.get_value("bc/k", "default") == "default"
        assert c.delete("bc/k")["deleted"] is False

        st = c.status()
        assert st["role"] in ("leader", "follower") and st["leader"] in lc.nodes
        members = c.members()
        assert sorted(m["id"] for m in members["members"]) == sorted(lc.nodes)
        assert all(m["voter"] for m in members["members"])


def test_usable_from_many_threads(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    errors: list[BaseException] = []
    with BlockingClient(lc.addrs) as c:

        def work(t: int) -> None:
            try:
                for i in range(10):
                    c.put(f"bc/threads/{t}/{i}", i)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not errors, errors
        assert all(c.get_value(f"bc/threads/{t}/9") == 9 for t in range(6))


def test_find_leader_from_a_follower_seed(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    leader = agreed_leader(lc)
    follower = next(n for n in lc.nodes if n != leader)
    with BlockingClient([lc.nodes[follower].addr]) as c:
        assert c.find_leader() == lc.nodes[leader].addr, diag(lc, "find_leader")
        assert c.leader_addr == lc.nodes[leader].addr


def test_transfer_leader_to_named_follower(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    leader = agreed_leader(lc)
    target = next(n for n in sorted(lc.nodes) if n != leader)
    term = lc.status(leader)["term"]
    with BlockingClient(lc.addrs) as c:
        assert c.transfer_leader(target) == target
        now = agreed_leader(lc, 10.0)
        assert now == target, diag(lc, f"transferred to {target}, but {now} leads")

        st = c.status(addr=lc.nodes[target].addr)
        assert st["role"] == "leader" and st["leader"] == target and st["term"] > term, diag(
            lc, f"{target} after the transfer: {st}"
        )
        old = lc.status(leader)
        assert old["role"] == "follower" and old["leader"] == target, diag(lc, str(old))

        assert c.find_leader() == lc.nodes[target].addr
        c.put("bc/after-transfer", target)
        assert c.get_value("bc/after-transfer") == target

        # A transfer to something that is not a voter is refused.
        with pytest.raises(DistSyncError) as ei:
            c.transfer_leader("not-a-node")
        assert ei.value.status == 400

    # The cluster stays settled under the new leader.
    wait_until(lc, lambda: all(s and s["ready"] for s in lc.statuses().values()), 10,
               "all nodes ready after the transfer")
