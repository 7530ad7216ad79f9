"""A cluster's id (raft/core.py, `_noop`): its first leader's no-op gives it one, every
member holds the same, and each knows it from its own disk after a restart, before it hears
from anyone, also once its log is compacted past that no-op. Members compare ids at every
handshake (test_storage_rollback.py: a same-named cluster's directory is shut out), so an
id a member forgot would let such a directory in, and one it made up would shut it out."""

from __future__ import annotations

import signal
from pathlib import Path

from cluster_helpers import diag, ready, wait_caught_up, wait_until

from distsync.client import BlockingClient
from distsync.local import LocalCluster
from distsync.raft.conf import ConfChange, ConfOp
from distsync.raft.types import Entry, EntryType, HardState
from distsync.storage import Storage

THRESHOLD = 50


def _ids(lc: LocalCluster) -> set[str | None]:
    return {(s or {}).get("cluster_id") for s in lc.statuses().values()}


def _each_alone_knows(lc: LocalCluster, cid: str) -> None:
    """Every member stopped, then each started alone: no leader to learn anything from."""
    for n in lc.nodes:
        lc.kill(n, signal.SIGKILL)
    for n in lc.nodes:
        lc.start_node(n)
        wait_until(lc, lambda n=n: lc.status(n) is not None, 15, f"{n} to answer")
        st = lc.status(n)
        assert st is not None and st["leader"] is None, diag(lc, f"{n}: {st}")
        assert st["cluster_id"] == cid, diag(lc, f"{n} alone holds {st['cluster_id']}, not {cid}")
        lc.kill(n, signal.SIGKILL)
    for n in lc.nodes:
        lc.start_node(n)


def test_every_member_keeps_the_cluster_id_across_restarts_and_compaction() -> None:
    with LocalCluster(3, tick_ms=20, extra_args=["--snapshot-threshold", str(THRESHOLD)]) as lc:
        ready(lc)
        wait_until(lc, lambda: len(_ids(lc)) == 1 and None not in _ids(lc), 15,
                   "every member to apply the first leader's no-op")
        (cid,) = _ids(lc)
        assert isinstance(cid, str) and len(bytes.fromhex(cid)) == 16, cid
        _each_alone_knows(lc, cid)

        leader = ready(lc)
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(4 * THRESHOLD):
                c.put(f"k/{i}", i)
        for n in lc.nodes:
            wait_caught_up(lc, n, leader)
        wait_until(lc, lambda: all(s is not None and s["snapshot_index"] > THRESHOLD
                                   for s in lc.statuses().values()), 20,
                   "every member to compact its log past the first no-op")
        assert _ids(lc) == {cid}, diag(lc, f"ids after writes: {_ids(lc)}")
        _each_alone_knows(lc, cid)

        # A new leader carries the same id, not a new one.
        old = ready(lc)
        lc.kill(old, signal.SIGKILL)
        new = lc.leader(timeout=30, among=[n for n in lc.nodes if n != old])
        with BlockingClient([lc.nodes[new].addr], timeout=30) as c:
            c.put("after", 1)
        lc.start_node(old)
        ready(lc)
        wait_until(lc, lambda: _ids(lc) == {cid}, 15, f"every member to hold {cid} still")


def test_a_cluster_from_before_ids_gets_one_once_every_member_runs_this_version(
        tmp_path: Path) -> None:
    """Data directories as a version before cluster ids left them (a leader's no-op with no
    id; written here through the store itself): the first leader on this version makes
    none in its no-op (an id may hide in an old snapshot, raft/core.py `_noop`), then names
    the cluster once every other member has dialled it saying it keeps ids."""
    lc = LocalCluster(3, tick_ms=20, data_dir=tmp_path)
    founding = ConfChange(ConfOp.BOOTSTRAP, "", "", tuple(sorted(
        (n, nd.addr) for n, nd in lc.nodes.items()))).encode()
    for n, nd in lc.nodes.items():
        with Storage(nd.data_dir, cluster="distsync", node=n) as st:
            st.save(HardState(2, "n1", 4), [
                *(Entry(i, 1, EntryType.CONF, founding) for i in (1, 2, 3)),
                Entry(4, 2, EntryType.NOOP, b"")], None)
    with lc:
        leader = ready(lc)
        wait_until(lc, lambda: len(_ids(lc)) == 1 and None not in _ids(lc), 15,
                   "the members to agree on the id the leader gave the cluster")
        (cid,) = _ids(lc)
        with BlockingClient(lc.addrs, timeout=30) as c:
            c.put("k", 1)
        for n in lc.nodes:
            wait_caught_up(lc, n, leader)
        _each_alone_knows(lc, cid)
        ready(lc)
        assert _ids(lc) == {cid}, diag(lc, f"ids after restarts: {_ids(lc)}")
