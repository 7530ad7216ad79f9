"""A data directory that belongs to another node or another cluster is refused at start.

Found by an adversarial run (stop 34): with a follower's directory replaced by a copy of
another member's, or by the same member's directory from another cluster, the node started
without a word, took the copied log as its own, and was elected with the old leader down:
every write the copy had not seen was lost. A directory records whose data it holds (the
cluster and node names in its segment heads, wal.py); a node configured as someone else
must stop with a plain error, as etcd refuses a data dir of another member, and leave the
directory as it found it so that the operator can put the right one back.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
from pathlib import Path

from cluster_helpers import diag, ready, wait_caught_up

from distsync.client import BlockingClient
from distsync.local import LocalCluster


def digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.iterdir()) if p.is_file() and p.name != "LOCK"}


def start_and_wait_exit(lc: LocalCluster, node_id: str) -> tuple[int, str]:
    nd = lc.nodes[node_id]
    before = nd.log_path.stat().st_size if nd.log_path.exists() else 0
    lc.start_node(node_id)
    assert nd.proc is not None
    try:
        code = nd.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            diag(lc, f"{node_id} started on a directory that is not its own")) from None
    finally:
        nd.stopped = True
    return code, nd.log_path.read_bytes()[before:].decode(errors="replace")


def test_another_members_directory_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    with LocalCluster(3, data_dir=tmp_path) as lc, BlockingClient(lc.addrs) as c:
        leader = ready(lc)
        for i in range(10):
            c.put(f"k/{i}", i)
        donor = next(n for n in lc.nodes if n != leader)
        victim = next(n for n in lc.nodes if n not in (leader, donor))
        wait_caught_up(lc, donor, leader)
        lc.kill(victim)
        lc.kill(donor, signal.SIGTERM)  # a clean copy of the donor's directory
        shutil.rmtree(lc.nodes[victim].data_dir)
        shutil.copytree(lc.nodes[donor].data_dir, lc.nodes[victim].data_dir)
        lc.start_node(donor)
        before = digest(lc.nodes[victim].data_dir)

        code, out = start_and_wait_exit(lc, victim)

        assert code == 1, diag(lc, f"exit status {code}")
        assert f"holds the data of node {donor!r}" in out and repr(victim) in out, out
        assert "Traceback" not in out, out
        assert digest(lc.nodes[victim].data_dir) == before  # nothing rewritten
        ready(lc)  # the leader and the donor serve on
        c.put("after", 1)


def test_a_directory_of_another_cluster_is_refused(tmp_path: Path) -> None:
    """The same member name (n1) in a cluster of another name: the names on disk match the
    node's, the cluster's do not."""
    other = tmp_path / "other"
    with LocalCluster(1, data_dir=other, extra_args=["--cluster", "staging"]) as lc:
        ready(lc)
        with BlockingClient(lc.addrs) as c:
            c.put("staging-only", 1)
    with LocalCluster(3, data_dir=tmp_path / "prod") as lc:
        ready(lc)
        with BlockingClient(lc.addrs) as c:
            c.put("prod", 1)
        victim = "n1"  # leader or follower: either must refuse the other cluster's data
        lc.kill(victim)
        shutil.rmtree(lc.nodes[victim].data_dir)
        shutil.copytree(other / "n1", lc.nodes[victim].data_dir)
        before = digest(lc.nodes[victim].data_dir)

        code, out = start_and_wait_exit(lc, victim)

        assert code == 1, diag(lc, f"exit status {code}")
        assert "holds the data of cluster 'staging'" in out and "'distsync'" in out, out
        assert "Traceback" not in out, out
        assert digest(lc.nodes[victim].data_dir) == before
