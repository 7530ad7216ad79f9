"""What both stores share (the segment log, wal.py, and the SQLite store it replaced, still
read to convert old data directories): their errors and the data directory's lock, so a
caller catches one `StorageLockedError` whichever store refused."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "LOCK"


class StorageError(Exception):
    """The store cannot be used; the node should stop rather than guess what is on disk."""


class StorageLockedError(StorageError):
    """Another process (or another open Storage) owns this data directory."""


class StorageIdentityError(StorageError):
    """The directory holds another node's or another cluster's data (its heads say whose):
    taking that log as this node's own would vote and lead on entries it never had."""


class StorageCorruptError(StorageError):
    """What is on disk cannot be read as a store at all (or violates an invariant the store
    itself keeps): returning a shortened log instead would silently lose acknowledged
    entries."""


def acquire_dir_lock(data_dir: Path) -> int:
    """An exclusive, non-blocking flock on the directory's LOCK file, held by the returned fd
    for as long as the store is open (the kernel drops it when the process dies)."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StorageLockedError(f"{data_dir} is in use by another Storage") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_dir_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
