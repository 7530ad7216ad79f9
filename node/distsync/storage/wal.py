"""Durable Raft state in segmented, preallocated log files: one fdatasync per write batch.

Layout of a data directory::

    LOCK                      flock'ed by the one process that owns the directory
    0000000000000001.seg      log segments, preallocated (fallocate) to a fixed size
    0000000000000002.seg
    snap-<term>-<index>.bin   the current snapshot (snapfiles.py)

A segment is two head slots (mark.py: the hard state, the snapshot's index/term/CRC, the
durable mark, where the live log starts) followed by records (records.py: one entry each,
CRC-chained). A save writes its records at the tail of the newest segment and the next head
slot at its front, then calls fdatasync once: the space is preallocated, so the file's size
does not change and no metadata has to be journaled. Why not SQLite (the store before this
one): a SQLite commit cost about twice a bare fdatasync on this machine, and its recovery
silently cuts the log back at a damaged frame (benchmarks/storage_bench.py, README
"Storage").

What a crash can do, and what load() makes of it:

* The save in flight is lost or torn: its head slot and records may each have reached the
  disk or not. The head carries both `durable` (the log's end after the previous completed
  save) and `end`; a log that ends anywhere past `durable` is a normal crash, and a torn
  record past it is dropped silently.
* Anything lost or damaged at or below `durable` is a storage fault (faults.py): load()
  returns the intact prefix and a `StorageFault`, and the Raft layer decides what the node
  may do. A deleted segment is caught by the chain: each segment names the one before it,
  and a segment that was superseded names its successor.

The window this leaves: the last batch's entries are acknowledged after its fdatasync, but
`durable` covers them only once the next head write is durable. That happens with the next
save, or within a few milliseconds when the node is idle (a background confirm). A crash
inside that window followed by the loss of exactly that batch's records goes undetected;
closing it costs a second fdatasync per batch (measured: +100% per save).

On an I/O error (ENOSPC, EIO) from a write or an fdatasync, the store refuses every later
call: after a failed fsync the kernel may have dropped the dirty pages, so nothing in memory
can be trusted to match the disk (PostgreSQL's rule). The node stops; a restart reads the
disk afresh.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..raft.types import Entry, HardState, PersistedState, Snapshot, StorageFault
from ..starts import Seen, Start, new_start
from . import mark, records, snapfiles
from .common import (
    StorageCorruptError,
    StorageError,
    StorageIdentityError,
    StorageLockedError,
    acquire_dir_lock,
    release_dir_lock,
)
from .faults import DurableMark, Found, classify
from .mark import DATA_START, SLOT_OFFSETS, SLOT_SIZE, Head

log = logging.getLogger("distsync.storage")

SEG_SUFFIX = ".seg"
SQLITE_DB = "raft.db"  # the store before this one (sqlite_store.py)
SEGMENT_BYTES = 16 << 20
# Space is preallocated with fallocate (cheap: no data written) but the first fdatasync
# after writing into a fresh block must also convert its extent to "written", a journal
# commit. Zeros are written this far ahead of the tail instead, in the save that crosses
# into the next stretch: one conversion per MiB instead of one per block (measured: about
# 60 us off every save of a few KiB).
ZERO_AHEAD = 1 << 20
# An idle store makes its last batch part of the durable mark after this long. Under load the
# next save does it for free; a shorter delay costs an extra fdatasync per request at low
# concurrency (measured: it slowed PUT at c=1), and the window is already one batch.
CONFIRM_AFTER_S = 0.02
# Peers whose latest start a head remembers (starts.py): far more than a cluster's members,
# few enough that a head stays within its 4 KiB slot with names of 63 characters.
MAX_PEER_STARTS = 24




@dataclass(slots=True)
class _Seg:
    seq: int
    path: Path
    fd: int
    size: int
    first_index: int
    prev_crc: int
    prev_seg: int | None
    next_seg: int | None = None
    slot_seq: int = 0
    zeroed: int = 0  # written (not just allocated) up to here


def _seg_name(seq: int) -> str:
    return f"{seq:016d}{SEG_SUFFIX}"


def _check_batch(entries: list[Entry]) -> None:
    first = entries[0].index
    if first < 1:
        raise ValueError(f"entry index must be >= 1, got {first}")
    for i, e in enumerate(entries):
        if e.index != first + i:
            raise ValueError(f"entries not contiguous: expected index {first + i}, got {e.index}")


@dataclass(slots=True)
class _Read:
    """One reading of the directory: what load() returns and what the writer continues from."""

    state: PersistedState
    head: Head  # the current state (hard state, snapshot, durable mark, base)
    chain: list[int]  # the live segments, oldest first
    terms: list[int]
    locs: list[tuple[int, int]]  # (segment seq, offset) of each entry after the snapshot
    crcs: list[int]
    tail: int | None  # where the next record goes in the newest segment (None: new segment)
    stale: list[Path]  # files a crash left behind (deleted on open when the disk is healthy)


def _check_identity(data_dir: Path, head: Head, cluster: str, node: str) -> None:
    """Refuse a directory whose heads name another node or cluster (an operator's copy of
    another member's volume, a volume from another cluster), before anything on it is
    changed. Names that are not known on either side (a head lost to a fault, a store
    opened without names) are not compared."""
    held, this = [], []
    if node and head.node and head.node != node:
        held.append(f"node {head.node!r}")
        this.append(f"node {node!r}")
    if cluster and head.cluster and head.cluster != cluster:
        held.append(f"cluster {head.cluster!r}")
        this.append(f"cluster {cluster!r}")
    if held:
        raise StorageIdentityError(
            f"{data_dir} holds the data of {' of '.join(held)}, and this is "
            f"{' of '.join(this)}: refusing to start on it (nothing on it was changed). "
            f"Start this node on its own data directory, or on an empty one to rejoin "
            f"(README, \"Replacing a disk\")")


class Storage:
    """The node's durable Raft state in a data directory (see the module docstring).

    Methods are synchronous; the node calls them from one thread at a time, but a lock makes
    any thread safe (tests, metrics, the idle confirm)."""

    def __init__(self, data_dir: str | Path, *, cluster: str = "", node: str = "",
                 segment_bytes: int = SEGMENT_BYTES, confirm: bool = True) -> None:
        self._dir = Path(data_dir)
        created = not self._dir.exists()
        self._dir.mkdir(parents=True, exist_ok=True)
        if created:
            snapfiles.fsync_dir(self._dir.parent)
        self._seg_bytes = segment_bytes
        old = self._read_sqlite_store()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set by every save: the confirm thread sleeps on it while nothing waits for a
        # confirm, instead of polling (see _confirm_loop).
        self._saved = threading.Event()
        self._wakes = 0  # times the confirm thread woke (tests)
        self._failed: BaseException | None = None
        self._closed = False
        self._segs: dict[int, _Seg] = {}
        self._lock_fd = acquire_dir_lock(self._dir)
        try:
            rd = self._read(adopt=True)
            _check_identity(self._dir, rd.head, cluster, node)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._adopt(rd, cluster, node)
        if old is not None:
            self._convert(old)
        if rd.state.fault is not None:
            f = rd.state.fault
            log.error("storage fault in %s: %s (%s; durable up to %d, first bad index %d)",
                      self._dir, f.kind, f.detail, f.durable_index, f.first_bad_index)
        self._last_save = time.monotonic()
        self._confirmer: threading.Thread | None = None
        if confirm:
            self._confirmer = threading.Thread(target=self._confirm_loop, daemon=True,
                                               name=f"confirm-{node or self._dir.name}")
            self._confirmer.start()

    # ----------------------------------------------------------------------------- opening

    def _read_sqlite_store(self) -> PersistedState | None:
        """What a data directory of the SQLite store (the format before this one) holds.
        While `raft.db` is there, a conversion has not finished: segments are then a
        crashed conversion's leftovers and are written again."""
        if not (self._dir / SQLITE_DB).exists():
            return None
        from .sqlite_store import Storage as SqliteStorage

        with SqliteStorage(self._dir) as old:
            st = old.load()
        for p in self._dir.iterdir():
            if p.name.endswith(SEG_SUFFIX):
                p.unlink()
        return st

    def _convert(self, old: PersistedState) -> None:
        self.save(old.hard_state, old.entries, old.snapshot)
        if old.snapshot is None and not old.entries:
            self.save(old.hard_state, [], None)
        self.confirm()
        for suffix in ("-wal", "-shm", ""):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._dir / (SQLITE_DB + suffix),
                           self._dir / (SQLITE_DB + suffix + ".migrated"))
        snapfiles.fsync_dir(self._dir)
        log.info("storage: converted the SQLite store in %s (kept as %s.migrated)",
                 self._dir, SQLITE_DB)

    def _read(self, adopt: bool = False) -> _Read:
        """Read and judge everything on disk (see the module docstring)."""
        raws: dict[int, bytes] = {}
        heads: dict[int, Head] = {}
        stale: list[Path] = []
        for p in self._dir.iterdir():
            if p.name.endswith(SEG_SUFFIX) and p.name[: -len(SEG_SUFFIX)].isdigit():
                seq = int(p.name[: -len(SEG_SUFFIX)])
                raws[seq] = p.read_bytes()
                h = mark.best(raws[seq])
                if h is not None:
                    heads[seq] = h
            elif p.name.endswith(".tmp"):
                stale.append(p)
        extra: StorageFault | None = None
        newer_bad = [s for s in raws if s not in heads and (not heads or s > max(heads))]
        for s in newer_bad:
            if any(raws[s]):
                extra = StorageFault("lost_hard_state", 0, 0,
                                     f"the head of {_seg_name(s)}, the newest segment, is "
                                     f"damaged: the hard state in it is lost")
            else:
                stale.append(self._dir / _seg_name(s))  # a crash while creating it
        if not heads:
            snaps = snapfiles.present(self._dir)
            if extra is None and (snaps or any(s not in newer_bad for s in raws)):
                extra = StorageFault("lost_hard_state", 0, 0,
                                     "no segment head survives, but log or snapshot files do")
            return self._empty_read(stale, extra)
        cur = max(heads)
        h = heads[cur]
        if h.next_seg is not None and h.next_seg not in heads and extra is None:
            extra = StorageFault("lost_hard_state", h.durable, h.end + 1,
                                 f"{_seg_name(h.next_seg)}, which took over from "
                                 f"{_seg_name(cur)}, is missing: the newest hard state and "
                                 f"entries after {h.end} are lost")
        snap: Snapshot | None = None
        snap_lost = False
        if h.snap_index:
            try:
                snap = snapfiles.read(self._dir, h.snap_file or "", h.snap_crc)
                if (snap.meta.index, snap.meta.term) != (h.snap_index, h.snap_term):
                    raise snapfiles.SnapshotDamaged(f"{h.snap_file} holds another snapshot")
            except snapfiles.SnapshotDamaged as exc:
                log.error("storage: %s", exc)
                snap, snap_lost = None, True
        # Walk back from the newest segment to the one where the live log starts.
        chain = [cur]
        hole = False
        while chain[0] != h.base_seg:
            prev = heads.get(chain[0])
            p = prev.prev_seg if prev is not None else None
            if p is None or p not in heads or p in chain:
                hole = True
                break
            chain.insert(0, p)
        terms: list[int] = []
        locs: list[tuple[int, int]] = []
        crcs: list[int] = []
        entries: list[Entry] = []
        bad: int | None = None
        tail: int | None = None
        last = h.snap_index
        last_crc = h.base_crc
        if hole:
            bad = h.snap_index + 1
        else:
            for i, seq in enumerate(chain):
                sh = heads[seq]
                if i == 0:
                    start, first, seed = h.base_off, h.snap_index + 1, h.base_crc
                else:
                    start, first, seed = DATA_START, sh.first_index, sh.prev_crc
                    if first != last + 1 or seed != last_crc:
                        bad = last + 1
                        break
                stop = heads[chain[i + 1]].first_index - 1 if i + 1 < len(chain) else None
                sc = records.scan(memoryview(raws[seq]), start, first, seed, stop)
                entries += sc.entries
                terms += [e.term for e in sc.entries]
                locs += [(seq, o) for o in sc.offsets]
                crcs += sc.crcs
                last = first + len(sc.entries) - 1
                last_crc = sc.last_crc
                if i + 1 == len(chain):
                    tail = sc.end
                if sc.bad_index is not None and (i + 1 < len(chain) or sc.bad_index <= h.durable):
                    bad = sc.bad_index
                    break
                if stop is not None and last < stop:
                    bad = last + 1
                    break
                if sc.bad_index is not None:
                    log.info("storage: discarding a torn write after index %d in %s (never "
                             "acknowledged as durable)", last, _seg_name(seq))
        mk = DurableMark(h.cluster, h.node, h.term, h.vote, h.durable, h.snap_index,
                         h.snap_term, h.snap_crc)
        found = Found(h.term, h.vote, True, snap.meta.index if snap else 0,
                      snap.meta.term if snap else 0, h.snap_crc if snap else 0, snap_lost,
                      last if not snap_lost else 0, bad)
        fault = extra or classify(mk, found)
        if bad is not None and fault is None:
            # A damaged record past the durable mark: the torn last write, dropped.
            log.info("storage: discarding a torn write from index %d (never acknowledged "
                     "as durable)", bad)
        hs = HardState(h.term, h.vote, h.commit, h.recovering,
                       tuple(h.finished) if h.finished is not None else None,
                       tuple(h.heard or ()), h.heard_term)
        if fault is not None and fault.kind in ("lost_snapshot", "empty_after_use"):
            entries, terms, locs, crcs, tail = [], [], [], [], None
            h = h._replace(snap_index=0, snap_term=0, snap_crc=0, snap_file=None)
            snap = None
        if fault is not None and fault.first_bad_index:
            keep = max(0, fault.first_bad_index - 1 - h.snap_index)
            if keep < len(entries):
                entries, terms, locs, crcs = (entries[:keep], terms[:keep], locs[:keep],
                                              crcs[:keep])
                tail = None
        if tail is not None and locs and locs[-1][0] != cur:
            tail = None
        if fault is None and adopt:
            live = set(chain)
            stale += [self._dir / _seg_name(s) for s in raws if s not in live and s < cur]
        state = PersistedState(hs, snap, entries, fault)
        return _Read(state, h, chain, terms, locs, crcs, tail, stale)

    def _empty_read(self, stale: list[Path], fault: StorageFault | None) -> _Read:
        snap = None
        if fault is not None:
            for name in reversed(snapfiles.present(self._dir)):
                with contextlib.suppress(snapfiles.SnapshotDamaged):
                    snap = snapfiles.read(self._dir, name)
                    break
        state = PersistedState(HardState(), snap, [], fault)
        return _Read(state, Head(), [], [], [], [], None, stale if fault is None else [])

    def _adopt(self, rd: _Read, cluster: str, node: str) -> None:
        """Take the reading as the writer's starting point."""
        for p in rd.stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        h = rd.head
        self._st = h._replace(cluster=cluster or h.cluster, node=node or h.node)
        if rd.state.fault is not None:
            # Until repaired, keep what the node had made durable: a second restart must
            # see the same fault, not a smaller log taken as the truth.
            self._st = self._st._replace(durable=max(self._st.durable,
                                                     rd.state.fault.durable_index))
        self._terms, self._locs, self._crcs = rd.terms, rd.locs, rd.crcs
        self._durable = self._st.durable
        for seq in rd.chain:
            path = self._dir / _seg_name(seq)
            fd = os.open(path, os.O_RDWR)
            hd = mark.best(os.pread(fd, DATA_START, 0))
            assert hd is not None
            self._segs[seq] = _Seg(seq, path, fd, os.fstat(fd).st_size, hd.first_index,
                                   hd.prev_crc, hd.prev_seg, hd.next_seg, hd.seq)
        self._cur = self._segs[rd.chain[-1]] if rd.chain else None
        self._tail = rd.tail if self._cur is not None else None
        if rd.state.fault is None:
            snapfiles.remove_others(self._dir, keep=self._st.snap_file)
        self._max_seq = max([*self._segs, 0])
        for p in self._dir.iterdir():
            if p.name.endswith(SEG_SUFFIX) and p.name[: -len(SEG_SUFFIX)].isdigit():
                self._max_seq = max(self._max_seq, int(p.name[: -len(SEG_SUFFIX)]))

    # ------------------------------------------------------------------------- low level

    def _usable(self) -> None:
        if self._failed is not None:
            raise StorageError("storage failed earlier; restart and load()") from self._failed
        if self._closed:
            raise StorageError("storage is closed")

    def _fail(self, exc: OSError, what: str) -> StorageError:
        """Poison the store after an I/O error (see the module docstring)."""
        self._failed = exc
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        log.critical("storage: %s failed in %s: %s (%s); the store is unusable: a failed "
                     "write or fsync is never retried, the node must stop", what, self._dir,
                     name, exc.strerror)
        return StorageError(f"{what} failed: {name} ({exc.strerror})")

    def _slot(self, seg: _Seg) -> tuple[bytes, int]:
        seg.slot_seq += 1
        h = self._st._replace(seq=seg.slot_seq, first_index=seg.first_index,
                    prev_crc=seg.prev_crc, prev_seg=seg.prev_seg, next_seg=seg.next_seg)
        return mark.encode(h), SLOT_OFFSETS[seg.slot_seq % 2]

    def _write_head(self, seg: _Seg, sync: bool = True) -> None:
        raw, off = self._slot(seg)
        os.pwrite(seg.fd, raw, off)
        if sync:
            os.fdatasync(seg.fd)

    def _new_segment(self, first_index: int, min_bytes: int) -> _Seg:
        """Create the segment that holds `first_index` onwards, chained after the entry
        before it, and make it durable (file, head and name) before anything is written to
        it."""
        k = first_index - self._st.snap_index - 2  # position of first_index - 1
        if k >= 0:
            prev_seg, prev_crc = self._locs[k][0], self._crcs[k]
        else:
            prev_seg, prev_crc = None, self._st.base_crc
        self._max_seq += 1
        seq = self._max_seq
        path = self._dir / _seg_name(seq)
        size = max(self._seg_bytes, DATA_START + min_bytes + records.HEADER_SIZE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
            seg = _Seg(seq, path, fd, size, first_index, prev_crc, prev_seg)
            self._zero_ahead(seg, DATA_START + min_bytes)
            if first_index == self._st.snap_index + 1:
                self._st = self._st._replace(base_seg=seq, base_off=DATA_START,
                                   base_crc=prev_crc)
            self._write_head(seg, sync=False)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        snapfiles.fsync_dir(self._dir)
        self._segs[seq] = seg
        return seg

    @staticmethod
    def _zero_ahead(seg: _Seg, need: int) -> None:
        """Write zeros past `need` (see ZERO_AHEAD); the caller's fdatasync covers them."""
        if need <= seg.zeroed:
            return
        end = min(seg.size, max(need, seg.zeroed) + ZERO_AHEAD)
        start = seg.zeroed
        while start < end:
            n = min(end - start, 1 << 20)
            os.pwrite(seg.fd, bytes(n), start)
            start += n
        seg.zeroed = end

    def _drop_segments(self, base: int) -> None:
        """Close and delete the segments that hold no live entry: those not in the chain
        any more, and those in it before `base` (where the live log starts)."""
        live = self._live_chain()
        doomed = [s for s in self._segs if s not in live]
        if base in live:
            doomed += [s for s in live if s < base]
        for s in set(doomed):
            seg = self._segs.pop(s)
            os.close(seg.fd)
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()

    def _live_chain(self) -> list[int]:
        if self._cur is None:
            return []
        chain = [self._cur.seq]
        while chain[0] != self._st.base_seg:
            p = self._segs[chain[0]].prev_seg
            if p is None or p not in self._segs:
                break
            chain.insert(0, p)
        return chain

    # -------------------------------------------------------------------------------- API

    def load(self) -> PersistedState:
        """Everything a restarting node needs, with a StorageFault if what it had made
        durable is lost or damaged (faults.py)."""
        with self._lock:
            self._usable()
            return self._read().state

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        """Persist one Ready: snapshot, entries and hard state, with one fdatasync (plus the
        snapshot file's own when there is one). Entries at or below the snapshot index are
        dropped (committed, so equal to what the snapshot covers); a batch that would leave
        a gap after the log's end raises ValueError and writes nothing."""
        if hard_state is None and not entries and snapshot is None:
            return
        if entries:
            _check_batch(entries)
        with self._lock:
            self._usable()
            self._validate(entries, snapshot)
            try:
                self._save_locked(hard_state, entries, snapshot)
            except OSError as exc:
                raise self._fail(exc, "writing the log") from exc
            self._last_save = time.monotonic()
        self._saved.set()

    def _last_index(self) -> int:
        return self._st.snap_index + len(self._terms)

    def _term_at(self, index: int) -> int | None:
        if index == self._st.snap_index:
            return self._st.snap_term
        k = index - self._st.snap_index - 1
        return self._terms[k] if 0 <= k < len(self._terms) else None

    def _validate(self, entries: list[Entry], snapshot: Snapshot | None) -> None:
        snap_index, last = self._st.snap_index, self._last_index()
        if snapshot is not None:
            m = snapshot.meta
            if m.index < snap_index:
                raise ValueError(f"snapshot at {m.index} is older than the stored one at "
                                 f"{snap_index}")
            if self._term_at(m.index) != m.term:
                last = m.index
            snap_index, last = m.index, max(last, m.index)
        live = [e for e in entries if e.index > snap_index]
        if live and live[0].index > last + 1:
            raise ValueError(f"entries start at {live[0].index} but the log ends at {last}")

    def _save_locked(self, hs: HardState | None, entries: list[Entry],
                     snapshot: Snapshot | None) -> None:
        old_snap = self._st.snap_file
        reset = False
        if snapshot is not None:
            m = snapshot.meta
            name, crc = snapfiles.write(self._dir, snapshot)
            reset = self._term_at(m.index) != m.term
            self._install_snapshot(m.index, m.term, name, crc, reset)
        if hs is not None:
            self._st = self._st._replace(term=hs.term, vote=hs.vote, commit=hs.commit,
                               recovering=hs.recovering,
                               heard=list(hs.heard) or None, heard_term=hs.heard_term,
                               finished=(list(hs.finished) if hs.finished is not None
                                         else None))
        entries = [e for e in entries if e.index > self._st.snap_index]
        if entries:
            self._append(entries)
        elif reset or self._cur is None:
            self._cur = self._new_segment(self._st.snap_index + 1, 0)
            self._tail = DATA_START
            self._write_head(self._cur)
        else:
            self._write_head(self._cur)
        if snapshot is not None:
            self._after_snapshot(old_snap)

    def _install_snapshot(self, index: int, term: int, name: str, crc: int,
                          reset: bool) -> None:
        """Point the in-memory state at a new snapshot; the next head write makes it
        durable."""
        if reset:
            # The log is replaced by the snapshot: what was durable beyond it is gone on
            # purpose, and the mark says so in the new segment's head.
            self._terms, self._locs, self._crcs = [], [], []
            self._cur, self._tail = None, None
            self._durable = index
            self._st = self._st._replace(snap_index=index, snap_term=term, snap_crc=crc,
                               snap_file=name, base_seg=-1, base_off=0, base_crc=0,
                               durable=index, end=index)
            return
        k = index - self._st.snap_index  # entries to drop
        base = self._base_after(k)
        self._terms, self._locs, self._crcs = self._terms[k:], self._locs[k:], self._crcs[k:]
        self._st = self._st._replace(snap_index=index, snap_term=term, snap_crc=crc,
                           snap_file=name, **base)

    def _base_after(self, k: int) -> dict[str, int]:
        """Where the live log starts once the first `k` entries are dropped."""
        if k <= 0:
            return {}
        crc = self._crcs[k - 1]
        if k < len(self._locs):
            seg, off = self._locs[k]
        elif self._cur is not None and self._tail is not None:
            seg, off = self._cur.seq, self._tail
        else:
            seg, off = -1, 0
        return {"base_seg": seg, "base_off": off, "base_crc": crc}

    def _after_snapshot(self, old_snap: str | None) -> None:
        """Once the head naming a new snapshot is durable: delete what it made useless."""
        self._drop_segments(self._st.base_seg)
        if old_snap != self._st.snap_file:
            snapfiles.remove_others(self._dir, keep=self._st.snap_file)

    def _append(self, entries: list[Entry]) -> None:
        first = entries[0].index
        last = self._last_index()
        k = first - self._st.snap_index - 1  # position of `first` in the arrays
        size = sum(records.HEADER_SIZE + len(e.data) for e in entries)
        cur, tail = self._cur, self._tail
        if first <= last:  # a conflicting suffix is replaced
            seq, off = self._locs[k]
            if first - 1 < self._durable:
                # Lower the mark first, durably: a crash after the tail is rewritten must
                # not look like a lost tail.
                self._durable = first - 1
                self._st = self._st._replace(durable=first - 1, end=first - 1)
                if cur is not None and seq == cur.seq:
                    self._write_head(cur)
            self._terms, self._locs, self._crcs = (self._terms[:k], self._locs[:k],
                                                   self._crcs[:k])
            tail = off if cur is not None and seq == cur.seq else None
        if cur is None or tail is None or tail + size > cur.size:
            roll = cur is not None and tail is not None
            new = self._new_segment(first, size)
            if roll:
                assert cur is not None
                # Say in the old segment that a newer one took over: if the newer one is
                # lost, the old head is not mistaken for the newest state.
                cur.next_seg = new.seq
                self._write_head(cur)
            cur, tail = new, DATA_START
            self._cur = cur
        seed = self._crcs[-1] if self._crcs else self._st.base_crc
        buf, offs, crcs = records.encode(entries, seed)
        rec_len = len(buf)
        end = first + len(entries) - 1
        self._st = self._st._replace(durable=self._durable, end=end)
        if tail + rec_len + records.HEADER_SIZE <= cur.size:
            buf += records.END_MARK
        if cur.zeroed < tail:
            cur.zeroed = tail  # a segment opened from disk: written up to its tail
        self._zero_ahead(cur, tail + len(buf))
        os.pwrite(cur.fd, buf, tail)
        raw, slot_off = self._slot(cur)
        os.pwrite(cur.fd, raw, slot_off)
        os.fdatasync(cur.fd)  # the one flush of this save
        self._terms += [e.term for e in entries]
        self._locs += [(cur.seq, tail + o) for o in offs]
        self._crcs += crcs
        self._tail = tail + rec_len
        self._durable = max(self._durable, end)
        if len(self._segs) > len(self._live_chain()):
            self._drop_segments(self._st.base_seg)

    def compact(self, snapshot: Snapshot) -> None:
        """Record a snapshot the node took of its own state machine and drop the entries it
        covers. A snapshot older than the stored one is ignored: a leader's snapshot may have
        been installed while this one was being written."""
        m = snapshot.meta
        with self._lock:
            self._usable()
            if m.index < self._st.snap_index:
                return
        try:
            name, crc = snapfiles.write(self._dir, snapshot)  # the big write, unlocked
        except OSError as exc:
            with self._lock:
                raise self._fail(exc, "writing a snapshot") from exc
        with self._lock:
            self._usable()
            if m.index < self._st.snap_index:
                with contextlib.suppress(FileNotFoundError):
                    (self._dir / name).unlink()
                return
            old = self._st.snap_file
            try:
                self._install_snapshot(m.index, m.term, name, crc,
                                       reset=m.index > self._last_index())
                if self._cur is None:
                    self._cur = self._new_segment(m.index + 1, 0)
                    self._tail = DATA_START
                self._write_head(self._cur)
                self._after_snapshot(old)
            except OSError as exc:
                raise self._fail(exc, "recording a snapshot") from exc

    def _confirm_loop(self) -> None:
        """Make an idle store's last batch part of the durable mark (module docstring).
        The fdatasync runs outside the lock so that a save arriving meanwhile does not wait
        for it: the two write different slots, and the higher sequence number wins.

        The thread sleeps until a save, then until the store has been quiet for
        CONFIRM_AFTER_S, looking at most once per such period while saves go on (each of them
        carries the one before it in its own head). It used to poll every CONFIRM_AFTER_S / 2
        whatever happened: 100 wake-ups a second per node, idle or not, each taking the GIL
        from the event loop for nothing (tests/unit/test_wal_confirm.py)."""
        while True:
            self._saved.wait()
            self._wakes += 1
            while not self._stop.is_set():
                quiet = time.monotonic() - self._last_save
                if quiet >= CONFIRM_AFTER_S:
                    break
                self._stop.wait(CONFIRM_AFTER_S - quiet)
                self._wakes += 1
            if self._stop.is_set():
                return
            # Cleared before the confirm, which covers every save completed so far; a save
            # completing after this sets it again and is confirmed on the next round.
            self._saved.clear()
            if self._durable <= self._st.durable:
                continue
            with self._lock:
                cur = self._cur
                if self._closed or self._failed is not None or cur is None:
                    continue
                if self._durable <= self._st.durable:
                    continue
                self._st = self._st._replace(durable=self._durable)
                try:
                    self._write_head(cur, sync=False)
                except OSError as exc:
                    self._fail(exc, "confirming the durable mark")
                    continue
                fd = os.dup(cur.fd)  # the segment may be dropped meanwhile
            try:
                os.fdatasync(fd)
            except OSError as exc:
                with self._lock:
                    if not self._closed:
                        self._fail(exc, "confirming the durable mark")
            finally:
                os.close(fd)

    def confirm(self) -> None:
        """Make the durable mark cover every completed save now (tests; close())."""
        with self._lock:
            self._usable()
            if self._cur is not None and self._durable > self._st.durable:
                self._st = self._st._replace(durable=self._durable)
                try:
                    self._write_head(self._cur)
                except OSError as exc:
                    raise self._fail(exc, "confirming the durable mark") from exc

    def last_index(self) -> int:
        """Index of the last entry, or the snapshot index when the log is empty."""
        with self._lock:
            self._usable()
            return self._last_index()

    def first_index(self) -> int:
        """Index of the first entry the log can hold: one past the snapshot."""
        with self._lock:
            self._usable()
            return self._st.snap_index + 1

    # -- start chains (starts.py) ------------------------------------------------------

    def begin_start(self) -> Start:
        """This directory's next start, durable before it is returned: a peer that has seen
        it must never find the directory without it after a mere crash."""
        with self._lock:
            self._usable()
            h = self._st
            nxt = new_start(Start(h.boot, tuple(h.boot_ids)) if h.boot and h.boot_ids
                            else None)
            self._write_fields(boot=nxt.boot, boot_ids=list(nxt.ids))
        return nxt

    def peer_start(self, peer: str) -> Seen | None:
        """The latest start of `peer` this node has seen, or None."""
        with self._lock:
            v = (self._st.peer_starts or {}).get(peer)
        # [boot, id] or, since start chains tell replaced directories, [boot, id, replaced]
        return Seen(int(v[0]), bytes(v[1]), len(v) > 2 and bool(v[2])) if v else None

    def note_peer_start(self, peer: str, start: Start, replaced: bool = False) -> bool:
        """Remember `peer`'s start, durably (a head write and its fdatasync: a peer starts
        rarely), unless it is the one remembered already. Returns whether it was new.
        `replaced`: its chain replaced one this node saw (starts.Seen)."""
        with self._lock:
            self._usable()
            known = dict(self._st.peer_starts or {})
            rec = [start.boot, start.id, 1] if replaced else [start.boot, start.id]
            if known.get(peer) == rec:
                return False
            if peer not in known and len(known) >= MAX_PEER_STARTS:
                return False  # a head has 4 KiB; far more peers than a cluster has members
            known[peer] = rec
            try:
                mark.encode(self._st._replace(peer_starts=known))
            except ValueError:
                return False  # names too long to fit: a check missed, never a failed save
            self._write_fields(peer_starts=known)
            return True

    def _write_fields(self, **fields: Any) -> None:
        """Change head fields and write the head now, with its fdatasync (under the lock)."""
        self._st = self._st._replace(**fields)
        try:
            self._save_locked(None, [], None)
        except OSError as exc:
            raise self._fail(exc, "writing a segment head") from exc

    def identity(self) -> tuple[str, str]:
        """(cluster, node) recorded in the heads: whose data this directory holds."""
        return self._st.cluster, self._st.node

    def size_bytes(self) -> int:
        """Bytes on disk (preallocated segments count whole: that is what fills the
        volume)."""
        total = 0
        for p in self._dir.iterdir():
            if p.name.endswith(SEG_SUFFIX) or p.name.startswith(snapfiles.PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    total += p.stat().st_size
        return total

    def close(self) -> None:
        """Confirm the durable mark, close the files and release the directory lock.
        Idempotent."""
        self._stop.set()
        self._saved.set()  # wake the confirm thread if it sleeps waiting for a save
        if self._confirmer is not None and self._confirmer is not threading.current_thread():
            self._confirmer.join()
        with contextlib.suppress(StorageError):
            self.confirm()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for seg in self._segs.values():
                with contextlib.suppress(OSError):
                    os.close(seg.fd)
            self._segs.clear()
            release_dir_lock(self._lock_fd)

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SLOT_SIZE", "Storage", "StorageCorruptError", "StorageError", "StorageLockedError"]
