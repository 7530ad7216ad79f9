"""Durable Raft state (log, hard state, snapshot) on SQLite; see sqlite_store for why."""

from .sqlite_store import Storage, StorageCorruptError, StorageError, StorageLockedError

__all__ = ["Storage", "StorageCorruptError", "StorageError", "StorageLockedError"]
