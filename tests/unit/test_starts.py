"""Start chains (node/distsync/starts.py): each start of a member continues the one before
it, its peers remember the latest, and a data directory restored from an older copy of
itself cannot continue what they saw. Stored in real segment heads (storage/wal.py)."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import msgpack

from distsync.raft.types import Entry, HardState
from distsync.starts import HISTORY, PeerStarts, Seen, breaks, judge, new_start, parse
from distsync.storage import Storage, mark


def test_a_start_continues_the_one_before_it() -> None:
    first = new_start(None)
    assert first.boot == 1 and len(first.ids) == 1 and len(first.id) == 8
    second = new_start(first)
    assert (second.boot, second.ids[1:]) == (2, first.ids) and second.id != first.id
    s = second
    for _ in range(40):
        s = new_start(s)
    assert s.boot == 42 and len(s.ids) == HISTORY  # the latest HISTORY starts' ids


def test_the_header_round_trips_and_malformed_ones_are_refused() -> None:
    s = new_start(new_start(None))
    assert parse(s.header(True)) == (s, True)
    assert parse(s.header(False)) == (s, False)
    ok = "0011223344556677"
    for bad in ("", "1.0", f"x.0.{ok}", f"0.0.{ok}", f"1.2.{ok}", f"1.0.{ok}.{ok}",
                f"2.0.{ok}.zz", f"1.0.{ok[:-2]}", f"{HISTORY + 5}.0." + ".".join([ok] * 17)):
        assert parse(bad) is None, bad


def test_what_a_peer_takes_and_what_it_refuses() -> None:
    a = new_start(None)
    b = new_start(a)
    c = new_start(b)
    assert judge(None, b) is None  # never seen: nothing to check against
    assert judge((a.boot, a.id), b) is None  # the next start
    assert judge((b.boot, b.id), b) is None  # the same start dialling again
    assert judge((a.boot, a.id), c) is None  # starts it missed, still in the history
    # from a copy taken before start b: the next start repeats b's number under another id
    fork = new_start(a)
    assert "does not continue start 2" in (judge((b.boot, b.id), fork) or "")
    assert "older than start 3" in (judge((c.boot, c.id), fork) or "")
    # started from the copy twice more where the peer could not see it: still not b's chain
    burnt = new_start(new_start(fork))
    assert burnt.boot == 4 and "does not continue start 2" in (judge((b.boot, b.id), burnt)
                                                             or "")
    # more starts since than the history holds: it cannot check, and takes it
    far = b
    for _ in range(HISTORY):
        far = new_start(far)
    assert judge((a.boot, a.id), far) is None
    # a chain that begins now (an emptied directory, repaired; a member removed and added
    # again under its name) is not held against the chain of the directory it replaced
    assert judge((c.boot, c.id), new_start(None)) is None
    # ... though it is not the chain the peer saw: the directory behind it replaced one in
    # use, which PeerStarts remembers (below)
    assert "a new chain of starts" in (breaks((c.boot, c.id), new_start(None)) or "")
    assert "a new chain of starts" in (breaks((a.boot, a.id), new_start(None)) or "")
    assert breaks((a.boot, a.id), a) is None and breaks(None, a) is None
    assert breaks((a.boot, a.id), c) is None and breaks((b.boot, b.id), fork) is not None


def test_starts_are_durable_and_a_restored_copy_is_caught(tmp_path: Path) -> None:
    me, peer = tmp_path / "me", tmp_path / "peer"
    s = Storage(me, cluster="c", node="n1")
    s.save(HardState(1, "n1", 0), [Entry(1, 1, data=b"x")])
    first = s.begin_start()
    s.close()
    shutil.copytree(me, tmp_path / "backup")  # a copy after the first start
    s = Storage(me, cluster="c", node="n1")
    second = s.begin_start()
    assert (second.boot, second.ids[1:]) == (first.boot + 1, first.ids)
    s.close()

    p = Storage(peer, cluster="c", node="n2")
    chain = PeerStarts("n2", p, lambda: False, lambda peer, why: None)
    assert chain.check("n1", second.header(False)) is None
    p.close()
    p = Storage(peer, cluster="c", node="n2")  # what it saw survives its own restart
    assert p.peer_start("n1") == Seen(second.boot, second.id)
    assert p.begin_start().boot == chain.start.boot + 1

    shutil.rmtree(me)
    shutil.copytree(tmp_path / "backup", me)  # restored in place
    s = Storage(me, cluster="c", node="n1")
    again = s.begin_start()
    s.close()
    chain = PeerStarts("n2", p, lambda: False, lambda peer, why: None)
    assert "older than that start" in (chain.check("n1", again.header(False)) or "")
    assert p.peer_start("n1") == Seen(second.boot, second.id)  # a refused start is not taken
    # once it says it is recovering it is taken, and its new chain is the one to follow
    assert chain.check("n1", again.header(True)) is None
    # (remembered as a chain that replaced the directory it saw: see the test below)
    assert p.peer_start("n1") == Seen(again.boot, again.id, replaced=True)
    assert chain.check("n1", None) is None  # a peer from before start chains
    assert chain.check("n1", "junk") == "malformed X-Distsync-Start header"
    p.close()


def test_a_head_from_before_start_chains_reads_as_never_started() -> None:
    old = mark.Head(term=3, vote="n2", cluster="c", node="n1")
    # the same head as a node without start chains wrote it: the version and the fields up
    # to `recovering`, the last one it knew
    known = 1 + mark.Head._fields.index("recovering") + 1
    fields = msgpack.unpackb(mark.encode(old)[8:], raw=False)[:known]
    raw = msgpack.packb(fields, use_bin_type=True)
    h = mark.decode(struct.pack("<II", zlib.crc32(raw), len(raw)) + raw)
    assert h is not None and (h.term, h.vote, h.node) == (3, "n2", "n1")
    assert (h.boot, h.boot_ids, h.peer_starts) == (0, None, None)


def test_a_chain_that_replaced_a_used_directory_is_remembered_as_such(tmp_path: Path) -> None:
    """A founding member's empty directory cannot tell a new cluster from a replaced disk; a
    peer that saw a start of it on another chain can (raft/core.py then answers its probes
    "not new"). That knowledge outlives the peer's restarts and the member's later starts on
    the new chain, for as long as the peer remembers that chain."""
    told: list[str] = []
    p = Storage(tmp_path / "peer", cluster="c", node="n2")
    chain = PeerStarts("n2", p, lambda: False, lambda peer, why: None, told.append)
    first = new_start(None)
    assert chain.check("n1", first.header(True)) is None  # a new cluster: all are asking
    second = new_start(first)
    assert chain.check("n1", second.header(False)) is None  # a restart
    assert told == [] and p.peer_start("n1") == Seen(2, second.id)
    emptied = new_start(None)
    assert chain.check("n1", emptied.header(True)) is None  # taken, as recovering
    assert told == ["n1"]
    assert p.peer_start("n1") == Seen(1, emptied.id, replaced=True)
    p.close()
    p = Storage(tmp_path / "peer", cluster="c", node="n2")  # the peer restarts
    chain = PeerStarts("n2", p, lambda: False, lambda peer, why: None, told.append)
    later = new_start(emptied)  # the member restarted, still asking
    assert chain.check("n1", later.header(True)) is None
    assert told == ["n1", "n1"] and p.peer_start("n1") == Seen(2, later.id, replaced=True)
    # a member first seen on any chain is not known to have replaced anything
    assert chain.check("n3", new_start(None).header(True)) is None and told == ["n1", "n1"]
    p.close()


def test_a_refusal_is_believed_only_from_the_member_this_node_knew(tmp_path: Path) -> None:
    """A refused node recovers (no vote until repaired) only if the refusing peer's own
    start, sent with the refusal, continues the one of it this node saw. Otherwise the peer
    is not the member it knew (another cluster's directory under the same names, or a
    restored one), and believing it would let one such member put healthy ones into
    recovery until none could lead."""
    rolled: list[str] = []
    me = Storage(tmp_path / "me", cluster="c", node="n1")
    chain = PeerStarts("n1", me, lambda: False, lambda peer, why: rolled.append(peer))
    seen = new_start(new_start(None))
    assert chain.check("n2", seen.header(False)) is None
    chain.refused("n2", "you are older", new_start(seen).header(False))  # its next start
    chain.refused("n2", "you are older", None)  # a peer from before it sent its start
    assert rolled == ["n2", "n2"]
    stranger = new_start(new_start(new_start(None)))  # same name, another chain
    chain.refused("n2", "you are older", stranger.header(False))
    chain.refused("n2", "you are older", new_start(None).header(False))
    assert rolled == ["n2", "n2"]
    chain.refused("n3", "you are older", stranger.header(False))  # never seen: believed
    assert rolled == ["n2", "n2", "n3"]
    # what /v1/status shows: the refusal not believed, until n2 takes a stream of ours
    assert list(chain.status()["refused_by"]) == ["n2"]
    chain.connected("n2")
    assert chain.status() == {"refusing": {}, "refused_by": {}}
    # ... and the streams this node refuses, until it takes one from that peer again (this
    # node believed a refusal, so its records are suspect: a peer's first start seen since
    # is taken and recorded, and judged by from then on)
    assert chain.check("n2", seen.header(False)) is None
    assert "does not continue" in (chain.check("n2", stranger.header(False)) or "")
    assert "does not continue" in chain.status()["refusing"]["n2"]
    assert chain.check("n2", stranger.header(True)) is None  # taken, as recovering
    assert chain.status()["refusing"] == {}
    me.close()


def test_a_recovering_node_refuses_no_one(tmp_path: Path) -> None:
    """Stop 35's adversarial run (F2): a member restored from its backup was refused and
    recovered, but went on refusing a peer whose directory had been replaced and repaired
    since the backup: its own record of that peer was as old as the rest of the copy. The
    peer had taken the member's recovering start, so it believed the refusal, and the two
    in recovery at once left no leader with all three up. A node recovering from a storage
    fault takes every stream (its records may be what is out of date) and records what it
    sees, so they are current once it is repaired."""
    recovering = [True]
    p = Storage(tmp_path / "r", cluster="c", node="n2")
    chain = PeerStarts("n2", p, lambda: recovering[0], lambda peer, why: None)
    a = new_start(None)
    b = new_start(a)
    p.note_peer_start("n1", b)  # what the old copy remembers
    older = new_start(a)  # not b's chain
    assert chain.check("n1", older.header(False)) is None
    assert p.peer_start("n1")[:2] == (older.boot, older.id)
    recovering[0] = False  # repaired: its records are now current
    assert chain.check("n1", new_start(older).header(False)) is None
    assert "older than that start" in (chain.check("n1", new_start(a).header(False)) or "")
    p.close()


def test_a_believed_refusal_is_answered_as_recovering_until_that_peer_takes_a_stream(
        tmp_path: Path) -> None:
    """Stop 35's adversarial run (F3): a member refused as rolled back recovered, but a leader
    repaired it before its next dial to the refusing peer, which it then made as a healthy
    member: refused again, recovered again, four to six times over. It now dials that peer
    as recovering until the peer has taken a stream of it."""
    recovering = [False]
    rolled: list[str] = []
    me = Storage(tmp_path / "me", cluster="c", node="n1")
    chain = PeerStarts("n1", me, lambda: recovering[0], lambda peer, why: rolled.append(peer))
    assert chain.header("n2").split(".")[1] == "0"
    chain.refused("n2", "you are older", None)
    assert rolled == ["n2"]
    recovering[0] = True
    assert chain.header("n2").split(".")[1] == "1"
    recovering[0] = False  # repaired before the next dial
    assert chain.header("n2").split(".")[1] == "1" and chain.header("n3").split(".")[1] == "0"
    chain.connected("n2")
    assert chain.header("n2").split(".")[1] == "0"
    me.close()


def test_records_made_before_a_recovery_are_not_held_against_anyone_after_it(
        tmp_path: Path) -> None:
    """The re-run of stop 35's adversarial scenarios (F2): a restored member, recovering,
    refused no one, but once repaired it refused a peer with its record from the copy, older
    than that peer's chain, and the peer recovered for a moment. After any recovery in this
    run, a node's records of its peers may be stale: each peer's first start seen since is
    taken and recorded, and judged by from then on."""
    recovering = [True]
    p = Storage(tmp_path / "r", cluster="c", node="n2")
    chain = PeerStarts("n2", p, lambda: recovering[0], lambda peer, why: None)
    a = new_start(None)
    b = new_start(a)
    p.note_peer_start("n1", b)  # what the copy remembers of n1
    chain.header("n3")  # dialling at start, recovering
    recovering[0] = False  # repaired before n1 dialled
    newer = new_start(new_start(None))  # n1's chain since (replaced and started again)
    assert chain.check("n1", newer.header(False)) is None
    assert p.peer_start("n1")[:2] == (newer.boot, newer.id)
    # judged by the record made since
    assert "older than that start" in (chain.check("n1", new_start(new_start(None)).header(
        False)) or "")
    p.close()
    # a peer seen while healthy, before this node was refused as rolled back: seen again
    # after, it is taken too (the record it was judged by is the copy's)
    q = Storage(tmp_path / "q", cluster="c", node="n2")
    healthy = [False]
    other = PeerStarts("n2", q, lambda: healthy[0], lambda peer, why: None)
    q.note_peer_start("n3", b)
    assert other.check("n3", b.header(False)) is None
    other.refused("n1", "you are older", None)  # believed: this node recovers
    assert other.check("n3", new_start(new_start(None)).header(False)) is None
    q.close()
