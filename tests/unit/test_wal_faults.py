"""Storage faults on real files: each damage a disk or an operator can do to a data
directory, done for real to a store's files, and what load() then says.

"The disk at the moment of a crash" is a copy of the directory taken while the store is
still open (a process crash keeps exactly what the kernel has); the confirm thread is off
in those tests so that the durable mark is where the last save left it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distsync.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from distsync.storage import Storage
from distsync.storage.mark import DATA_START
from distsync.storage.records import HEADER_SIZE

SEG = 64 << 10


def ents(first: int, last: int, term: int = 1, size: int = 100) -> list[Entry]:
    return [Entry(i, term, data=bytes([i % 251]) * size) for i in range(first, last + 1)]


def write_log(d: Path, last: int = 40, per_save: int = 1) -> Storage:
    s = Storage(d, segment_bytes=SEG, confirm=False)
    s.save(HardState(2, "n1", 0), [])
    for i in range(1, last + 1, per_save):
        s.save(None, ents(i, min(last, i + per_save - 1), term=2))
    return s


def segs(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def record_offset(index: int, size: int = 100) -> int:
    """Where entry `index` starts in the first segment (all entries of `size` bytes)."""
    return DATA_START + (index - 1) * (HEADER_SIZE + size)


def load(d: Path):
    with Storage(d, segment_bytes=SEG) as s:
        return s.load()


def test_a_clean_log_has_no_fault(tmp_path: Path) -> None:
    write_log(tmp_path).close()
    st = load(tmp_path)
    assert st.fault is None and [e.index for e in st.entries] == list(range(1, 41))
    assert st.hard_state == HardState(2, "n1", 0)


def test_torn_last_write_after_a_crash_is_dropped_silently(tmp_path: Path) -> None:
    s = write_log(tmp_path / "live")
    crash = tmp_path / "crash"
    shutil.copytree(tmp_path / "live", crash)  # the disk image at the crash
    s.close()
    seg = segs(crash)[0]
    # The last save (entry 40) was in flight: half of its record reached the disk.
    raw = bytearray(seg.read_bytes())
    cut = record_offset(40) + 60
    raw[cut:record_offset(41) + HEADER_SIZE] = bytes(record_offset(41) + HEADER_SIZE - cut)
    seg.write_bytes(bytes(raw))
    st = load(crash)
    assert st.fault is None
    assert [e.index for e in st.entries] == list(range(1, 40))
    # And the store writes on from there.
    with Storage(crash, segment_bytes=SEG) as s:
        s.save(None, ents(40, 41, term=3))
    st = load(crash)
    assert st.fault is None and st.entries[-2:] == ents(40, 41, term=3)


@pytest.mark.parametrize("cut", [1, 4, 17])
def test_a_tail_cut_below_the_durable_mark_is_lost_tail(tmp_path: Path, cut: int) -> None:
    write_log(tmp_path).close()  # close() confirms: everything up to 40 is durable
    seg = segs(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    start = record_offset(41 - cut)
    raw[start:] = bytes(len(raw) - start)  # the last `cut` records are gone
    seg.write_bytes(bytes(raw))
    st = load(tmp_path)
    assert st.fault is not None
    assert (st.fault.kind, st.fault.durable_index, st.fault.first_bad_index) == (
        "lost_tail", 40, 41 - cut)
    assert [e.index for e in st.entries] == list(range(1, 41 - cut))


def test_a_truncated_segment_file_is_lost_tail(tmp_path: Path) -> None:
    write_log(tmp_path).close()
    seg = segs(tmp_path)[0]
    with seg.open("r+b") as f:
        f.truncate(record_offset(37) + 10)
    st = load(tmp_path)
    assert st.fault is not None and (st.fault.kind, st.fault.first_bad_index) == ("lost_tail", 37)


def test_the_idle_confirm_makes_the_last_batch_durable(tmp_path: Path) -> None:
    s = Storage(tmp_path / "live", segment_bytes=SEG)  # confirm thread on
    s.save(HardState(2, "n1", 0), ents(1, 10, term=2))
    s.save(None, ents(11, 12, term=2))
    # The confirm lands within milliseconds of the last save; until then a crash image
    # would still treat 11..12 as possibly torn.
    for _ in range(200):
        shutil.copytree(tmp_path / "live", tmp_path / "img", dirs_exist_ok=True)
        with Storage(tmp_path / "img", segment_bytes=SEG, confirm=False) as probe:
            probe_mark = probe._st.durable
        if probe_mark == 12:
            break
        import time
        time.sleep(0.005)
    assert probe_mark == 12
    s.close()


def test_a_flipped_bit_mid_log_is_corrupt_entry(tmp_path: Path) -> None:
    write_log(tmp_path).close()
    seg = segs(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[record_offset(23) + HEADER_SIZE + 50] ^= 0x04
    seg.write_bytes(bytes(raw))
    st = load(tmp_path)
    assert st.fault is not None
    assert (st.fault.kind, st.fault.durable_index, st.fault.first_bad_index) == (
        "corrupt_entry", 40, 23)
    assert [e.index for e in st.entries] == list(range(1, 23))  # nothing after the bad one


def test_a_fault_is_seen_again_after_a_restart_before_repair(tmp_path: Path) -> None:
    write_log(tmp_path).close()
    seg = segs(tmp_path)[0]
    with seg.open("r+b") as f:
        f.truncate(record_offset(31))
    with Storage(tmp_path, segment_bytes=SEG) as s:
        assert s.load().fault is not None
        s.save(HardState(3, None, 0), [])  # a vote cast meanwhile must not hide the loss
    st = load(tmp_path)
    assert st.fault is not None and (st.fault.kind, st.fault.durable_index) == ("lost_tail", 40)
    # Repaired: the missing entries written again.
    with Storage(tmp_path, segment_bytes=SEG) as s:
        s.save(None, ents(31, 45, term=2))
    st = load(tmp_path)
    assert st.fault is None and st.entries[-1].index == 45


def several_segments(d: Path) -> Storage:
    s = Storage(d, segment_bytes=8 << 10, confirm=False)
    s.save(HardState(2, "n1", 0), [])
    for i in range(1, 121, 5):
        s.save(None, ents(i, i + 4, term=2))
    assert len(segs(d)) >= 3
    return s


def test_a_deleted_middle_segment_is_a_fault(tmp_path: Path) -> None:
    several_segments(tmp_path).close()
    segs(tmp_path)[1].unlink()
    with Storage(tmp_path, segment_bytes=8 << 10) as s:
        st = s.load()
    assert st.fault is not None and st.fault.kind == "corrupt_entry"
    assert st.entries == [] and st.fault.durable_index == 120


def test_a_zeroed_middle_segment_is_a_fault(tmp_path: Path) -> None:
    several_segments(tmp_path).close()
    mid = segs(tmp_path)[1]
    mid.write_bytes(bytes(mid.stat().st_size))
    with Storage(tmp_path, segment_bytes=8 << 10) as s:
        st = s.load()
    assert st.fault is not None and st.fault.kind == "corrupt_entry"


@pytest.mark.parametrize("how", ["delete", "zero"])
def test_a_lost_newest_segment_is_lost_hard_state(tmp_path: Path, how: str) -> None:
    several_segments(tmp_path).close()
    newest = segs(tmp_path)[-1]
    if how == "delete":
        newest.unlink()
    else:
        newest.write_bytes(bytes(newest.stat().st_size))
    with Storage(tmp_path, segment_bytes=8 << 10) as s:
        st = s.load()
    assert st.fault is not None and st.fault.kind == "lost_hard_state", st.fault


def test_zeroed_heads_are_lost_hard_state(tmp_path: Path) -> None:
    write_log(tmp_path).close()
    seg = segs(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[:DATA_START] = bytes(DATA_START)
    seg.write_bytes(bytes(raw))
    st = load(tmp_path)
    assert st.fault is not None and st.fault.kind == "lost_hard_state"


def test_a_damaged_snapshot_file_is_lost_snapshot(tmp_path: Path) -> None:
    s = write_log(tmp_path)
    conf = ConfState(frozenset({"n1"}))
    s.compact(Snapshot(SnapshotMeta(20, 2, conf), b"state" * 100))
    s.close()
    snap = next(tmp_path.glob("snap-*.bin"))
    raw = bytearray(snap.read_bytes())
    raw[-10] ^= 0x01
    snap.write_bytes(bytes(raw))
    st = load(tmp_path)
    assert st.fault is not None and (st.fault.kind, st.fault.first_bad_index) == (
        "lost_snapshot", 1)
    assert st.snapshot is None and st.entries == []
