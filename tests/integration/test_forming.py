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

import signal
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


def test_a_member_still_asking_keeps_the_answers_it_heard_across_a_crash(
        tmp_path: Path) -> None:
    """Stop 37's adversarial run (F2, two faults at once), on real processes: n1 heard "new"
    from n2 and n3 and told them it finished; n2 and n3, still asking, had each heard n1 say
    "new" but not each other. n1's directory is then emptied: both answer it "replaced
    disk", and recovering, it "cannot say" to anyone. n2 is killed and restarts on its
    directory. Before stop 38 it forgot n1's answer, could not get it again, and with three
    members no leader was ever elected to repair n1. SIGSTOP keeps each member from hearing
    the one it must not hear yet."""
    lc = LocalCluster(3, tick_ms=TICK_MS, data_dir=tmp_path / "c")

    def fault(n: str) -> dict:
        return (lc.status(n) or {}).get("storage_fault") or {}

    def detail(n: str) -> str:
        return fault(n).get("detail", "")

    frozen: set[str] = set()

    def freeze(n: str) -> None:
        lc.kill(n, signal.SIGSTOP)
        frozen.add(n)

    def thaw(n: str) -> None:
        lc.kill(n, signal.SIGCONT)
        frozen.discard(n)

    try:
        lc.start_node("n1")
        lc.start_node("n2")
        wait_until(lc, lambda: "new to n2" in detail("n1") and "new to n1" in detail("n2"),
                   15, "n1 and n2 to hear each other")
        freeze("n2")
        lc.start_node("n3")
        wait_until(lc, lambda: "kept by n3" in detail("n1") and "new to n1" in detail("n3"),
                   15, "n1 to find the cluster new and n3 to keep that")
        freeze("n3")
        thaw("n2")
        wait_until(lc, lambda: (lc.status("n1") or {}).get("storage_fault", 0) is None, 15,
                   "n1 to finish asking once n2 keeps it too")
        assert fault("n2").get("discovering") and "new to n1" in detail("n2"), diag(
            lc, f"n2 is not asking with n1's answer: {fault('n2')}")
        lc.kill("n1")
        lc.wipe("n1")
        lc.start_node("n1")
        wait_until(lc, lambda: detail("n1").startswith("replaced disk: n2 knows"), 15,
                   "n2 to tell n1's new directory that it replaced one that finished")
        lc.kill("n2")
        lc.start_node("n2")
        wait_until(lc, lambda: fault("n2").get("discovering"), 15, "n2 to ask again")
        # Before stop 38: "n1 cannot say (recovering)", and never n1's answer again.
        assert "new to n1" in detail("n2"), diag(lc, f"n2 forgot n1's answer: {fault('n2')}")
        thaw("n3")
        leader = ready(lc, timeout=30)
        assert leader != "n1"
        wait_until(lc, lambda: all((lc.status(n) or {}).get("storage_fault", 0) is None
                                   for n in lc.nodes), 30,
                   "n2 and n3 to find the cluster new and the leader to repair n1")
        with BlockingClient(lc.addrs, timeout=30) as c:
            c.put("formed", 1)
            assert c.get("formed")["value"] == 1
    except BaseException:
        lc.keep_data = True
        raise
    finally:
        for n in list(frozen):
            thaw(n)
        lc.close()
