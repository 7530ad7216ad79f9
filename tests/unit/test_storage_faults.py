"""The detection contract (raft/types.StorageFault, storage/faults.classify) as a pure
function: a torn last write after a crash is not a fault; losing what had been made durable
is, and says what was lost."""

from __future__ import annotations

import dataclasses

import pytest

from distsync.raft.types import PersistedState, StorageFault
from distsync.storage.faults import DurableMark, Found, classify

MARK = DurableMark(cluster="c", node="n1", term=3, vote="n2", durable_index=40,
                   snap_index=10, snap_term=2, snap_crc=0xABC)


def healthy(**kw: object) -> Found:
    base = dict(term=3, vote="n2", has_hard_state=True, snap_index=10, snap_term=2,
                snap_crc=0xABC, last_index=40)
    base.update(kw)
    return Found(**base)  # type: ignore[arg-type]


def test_fault_is_a_frozen_value_and_absent_by_default() -> None:
    f = StorageFault("lost_tail", 40, 37, "cut")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.kind = "corrupt_entry"  # type: ignore[misc]
    assert PersistedState().fault is None


def test_no_mark_means_nothing_can_be_told_apart() -> None:
    assert classify(None, Found()) is None
    assert classify(None, healthy(last_index=3, bad_index=2)) is None
    assert classify(DurableMark(), Found()) is None  # a mark of a never-used node


def test_intact_disk_and_torn_last_write_are_not_faults() -> None:
    assert classify(MARK, healthy()) is None
    # The write in flight at the crash (41..45) was never acknowledged: a bad record
    # past the durable index is a torn tail, discarded silently.
    assert classify(MARK, healthy(last_index=43, bad_index=44)) is None
    assert classify(MARK, healthy(last_index=45)) is None
    # A newer snapshot than the mark's: the crash came between the two writes.
    assert classify(MARK, healthy(snap_index=20, snap_term=3, snap_crc=1)) is None


def test_a_tail_cut_below_the_durable_index_is_lost_tail() -> None:
    f = classify(MARK, healthy(last_index=36))
    assert f is not None and (f.kind, f.durable_index, f.first_bad_index) == ("lost_tail", 40, 37)
    assert "36" in f.detail and "40" in f.detail


def test_a_bad_record_at_or_below_the_durable_index_is_corrupt_entry() -> None:
    f = classify(MARK, healthy(last_index=24, bad_index=25))
    assert f is not None and (f.kind, f.first_bad_index) == ("corrupt_entry", 25)
    f = classify(MARK, healthy(last_index=39, bad_index=40))
    assert f is not None and f.kind == "corrupt_entry"


def test_a_missing_or_different_snapshot_is_lost_snapshot() -> None:
    for found in (healthy(snapshot_lost=True, snap_index=0, snap_term=0, snap_crc=0),
                  healthy(snap_index=0, snap_term=0, snap_crc=0, last_index=0),
                  healthy(snap_crc=0xDEF)):
        f = classify(MARK, found)
        assert f is not None and (f.kind, f.first_bad_index) == ("lost_snapshot", 1), found


def test_an_older_or_missing_hard_state_is_lost_hard_state() -> None:
    for found in (healthy(term=2), healthy(vote="n3"), healthy(has_hard_state=False, term=0,
                                                                  vote=None)):
        f = classify(MARK, found)
        assert f is not None and (f.kind, f.first_bad_index) == ("lost_hard_state", 0), found
    # Lost together with entries: the kind needing more repair wins, the entries still show.
    f = classify(MARK, healthy(term=2, last_index=30))
    assert f is not None and (f.kind, f.first_bad_index) == ("lost_hard_state", 31)


def test_an_emptied_directory_with_its_mark_is_empty_after_use() -> None:
    f = classify(MARK, Found())
    assert f is not None and (f.kind, f.durable_index, f.first_bad_index) == (
        "empty_after_use", 40, 1)
