"""A cluster still forming, on real processes: a founding member's directory emptied before
the cluster ever elected a leader.

Until stop 37 this left a three-member cluster without a leader for good (README, "Replacing
a disk", kept the manual way out): the peer that had seen the emptied member's first start
told it "replaced disk", so it waited, non-voting, for a repair; the two others each needed
its answer to find the cluster new, and no leader could ever be elected to repair it. A
member that never finished asking never voted or acknowledged anything, so its peers now go
by whether it told them it finished (raft/core.py, `_on_probe`).
"""

from __future__ import annotations

from pathlib import Path

from cluster_helpers import diag, ready, wait_until

from distsync.client import BlockingClient
from distsync.local import LocalCluster

TICK_MS = 20


def test_a_member_emptied_while_the_cluster_forms_does_not_leave_it_leaderless(
        tmp_path: Path) -> None:
    lc = LocalCluster(3, tick_ms=TICK_MS, data_dir=tmp_path / "c")
    try:
        def logged(n: str, text: str) -> bool:
            return text in lc.nodes[n].log_path.read_text(errors="replace")

        def fault(n: str) -> dict | None:
            return (lc.status(n) or {}).get("storage_fault")

        # n3 is not started yet: with three members each needs both others' answers.
        lc.start_node("n1")
        lc.start_node("n2")
        wait_until(lc, lambda: logged("n1", "n2 is on its start 1")
                   and (fault("n2") or {}).get("discovering"), 15,
                   "n1 to see n2's first start, n2 asking")
        lc.kill("n2")
        lc.wipe("n2")
        lc.start_node("n2")
        wait_until(lc, lambda: logged("n1", "n2 is on start 1 of a new chain"), 15,
                   "n1 to see that n2's directory was emptied")
        # n2 asks n1 again: before stop 37 the answer was "replaced disk".
        wait_until(lc, lambda: (f := fault("n2")) is not None and (
            "new to n1" in f["detail"] or not f["discovering"]), 15,
                   "n2 to hear n1's answer on its new directory")
        f2 = fault("n2")
        assert f2 is not None and f2["discovering"], diag(lc, f"n2 was taken for a replaced "
                                                              f"disk: {f2}")
        lc.start_node("n3")
        leader = ready(lc, timeout=30)
        wait_until(lc, lambda: all(fault(n) is None and (lc.status(n) or {}).get("leader")
                                   == leader for n in lc.nodes), 30,
                   "every member to find the cluster new and follow the leader")
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(5):
                c.put(f"formed/{i}", i)
            assert [c.get(f"formed/{i}")["value"] for i in range(5)] == list(range(5))
        for n in lc.nodes:
            assert logged(n, "a new cluster"), diag(lc, f"{n} did not log the new cluster")
    except BaseException:
        lc.keep_data = True
        raise
    finally:
        lc.close()
