"""Log records: one Raft entry each, with a chained CRC, in the manner of etcd's WAL.

A record is a 25-byte header (crc, data length, index, term, type) and the entry's data.
Its CRC-32 covers the header after the crc field and the data, seeded with the previous
record's CRC. The chain is what makes stale bytes harmless: after the log is truncated and
rewritten, an old record left behind further on no longer follows the new one's CRC, so a
scan stops there instead of resurrecting it. A scan stops at the first record that does not
check out; whether that is a torn last write or damage to a durable record is decided
against the durable mark (storage/faults.py), not here.

Zeros (a preallocated segment's unwritten space) end the log cleanly.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..raft.types import Entry, EntryType

_HEADER = struct.Struct("<IIQQB")
HEADER_SIZE = _HEADER.size  # 25
# Written after every batch: stale records after a rewritten tail are then not even read.
END_MARK = bytes(HEADER_SIZE)
_ENTRY_TYPES = {int(t): t for t in EntryType}
# A length past this is a damaged header, not a record (no entry is this large).
MAX_RECORD = 1 << 30


def encode(entries: list[Entry], prev_crc: int) -> tuple[bytes, list[int], list[int]]:
    """The records of `entries` chained from `prev_crc`: (bytes, offsets of each record
    relative to the start, each record's crc)."""
    out = bytearray()
    offs: list[int] = []
    crcs: list[int] = []
    crc = prev_crc
    pack = _HEADER.pack
    for e in entries:
        data = e.data
        rest = pack(0, len(data), e.index, e.term, int(e.type))[4:]
        crc = zlib.crc32(data, zlib.crc32(rest, crc))
        offs.append(len(out))
        crcs.append(crc)
        out += crc.to_bytes(4, "little")
        out += rest
        out += data
    return bytes(out), offs, crcs


@dataclass(slots=True)
class Scan:
    """What a scan of one segment's record area found."""

    entries: list[Entry]
    offsets: list[int]  # where each returned entry's record starts (absolute)
    crcs: list[int]
    end: int  # where the next record would start
    last_crc: int
    # The index of the first record that is there but does not check out (bad CRC, wrong
    # index, impossible length); None when the area simply ends (zeros, or the file ends).
    bad_index: int | None


def scan(buf: bytes | memoryview, start: int, first_index: int, prev_crc: int,
         stop_index: int | None = None, keep_from: int = 0) -> Scan:
    """Read records from `buf[start:]`, expecting `first_index` chained from `prev_crc`, up to
    `stop_index` (inclusive) if given. Entries below `keep_from` are checked but not kept."""
    entries: list[Entry] = []
    offs: list[int] = []
    crcs: list[int] = []
    pos, crc, expect = start, prev_crc, first_index
    n = len(buf)
    bad = None
    unpack = _HEADER.unpack_from
    while stop_index is None or expect <= stop_index:
        if pos + HEADER_SIZE > n:
            break  # the file ends (was cut) inside a header: the log ends here
        stored, length, index, term, typ = unpack(buf, pos)
        if stored == 0 and length == 0 and index == 0:
            break
        if index != expect or length > MAX_RECORD:
            bad = expect
            break
        if pos + HEADER_SIZE + length > n:
            break  # the file ends inside this record: cut, not overwritten
        hdr = buf[pos + 4: pos + HEADER_SIZE]
        data = bytes(buf[pos + HEADER_SIZE: pos + HEADER_SIZE + length])
        got = zlib.crc32(data, zlib.crc32(hdr, crc))
        t = _ENTRY_TYPES.get(typ)
        if got != stored or t is None:
            bad = expect
            break
        if index >= keep_from:
            entries.append(Entry(index, term, t, data))
            offs.append(pos)
            crcs.append(stored)
        crc = stored
        pos += HEADER_SIZE + length
        expect += 1
    return Scan(entries, offs, crcs, pos, crc, bad)
