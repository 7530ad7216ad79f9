"""The head of a log segment: two alternating slots holding the segment's place in the log,
the hard state and the durable mark.

Why in the segment's head and not in a file of its own: a separate file costs a second
fdatasync per write batch (measured in benchmarks/storage_bench.py: about as much as the
first), and the point of this store is one fdatasync per batch. The head is written with
the batch's records and covered by the same fdatasync; truncating or zeroing the log's tail
leaves it intact, and a deleted segment is caught by the chain of segments (see wal.py).

Two slots, written alternately, each with its own CRC and a sequence number: a torn write
of one slot leaves the other, one step older, and the newer valid slot wins. They sit in
different 4 KiB pages so that one torn page cannot take both.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import msgpack

SLOT_SIZE = 4096
SLOT_OFFSETS = (0, SLOT_SIZE)
DATA_START = 2 * SLOT_SIZE
_HDR = struct.Struct("<II")  # crc of the body, body length
_VERSION = 1


class Head(NamedTuple):
    """One slot's content. Fields up to `prev_seg` describe the segment and never change;
    the rest is the node's durable state at the time the slot was written.

    A NamedTuple rather than a frozen dataclass: every save makes two changed copies, and
    `_replace` costs about an eighth of `dataclasses.replace` (measured: 24 -> 15 us of CPU
    per single-entry save)."""

    seq: int = 0  # the slot write counter: the higher valid slot is current
    first_index: int = 1  # the index of the segment's first record
    prev_crc: int = 0  # the CRC its first record is chained from
    prev_seg: int | None = None  # the segment holding first_index - 1 (None: after a snapshot)
    next_seg: int | None = None  # set once a newer segment took over (see wal.py, rolling)
    term: int = 0
    vote: str | None = None
    commit: int = 0
    # The durable mark: the log's last index after the latest save whose fdatasync had
    # completed before this slot was written (the save carrying this slot may add more).
    durable: int = 0
    end: int = 0  # the log's last index once this slot's own save is durable
    snap_index: int = 0
    snap_term: int = 0
    snap_crc: int = 0
    snap_file: str | None = None
    cluster: str = ""
    node: str = ""
    # Where the live log starts: the segment, offset and chain seed of entry snap_index + 1.
    base_seg: int = -1
    base_off: int = 0
    base_crc: int = 0
    # HardState.recovering: a repair under way (raft/recovery.py), kept across restarts.
    recovering: str = ""
    # This directory's latest start (starts.py): its number, and the ids of it and of the
    # starts before it, newest first. Heads written before start chains decode as none.
    boot: int = 0
    boot_ids: list[bytes] | None = None
    # The latest start of each peer this node has seen: {peer id: [boot, id]}, or
    # [boot, id, 1] for a chain that replaced one it saw (starts.Seen).
    peer_starts: dict[str, list] | None = None
    # HardState.finished: founding members that said they finished asking whether the cluster
    # was new. Left out of the encoding while None (a directory founded before these records),
    # so the heads of an older cluster stay readable by the version it ran before.
    finished: list[str] | None = None
    # HardState.heard and heard_term: the answers a member still asking has heard. Left out
    # while there are none, as `finished` is.
    heard: list[str] | None = None
    heard_term: int = 0

    def bump(self, **changes: object) -> Head:
        return self._replace(seq=self.seq + 1, **changes)  # type: ignore[arg-type]


def encode(h: Head) -> bytes:
    fields = [_VERSION, *h]  # the fields in their order
    # Trailing fields at their defaults are left out (see `finished`; an empty `finished`
    # is a record kept, and stays).
    if not h.heard and not h.heard_term:
        del fields[-2:]
        if h.finished is None:
            fields.pop()
    body = msgpack.packb(fields, use_bin_type=True)
    if _HDR.size + len(body) > SLOT_SIZE:
        raise ValueError("segment head too large (a very long node or cluster name?)")
    return _HDR.pack(zlib.crc32(body), len(body)) + body


def decode(raw: bytes | memoryview) -> Head | None:
    """A slot's Head, or None when it is empty, torn or damaged."""
    if len(raw) < _HDR.size:
        return None
    crc, n = _HDR.unpack_from(raw, 0)
    if n == 0 or _HDR.size + n > min(len(raw), SLOT_SIZE):
        return None
    body = bytes(raw[_HDR.size: _HDR.size + n])
    if zlib.crc32(body) != crc:
        return None
    try:
        v = msgpack.unpackb(body, raw=False)
        if v[0] != _VERSION:
            return None
        # Fields a newer version added after ours are not ours to read.
        return Head(*v[1: 1 + len(Head._fields)])
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return None


def best(raw: bytes | memoryview) -> Head | None:
    """The current Head of a segment whose first bytes are `raw`: the valid slot with the
    higher sequence number."""
    heads = [decode(raw[o: o + SLOT_SIZE]) for o in SLOT_OFFSETS]
    valid = [h for h in heads if h is not None]
    return max(valid, key=lambda h: h.seq) if valid else None
