"""The real store keeps a recovery under way (HardState.recovering, raft/recovery.py): a node
restarted in the middle of its repair must come back still refusing to vote. The fault that
started it is reported by the store only once for a lost hard state or an empty data dir (after
the first save there is nothing left to detect), so the marker is all that remembers it."""

from __future__ import annotations

from pathlib import Path

from distsync.raft.types import Entry, HardState
from distsync.storage import Storage


def test_the_store_keeps_the_recovery_marker_and_clears_it(tmp_path) -> None:
    st = Storage(tmp_path)
    st.save(HardState(3, None, 0, recovering="lost_hard_state"), [Entry(1, 3)])
    st.close()
    st = Storage(tmp_path)
    assert st.load().hard_state.recovering == "lost_hard_state"
    st.save(HardState(3, "n1", 1), [])
    st.close()
    st = Storage(tmp_path)
    try:
        assert st.load().hard_state == HardState(3, "n1", 1)
    finally:
        st.close()


def test_the_store_keeps_who_finished_asking_and_tells_none_from_empty(tmp_path) -> None:
    """HardState.finished (raft/core.py, `_on_probe`): a peer's "I finished asking whether
    the cluster is new" is answered only once it is on disk, and None (a directory founded
    before these records) must not come back as () (one that keeps them and heard none):
    the first goes by start chains, the second by its records."""
    for finished in (None, (), ("n2",), ("n1", "n3")):
        # (A later save keeps it.)
        _saved_twice(tmp_path / repr(finished), HardState(1, None, 3, finished=finished),
                     HardState(2, "n1", 3, finished=finished))


def _saved_twice(d: Path, first: HardState, then: HardState) -> None:
    """Save `first` with an entry, read it back from a reopened store, save `then`, and read
    that back too."""
    for hs, entries in ((first, [Entry(1, 1)]), (then, [])):
        st = Storage(d)
        try:
            if hs is then:
                assert st.load().hard_state == first
            st.save(hs, entries)
        finally:
            st.close()
    st = Storage(d)
    try:
        assert st.load().hard_state == then
    finally:
        st.close()


def test_a_head_without_the_record_is_read_as_before_and_one_with_more_fields_too() -> None:
    """A directory that keeps no records writes heads in the format before them, so the
    version it ran before still reads them; and a head written by a later version, with
    fields after ours, is read for the fields we know instead of taken for damage."""
    import zlib

    import msgpack

    from distsync.storage import mark

    plain = mark.Head(seq=4, term=2, vote="n1", commit=9)
    raw = mark.encode(plain)
    body = msgpack.unpackb(raw[mark._HDR.size:], raw=False)
    # The version field and the fields before `finished`: no `finished`, no `heard`.
    assert len(body) == 1 + mark.Head._fields.index("finished")
    assert mark.decode(raw) == plain
    kept = plain._replace(finished=["n2"])
    assert mark.decode(mark.encode(kept)) == kept
    kept_body = msgpack.unpackb(mark.encode(kept)[mark._HDR.size:], raw=False)
    assert len(kept_body) == 2 + mark.Head._fields.index("finished")  # no `heard`
    asking = plain._replace(finished=[], heard=["n3"], heard_term=2)
    assert mark.decode(mark.encode(asking)) == asking
    asking_old = plain._replace(heard=["n3"], heard_term=2)  # founded before the records
    assert mark.decode(mark.encode(asking_old)) == asking_old
    later = msgpack.packb([*msgpack.unpackb(mark.encode(asking)[mark._HDR.size:], raw=False),
                           "a field of a later version"], use_bin_type=True)
    assert mark.decode(mark._HDR.pack(zlib.crc32(later), len(later)) + later) == asking


def test_the_store_keeps_the_answers_a_member_still_asking_heard(tmp_path) -> None:
    """HardState.heard (raft/core.py, `_heard`): a member still asking whether the cluster is
    new keeps the answers it heard across a restart (stop 37's F2), and drops them once it
    decided; the hard state of a node that heard none keeps the older format."""
    for finished in (None, ()):
        _saved_twice(tmp_path / repr(finished),
                     HardState(1, None, 3, "empty_data_dir", finished, ("n1", "n3"), 4),
                     HardState(4, "n2", 3, finished=finished))


def test_the_hard_state_codec_leaves_out_what_is_at_its_default() -> None:
    """The SQLite store's hard-state row: a healthy node's keeps the three fields every
    version reads; an older row (three or five fields) reads as before; the answers heard
    come back."""
    import msgpack

    from distsync.raft.codec import decode_hard_state, encode_hard_state

    assert msgpack.unpackb(encode_hard_state(HardState(3, "n1", 7))) == [3, "n1", 7]
    assert decode_hard_state(msgpack.packb([3, "n1", 7])) == HardState(3, "n1", 7)
    assert decode_hard_state(msgpack.packb([3, None, 7, "", ["n2"]])) == HardState(
        3, None, 7, finished=("n2",))
    for hs in (HardState(1, None, 3, "empty_data_dir", None, ("n2",), 1),
               HardState(1, None, 3, "empty_data_dir", (), ("n2", "n3"), 5),
               HardState(2, None, 3, finished=())):
        assert decode_hard_state(encode_hard_state(hs)) == hs
