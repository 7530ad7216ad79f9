"""A cluster's id (raft/core.py, `_noop`): made by its first leader, carried by every later
leader's no-op, known to each member from its own disk once committed there. The transport
compares ids at every handshake, so a member that forgot the id, or a leader that made a new
one, would let another cluster's directory in or shut its own members out."""

from __future__ import annotations

from raftsim import Cluster

from distsync.raft.core import Config
from distsync.raft.types import EntryType

IDS = ["n1", "n2", "n3"]


def _noops(c: Cluster, nid: str) -> list[bytes]:
    return [e.data for e in c.raft(nid).log.entries if e.type == EntryType.NOOP]


def test_the_first_leader_makes_the_id_and_every_later_leader_carries_it() -> None:
    c = Cluster(IDS, seed=3, config=Config())
    c.stabilize()
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    cid = c.raft("n1").cluster_id
    assert len(cid) == 16 and all(c.raft(n).cluster_id == cid for n in IDS)
    c.crash("n1")
    c.run(40)
    new = c.leader()
    assert new in ("n2", "n3"), c.format_trace()
    c.propose(new, b"b")
    c.stabilize()
    assert _noops(c, new) == [cid, cid]  # n1's no-op and the new leader's, with one id
    c.restart("n1")
    c.stabilize()
    assert all(c.raft(n).cluster_id == cid for n in IDS)


def test_each_member_knows_the_id_from_its_own_disk_after_a_restart() -> None:
    c = Cluster(IDS, seed=4, config=Config())
    c.stabilize()
    c.elect("n2")
    c.stabilize()
    cid = c.raft("n2").cluster_id
    assert cid
    for n in IDS:
        c.crash(n)
    for n in IDS:
        c.restart(n)
        assert c.raft(n).cluster_id == cid, n  # before any message: from its disk alone


def test_two_clusters_founded_alike_get_different_ids() -> None:
    a = Cluster(IDS, seed=5, config=Config())
    b = Cluster(IDS, seed=6, config=Config())
    for c in (a, b):
        c.stabilize()
        c.elect("n1")
        c.stabilize()
    assert a.raft("n1").term == b.raft("n1").term
    assert a.raft("n1").cluster_id != b.raft("n1").cluster_id
