"""Damage a stopped node's data directory the way disks and operators do, on the real files
of the store's format. One function per fault kind, so that only this module changes when
the format does. `apply` picks the format from what the directory holds: segment files
(`*.seg`, issue 17's log: storage/wal.py) or a SQLite database (`raft.db`).

Segment files: each starts with two head slots (storage/mark.py: the hard state and the
durable mark) and then CRC-chained records, one entry each (storage/records.py), in
preallocated space; a lost tail is zeros where records were.

SQLite: storage/sqlite_store.py's ``raft.db`` in WAL mode (its newest
transactions are frames in ``raft.db-wal`` until a checkpoint copies them into the
database), a ``kv`` table holding the hard state, and ``snap-<term>-<index>.bin`` snapshot
files. A node stopped with SIGKILL leaves its recent saves in the WAL, which is where a lost
tail, a torn write or a flipped bit bites.

WAL layout (https://www.sqlite.org/fileformat.html#the_write_ahead_log): a 32-byte header
(page size at bytes 8-11, salts at 16-23), then frames of a 24-byte header and one page.
A frame whose header bytes 4-7 are non-zero ends a transaction (a commit frame): one
``Storage.save`` is one transaction, so "N records" below counts saves.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from pathlib import Path

DB, WAL, SEG = "raft.db", "raft.db-wal", ".seg"
_WAL_HEADER, _FRAME_HEADER = 32, 24

FAULTS = ("torn_tail", "cut_tail", "flip_bit", "zero_page", "lost_snapshot",
          "lost_hard_state", "empty_dir")


class NothingToDamage(RuntimeError):
    """The data directory does not hold what this fault needs (e.g. no WAL frames: the
    node was stopped cleanly, so SQLite checkpointed and removed its WAL)."""


def _frames(d: Path) -> tuple[int, list[tuple[int, bool]]]:
    """(frame size, [(offset, is_commit)]) of the WAL frames of the current salt."""
    wal = d / WAL
    if not wal.exists():
        raise NothingToDamage(f"{wal} does not exist (stop the node with SIGKILL)")
    data = wal.read_bytes()
    if len(data) < _WAL_HEADER:
        raise NothingToDamage(f"{wal} has no header")
    page = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    size = _FRAME_HEADER + page
    out = []
    off = _WAL_HEADER
    while off + size <= len(data) and data[off + 8:off + 16] == salt:
        commit = struct.unpack(">I", data[off + 4:off + 8])[0] != 0
        out.append((off, commit))
        off += size
    if not out:
        raise NothingToDamage(f"{wal} holds no frames")
    return size, out


def _commit_ends(d: Path) -> tuple[int, list[int]]:
    size, frames = _frames(d)
    return size, [off + size for off, commit in frames if commit]


def _truncate(path: Path, length: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(length)
        f.flush()
        os.fsync(f.fileno())


def _db_only(d: Path) -> bool:
    """A cleanly closed SQLite store: no WAL, everything in the database file."""
    return (d / DB).exists() and not (d / WAL).exists()


def _db_page(d: Path, which: str) -> tuple[int, int]:
    size = (d / DB).stat().st_size
    page = struct.unpack(">H", (d / DB).read_bytes()[16:18])[0] or 65536
    n = size // page
    if n < 3:
        raise NothingToDamage(f"{d / DB} has fewer than three pages")
    return (n - 1 if which == "last" else n // 2) * page, page


def cut_tail(d: Path, records: int = 3) -> str:
    """The last `records` fsynced saves are gone (a truncated file; not a restored backup,
    whose heads are as old as its records: that is caught by start chains, starts.py)."""
    if _db_only(d):
        off, page = _db_page(d, "last")
        _truncate(d / DB, off)
        return f"cut the last page off {DB}"
    _, ends = _commit_ends(d)
    if len(ends) <= records:
        raise NothingToDamage(f"only {len(ends)} saves in the WAL, cannot cut {records}")
    _truncate(d / WAL, ends[-records - 1])
    return f"cut the last {records} of {len(ends)} saves off {WAL}"


def torn_tail(d: Path) -> str:
    """The last save reached the disk only in part (power lost in the middle of it)."""
    if _db_only(d):
        off, page = _db_page(d, "last")
        _truncate(d / DB, off + page // 2)
        return f"tore the last page of {DB}"
    size, ends = _commit_ends(d)
    if len(ends) < 2:
        raise NothingToDamage("fewer than two saves in the WAL")
    cut = ends[-1] - size // 2
    _truncate(d / WAL, cut)
    return f"tore the last save of {WAL} at byte {cut}"


def _middle_frame(d: Path) -> tuple[int, int]:
    """(offset, size) of a WAL frame in the middle, or of a middle database page given as a
    frame whose header is empty (the same code then damages its page)."""
    if _db_only(d):
        off, page = _db_page(d, "middle")
        return off - _FRAME_HEADER, page + _FRAME_HEADER
    size, frames = _frames(d)
    if len(frames) < 3:
        raise NothingToDamage("fewer than three frames in the WAL")
    off, _ = frames[len(frames) // 2]
    return off, size


def flip_bit(d: Path) -> str:
    """One bit flips in a record in the middle of the log."""
    off, size = _middle_frame(d)
    pos = off + _FRAME_HEADER + (size - _FRAME_HEADER) // 2
    with open(d / (DB if _db_only(d) else WAL), "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x10]))
        f.flush()
        os.fsync(f.fileno())
    return f"flipped a bit at byte {pos} of {DB if _db_only(d) else WAL}"


def zero_page(d: Path) -> str:
    """A page in the middle of the log reads back as zeros (a lost write, a bad sector)."""
    off, size = _middle_frame(d)
    with open(d / (DB if _db_only(d) else WAL), "r+b") as f:
        f.seek(off + _FRAME_HEADER)
        f.write(bytes(size - _FRAME_HEADER))
        f.flush()
        os.fsync(f.fileno())
    return f"zeroed the page at byte {off + _FRAME_HEADER} of {DB if _db_only(d) else WAL}"


def lost_snapshot(d: Path) -> str:
    snaps = sorted(p for p in d.iterdir() if p.name.startswith("snap-"))
    if not snaps:
        raise NothingToDamage(f"{d} holds no snapshot file")
    for p in snaps:
        p.unlink()
    return f"deleted {', '.join(p.name for p in snaps)}"


def lost_hard_state(d: Path) -> str:
    """The record of the term and vote is gone (the rest of the database is intact)."""
    conn = sqlite3.connect(d / DB, isolation_level=None)
    try:
        n = conn.execute("DELETE FROM kv WHERE k='hard_state'").rowcount
    finally:
        conn.close()
    if not n:
        raise NothingToDamage("no hard state stored")
    return "deleted the hard state record"


def empty_dir(d: Path) -> str:
    """A replaced disk: the data directory is empty."""
    shutil.rmtree(d)
    d.mkdir()
    return f"emptied {d}"


# -- segment files (storage/wal.py) ------------------------------------------------------

def _segments(d: Path) -> list[Path]:
    segs = sorted(d.glob(f"*{SEG}"))
    if not segs:
        raise NothingToDamage(f"{d} holds no segment files")
    return segs


def _records(seg: Path) -> list[tuple[int, int]]:
    """(offset, length) of each intact record in `seg`."""
    from ..storage import mark, records  # the segment format's own reader

    raw = seg.read_bytes()
    head = mark.best(raw)
    if head is None:
        raise NothingToDamage(f"{seg} has no valid head")
    sc = records.scan(raw, mark.DATA_START, head.first_index, head.prev_crc)
    out = []
    for i, off in enumerate(sc.offsets):
        end = sc.offsets[i + 1] if i + 1 < len(sc.offsets) else sc.end
        out.append((off, end - off))
    if not out:
        raise NothingToDamage(f"{seg} holds no records")
    return out


def _zero(path: Path, start: int, end: int) -> None:
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(end - start))
        f.flush()
        os.fsync(f.fileno())


def _seg_cut_tail(d: Path, n: int) -> str:
    seg = _segments(d)[-1]
    recs = _records(seg)
    if len(recs) <= n:
        raise NothingToDamage(f"only {len(recs)} records in {seg.name}, cannot cut {n}")
    start = recs[-n][0]
    end = recs[-1][0] + recs[-1][1]
    _zero(seg, start, end)
    return f"zeroed the last {n} of {len(recs)} records of {seg.name}"


def _seg_torn_tail(d: Path) -> str:
    seg = _segments(d)[-1]
    off, length = _records(seg)[-1]
    _zero(seg, off + length // 2, off + length)
    return f"tore the last record of {seg.name} at byte {off + length // 2}"


def _seg_flip_bit(d: Path) -> str:
    seg = _segments(d)[-1]
    recs = _records(seg)
    if len(recs) < 3:
        raise NothingToDamage(f"fewer than three records in {seg.name}")
    off, length = recs[len(recs) // 2]
    pos = off + length - 1  # the record's last data byte
    with open(seg, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x10]))
        f.flush()
        os.fsync(f.fileno())
    return f"flipped a bit at byte {pos} of {seg.name}"


def _seg_zero_page(d: Path) -> str:
    segs = _segments(d)
    if len(segs) >= 3:
        mid = segs[len(segs) // 2]
        _zero(mid, 0, mid.stat().st_size)
        return f"zeroed segment {mid.name}"
    seg = segs[-1]
    recs = _records(seg)
    if len(recs) < 3:
        raise NothingToDamage(f"fewer than three records in {seg.name}")
    off, _ = recs[len(recs) // 2]
    page = off - off % 4096
    _zero(seg, max(page, off), page + 4096)
    return f"zeroed the page at byte {page} of {seg.name}"


def _seg_lost_hard_state(d: Path) -> str:
    from ..storage import mark

    seg = _segments(d)[-1]
    _zero(seg, 0, mark.DATA_START)
    return f"zeroed both head slots of {seg.name}"


# One injector per fault for each on-disk format: the segment log (issue 17's store) and
# SQLite (the store before it, still read to convert old data directories); losing the
# snapshot file or the whole directory is the same act for both.
_SEGMENT_FAULTS = {
    "torn_tail": _seg_torn_tail, "cut_tail": lambda d: _seg_cut_tail(d, 3),
    "flip_bit": _seg_flip_bit, "zero_page": _seg_zero_page,
    "lost_hard_state": _seg_lost_hard_state,
}
_SQLITE_FAULTS = {
    "torn_tail": torn_tail, "cut_tail": cut_tail, "flip_bit": flip_bit, "zero_page": zero_page,
    "lost_snapshot": lost_snapshot, "lost_hard_state": lost_hard_state, "empty_dir": empty_dir,
}


def apply(kind: str, d: str | os.PathLike) -> str:
    """Apply fault `kind` (one of FAULTS) to the stopped node's data directory `d`."""
    path = Path(d)
    if kind in _SEGMENT_FAULTS and any(path.glob(f"*{SEG}")):
        return _SEGMENT_FAULTS[kind](path)
    if kind in _SQLITE_FAULTS:
        return _SQLITE_FAULTS[kind](path)
    raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
