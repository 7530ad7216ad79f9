"""Durable Raft state: the log, the hard state (term/vote/commit) and the latest snapshot.

Why SQLite, in WAL mode with ``synchronous=FULL``:

* Raft's safety rests on one promise: once ``save()`` returns, what it wrote survives a crash
  (SIGKILL, kernel panic, power loss). In WAL mode with ``synchronous=FULL`` every transaction
  commit fsyncs the write-ahead log before returning, so an acknowledged ``save()`` is on disk.
* A crash in the middle of a write leaves a torn tail. Every WAL frame carries a cumulative
  checksum and the WAL header's salt; on open SQLite replays frames only up to the last intact
  commit frame and ignores everything after it. Torn-tail detection is therefore done by a
  mature, heavily fuzzed implementation rather than by a hand-written segment format.
* A transaction is atomic across tables, so "install snapshot, drop the conflicting suffix,
  append the new entries, record the new term/vote/commit" is all-or-nothing, and costs a
  single fsync however many entries it carries (group commit: the caller batches).

The price is write amplification (pages are written to the WAL, then checkpointed into the
database file) and an occasional checkpoint stall; both are small next to an fsync per batch.

Entries are stored as real columns rather than one encoded blob so that conflict truncation
and compaction are range DELETEs on the primary key and loading needs no per-entry decoding.

The snapshot itself is a file next to the database (``snap-<term>-<index>.bin``), fsynced and
renamed into place before a short transaction points the database at it and drops the
entries it covers. Kept inside the database, a snapshot of a large state held the write
transaction (and so every save of new entries) for hundreds of milliseconds.

Only one process may own a data directory: two writers interleaving on one Raft log would
break Raft's safety silently, so the store takes an exclusive ``flock`` on ``<dir>/LOCK``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ..raft.codec import decode_hard_state, decode_snapshot, encode_hard_state, encode_snapshot
from ..raft.types import Entry, EntryType, HardState, PersistedState, Snapshot
from .common import (
    StorageCorruptError,
    StorageError,
    acquire_dir_lock,
    release_dir_lock,
)

DB_NAME = "raft.db"
# Snapshots live in files of their own (`snap-<term>-<index>.bin`), written and fsynced before
# the transaction that points the database at them: a large snapshot is then written without
# holding the store (the Raft loop keeps saving entries meanwhile), and the transaction that
# makes it current is short.
SNAP_PREFIX, SNAP_SUFFIX = "snap-", ".bin"

# The WAL file is reused rather than shrunk after a checkpoint; past this size it is truncated
# so that one burst of large entries or a big snapshot does not pin disk space forever.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

_ENTRY_TYPES = {int(t): t for t in EntryType}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries("
    "idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, type INTEGER NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v BLOB NOT NULL)",
)




def _fsync_dir(path: Path) -> None:
    # A newly created file or directory is only durable once its parent directory is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _entry_from_row(row: tuple[int, int, int, bytes]) -> Entry:
    t = _ENTRY_TYPES.get(row[2])
    return Entry(row[0], row[1], t if t is not None else EntryType(row[2]), row[3])


def _check_batch(entries: list[Entry]) -> None:
    first = entries[0].index
    if first < 1:
        raise ValueError(f"entry index must be >= 1, got {first}")
    for i, e in enumerate(entries):
        if e.index != first + i:
            raise ValueError(f"entries not contiguous: expected index {first + i}, got {e.index}")


class Storage:
    """The node's durable Raft state in ``<data_dir>/raft.db``.

    All methods are synchronous and each one that writes is a single transaction with a single
    fsync. The node drives it from one worker thread, but the connection is shared under a lock
    so that any thread may call it (tests, metrics).

    After an I/O error while writing, the store refuses all further calls: after a failed
    fsync the kernel may have dropped the dirty pages, so nothing in memory can be trusted to
    match the disk any more. Restarting and calling ``load()`` is the only safe recovery.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self._dir = Path(data_dir)
        created = not self._dir.exists()
        self._dir.mkdir(parents=True, exist_ok=True)
        if created:
            _fsync_dir(self._dir.parent)
        self._path = self._dir / DB_NAME
        self._lock = threading.Lock()
        self._failed: BaseException | None = None
        self._closed = False
        self._lock_fd = acquire_dir_lock(self._dir)
        try:
            self._conn = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            # Cached so that save() need not decode a possibly large snapshot blob to learn its
            # index. The directory lock makes this connection the only writer, so it stays true.
            self._snap_index, self._snap_term = self._read_snapshot_meta()
        except BaseException:
            self._conn.close()
            os.close(self._lock_fd)
            raise

    # ----------------------------------------------------------------------------- opening

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module must not open transactions behind our back;
        # every transaction boundary (and so every fsync) is explicit below.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot enable WAL mode on {self._path} (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        # The database and WAL files may have just been created: make their names durable.
        _fsync_dir(self._dir)
        return conn

    def _read_snapshot_meta(self) -> tuple[int, int]:
        snap = self._read_snapshot(self._conn)
        self._remove_snapshot_files(keep=self._snap_file(self._conn))
        if snap is None:
            return 0, 0
        return snap.meta.index, snap.meta.term

    def _snap_file(self, conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT v FROM kv WHERE k='snapshot_file'").fetchone()
        if row is None:
            return None
        return row[0].decode() if isinstance(row[0], bytes) else row[0]

    def _read_snapshot(self, conn: sqlite3.Connection) -> Snapshot | None:
        name = self._snap_file(conn)
        if name is not None:
            try:
                data = (self._dir / name).read_bytes()
            except FileNotFoundError:
                raise StorageCorruptError(
                    f"{self._dir / name} is missing: the log refers to it as its snapshot"
                ) from None
            return decode_snapshot(data)
        row = conn.execute("SELECT v FROM kv WHERE k='snapshot'").fetchone()  # older format
        return decode_snapshot(row[0]) if row is not None else None

    def _write_snapshot_file(self, snapshot: Snapshot) -> str:
        """Write `snapshot` to its own file, durably (fsync the file, rename, fsync the
        directory), before anything refers to it."""
        m = snapshot.meta
        name = f"{SNAP_PREFIX}{m.term}-{m.index}{SNAP_SUFFIX}"
        tmp = self._dir / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(encode_snapshot(snapshot))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._dir / name)
        _fsync_dir(self._dir)
        return name

    def _remove_snapshot_files(self, keep: str | None) -> None:
        """Delete snapshot files that are not the current one (superseded, or left by a crash
        before the transaction that would have made them current)."""
        for p in self._dir.iterdir():
            if p.name.startswith(SNAP_PREFIX) and p.name != keep:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    # ----------------------------------------------------------------------- transactions

    def _usable(self) -> sqlite3.Connection:
        if self._failed is not None:
            raise StorageError("storage failed earlier; restart and load()") from self._failed
        if self._closed:
            raise StorageError("storage is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. Caller errors (ValueError) roll back and leave the store
        usable; any database error poisons it (see the class docstring)."""
        conn = self._usable()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._poison(exc)
            raise
        try:
            yield conn
        except sqlite3.Error as exc:
            self._poison(exc)
            raise
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                self._poison(exc)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._poison(exc)
            raise

    def _poison(self, exc: BaseException) -> None:
        self._failed = exc
        with contextlib.suppress(Exception):
            self._conn.close()

    # -------------------------------------------------------------------------------- API

    def load(self) -> PersistedState:
        """Everything a restarting node needs, read in one consistent transaction."""
        with self._lock:
            conn = self._usable()
            conn.execute("BEGIN")
            try:
                hs_row = conn.execute("SELECT v FROM kv WHERE k='hard_state'").fetchone()
                snapshot = self._read_snapshot(conn)
                snap_index = snapshot.meta.index if snapshot is not None else 0
                rows = conn.execute(
                    "SELECT idx, term, type, data FROM entries WHERE idx > ? ORDER BY idx",
                    (snap_index,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        hard_state = decode_hard_state(hs_row[0]) if hs_row is not None else HardState()
        expected = snap_index + 1
        for row in rows:
            if row[0] != expected:
                raise StorageCorruptError(
                    f"log gap in {self._path}: expected index {expected}, found {row[0]}"
                )
            expected += 1
        return PersistedState(hard_state, snapshot, [_entry_from_row(r) for r in rows])

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Ready: snapshot, then entries, then hard state, atomically and with one
        fsync, so that a crash never exposes a vote without the log it was cast for or a
        snapshot without the truncation it implies.

        Entries at or below the snapshot index are dropped: they are committed, so by Log
        Matching they equal what the snapshot covers. A batch that would leave a gap after the
        current last index raises ValueError and writes nothing.
        """
        if hard_state is None and not entries and snapshot is None:
            return
        if entries:
            _check_batch(entries)
        with self._lock:
            self._save_locked(hard_state, entries, snapshot)

    def _save_locked(
        self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None
    ) -> None:
        snap_name = None
        if snapshot is not None:
            self._usable()
            if snapshot.meta.index >= self._snap_index:
                snap_name = self._write_snapshot_file(snapshot)
        with self._write() as conn:
            snap_index, snap_term = self._snap_index, self._snap_term
            if snapshot is not None:
                m = snapshot.meta
                if m.index < snap_index:
                    raise ValueError(
                        f"snapshot at {m.index} is older than the stored one at {snap_index}"
                    )
                if self._log_has(conn, m.index, m.term):
                    # Our log agrees with the snapshot's last entry: keep what follows it.
                    conn.execute("DELETE FROM entries WHERE idx <= ?", (m.index,))
                else:
                    # The snapshot is not a prefix of our log, so none of our log can be
                    # trusted to follow it.
                    conn.execute("DELETE FROM entries")
                self._point_at(conn, snap_name)
                snap_index, snap_term = m.index, m.term
            if entries:
                skip = snap_index + 1 - entries[0].index
                if skip > 0:
                    entries = entries[skip:]
            if entries:
                first = entries[0].index
                last = self._last_index(conn, snap_index)
                if first > last + 1:
                    raise ValueError(f"entries start at {first} but the log ends at {last}")
                conn.execute("DELETE FROM entries WHERE idx >= ?", (first,))
                conn.executemany(
                    "INSERT INTO entries(idx, term, type, data) VALUES (?, ?, ?, ?)",
                    [(e.index, e.term, int(e.type), e.data) for e in entries],
                )
            if hard_state is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO kv(k, v) VALUES ('hard_state', ?)",
                    (encode_hard_state(hard_state),),
                )
        # Only reached once COMMIT succeeded.
        if snapshot is not None:
            self._remove_snapshot_files(keep=snap_name)
        self._snap_index, self._snap_term = snap_index, snap_term

    @staticmethod
    def _point_at(conn: sqlite3.Connection, snap_name: str | None) -> None:
        conn.execute("INSERT OR REPLACE INTO kv(k, v) VALUES ('snapshot_file', ?)", (snap_name,))
        conn.execute("DELETE FROM kv WHERE k='snapshot'")

    def compact(self, snapshot: Snapshot) -> None:
        """Record a snapshot the node took of its own state machine and drop the entries it
        covers. A snapshot older than the stored one is ignored rather than rejected: a leader
        snapshot may have been installed while this one was being produced."""
        m = snapshot.meta
        with self._lock:
            self._usable()
            if m.index < self._snap_index:
                return
        # The big write happens without the lock: saves of new entries go on meanwhile.
        name = self._write_snapshot_file(snapshot)
        with self._lock:
            if m.index < self._snap_index:  # a newer one was installed while we wrote
                with contextlib.suppress(FileNotFoundError):
                    (self._dir / name).unlink()
                return
            with self._write() as conn:
                self._point_at(conn, name)
                conn.execute("DELETE FROM entries WHERE idx <= ?", (m.index,))
            self._snap_index, self._snap_term = m.index, m.term
            self._remove_snapshot_files(keep=name)

    def last_index(self) -> int:
        """Index of the last entry, or the snapshot index when the log is empty (etcd-style)."""
        with self._lock:
            return self._last_index(self._usable(), self._snap_index)

    def first_index(self) -> int:
        """Index of the first entry the log can hold: one past the snapshot."""
        with self._lock:
            self._usable()
            return self._snap_index + 1

    def size_bytes(self) -> int:
        """Bytes on disk, WAL included: that is what fills the volume."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self._path}{suffix}").st_size
        for p in self._dir.glob(f"{SNAP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def close(self) -> None:
        """Close the database (SQLite checkpoints and removes the WAL) and release the
        directory lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None:
                    self._conn.close()
            finally:
                release_dir_lock(self._lock_fd)

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- helpers

    def _log_has(self, conn: sqlite3.Connection, index: int, term: int) -> bool:
        if index == self._snap_index and term == self._snap_term:
            return True
        row = conn.execute("SELECT term FROM entries WHERE idx = ?", (index,)).fetchone()
        return row is not None and row[0] == term

    @staticmethod
    def _last_index(conn: sqlite3.Connection, snap_index: int) -> int:
        row = conn.execute("SELECT max(idx) FROM entries").fetchone()
        return max(row[0] or 0, snap_index)
