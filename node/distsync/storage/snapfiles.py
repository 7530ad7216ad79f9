"""Snapshot files: `snap-<term>-<index>.bin`, each checksummed, written durably before anything
refers to them (fsync the file, rename it into place, fsync the directory).

A snapshot lives in a file of its own so that a large one is written without holding the
log: the Raft loop keeps saving entries meanwhile, and only the short step that makes it
current (a segment head write) waits.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path

from ..raft.codec import decode_snapshot, encode_snapshot
from ..raft.types import Snapshot

PREFIX, SUFFIX = "snap-", ".bin"
_MAGIC = b"DSNP"
_HDR = struct.Struct("<4sIQ")  # magic, crc32 of the body, body length


class SnapshotDamaged(Exception):
    """The file is missing, short, or fails its checksum."""


def fsync_dir(path: Path) -> None:
    # A newly created, renamed or deleted name is only durable once its directory is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(directory: Path, snapshot: Snapshot) -> tuple[str, int]:
    """Write `snapshot` durably; returns (file name, crc of its body)."""
    m = snapshot.meta
    name = f"{PREFIX}{m.term}-{m.index}{SUFFIX}"
    body = encode_snapshot(snapshot)
    crc = zlib.crc32(body)
    tmp = directory / (name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_HDR.pack(_MAGIC, crc, len(body)))
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / name)
    fsync_dir(directory)
    return name, crc


def read(directory: Path, name: str, crc: int | None = None) -> Snapshot:
    """The snapshot in `name`, checked against its own checksum and, if given, `crc`."""
    try:
        raw = (directory / name).read_bytes()
    except FileNotFoundError:
        raise SnapshotDamaged(f"{directory / name} is missing") from None
    if len(raw) < _HDR.size:
        raise SnapshotDamaged(f"{directory / name} is truncated")
    magic, stored, n = _HDR.unpack_from(raw, 0)
    body = raw[_HDR.size:]
    if magic != _MAGIC or n != len(body) or zlib.crc32(body) != stored or (
        crc is not None and stored != crc
    ):
        raise SnapshotDamaged(f"{directory / name} fails its checksum")
    return decode_snapshot(body)


def remove_others(directory: Path, keep: str | None) -> None:
    """Delete snapshot files that are not the current one (superseded, or left by a crash
    before the head write that would have made them current)."""
    for p in directory.iterdir():
        if p.name.startswith(PREFIX) and p.name != keep:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def present(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()
                  if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))
