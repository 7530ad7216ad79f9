"""Durable Raft state (log, hard state, snapshots) in checksummed, segmented log files; see
wal.py for the format and faults.py for what a node learns at start about its own disk.

`SqliteStorage` is the store this one replaced, kept for reading old data directories and
for benchmarks/storage_bench.py."""

from .sqlite_store import Storage as SqliteStorage
from .wal import (
    Storage,
    StorageCorruptError,
    StorageError,
    StorageIdentityError,
    StorageLockedError,
)

__all__ = ["SqliteStorage", "Storage", "StorageCorruptError", "StorageError",
           "StorageIdentityError", "StorageLockedError"]
