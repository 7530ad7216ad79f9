"""A cluster's id (raft/core.py, `_noop`): made by its first leader, carried by every later
leader's no-op, known to each member from its own disk once committed there. The transport
compares ids at every handshake, so a member that forgot the id, or a leader that made a new
one, would let another cluster's directory in or shut its own members out."""

from __future__ import annotations

from raftsim import Cluster

from distsync.raft.conf import ConfChange, ConfOp
from distsync.raft.core import Config, Raft
from distsync.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    PersistedState,
    Role,
)

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


def _one_member(entries_past_founding: list[Entry], term: int) -> Raft:
    founding = ConfChange(ConfOp.BOOTSTRAP, "", "", (("n1", "a:1"),)).encode()
    ents = [Entry(1, 1, EntryType.CONF, founding), *entries_past_founding]
    r = Raft("n1", PersistedState(HardState(term, "n1", len(ents)), None, ents), Config())
    r.advance(r.ready())  # applied: a node leads only with its membership applied
    r.campaign()
    assert r.role == Role.LEADER
    return r


def test_a_leader_of_a_cluster_from_before_cluster_ids_makes_none() -> None:
    """Its log holds entries past the founding ones but no id: one may have been committed
    and then compacted into a snapshot by a node that predates ids (a rolling upgrade), so
    a new one could be a second. It carries none, and the cluster keeps working without."""
    r = _one_member([Entry(2, 2, EntryType.NOOP, b""), Entry(3, 2, EntryType.NORMAL, b"x")], 2)
    assert r.log.entries[-1].type == EntryType.NOOP and r.log.entries[-1].data == b""
    assert r.cluster_id == b""


def test_the_first_leader_of_a_new_cluster_makes_one() -> None:
    r = _one_member([], 1)
    assert r.log.entries[-1].type == EntryType.NOOP and len(r.log.entries[-1].data) == 16


def _old_cluster_leader() -> Raft:
    """n1 leading n1 and n2, on a log from before cluster ids (entries past the founding
    ones, no id anywhere)."""
    founding = ConfChange(ConfOp.BOOTSTRAP, "", "", (("n1", "a:1"), ("n2", "a:2"))).encode()
    ents = [Entry(1, 1, EntryType.CONF, founding), Entry(2, 1, EntryType.CONF, founding),
            Entry(3, 2, EntryType.NOOP, b""), Entry(4, 2, EntryType.NORMAL, b"x")]
    r = Raft("n1", PersistedState(HardState(2, "n1", 4), None, ents), Config())
    r.advance(r.ready())
    r.campaign()
    for kind in (MsgType.PRE_VOTE_RESP, MsgType.VOTE_RESP):
        want = r.term + 1 if kind == MsgType.PRE_VOTE_RESP else r.term
        r.step(Message(kind, "n2", "n1", want))
    assert r.role == Role.LEADER
    assert r.log.entries[-1].data == b""  # its no-op: no id to carry, none made
    return r


def _named(r: Raft) -> bytes | None:
    for _ in range(3):
        r.tick()
    named = [e.data for e in r.log.entries if e.type == EntryType.NOOP and e.data]
    return named[0] if named else None


def test_a_cluster_from_before_ids_is_named_once_every_voter_runs_a_version_with_them() -> None:
    r = _old_cluster_leader()
    assert _named(r) is None  # n2 has not said it keeps ids: it may be of the old version
    r.note_peer_id("n2", b"")
    cid = _named(r)
    assert cid is not None and len(cid) == 16
    assert _named(r) == cid and sum(1 for e in r.log.entries if e.data == cid) == 1


def test_no_name_while_a_voter_holds_an_id_or_stops_saying_it_keeps_them() -> None:
    r = _old_cluster_leader()
    r.note_peer_id("n2", bytes(16))  # an id this leader lost (downgraded and upgraded?)
    assert _named(r) is None
    r.note_peer_id("n2", b"")
    r.note_peer_id("n2", None)  # dialled again, running the old version
    assert _named(r) is None
