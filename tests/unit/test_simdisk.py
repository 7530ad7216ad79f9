"""The simulator's disk keeps the real store's contract: the same random sequence of saves
(entries, conflicting suffixes, hard states, installed snapshots) and compactions, applied
to the real SQLite Storage and to a DiskImage, loads back the same; and a SimDisk crash keeps
either nothing or a prefix of the write in flight. Otherwise the simulation would test the
driver against a disk that behaves unlike the one it runs on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from distsync.storage import Storage
from distsync.testing.simdisk import DiskFaults, DiskImage, SimDisk

CONF = ConfState(frozenset({"n1"}))


def _ops(rng: random.Random, n: int) -> list[tuple]:
    """Saves as a Raft node makes them: entries continue or overwrite a suffix of the log,
    snapshots move forward."""
    ops: list[tuple] = []
    last, term, snap = 0, 1, 0
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            first = rng.randint(max(snap + 1, last - 3), last + 1)
            term += rng.random() < 0.3
            k = rng.randint(1, 4)
            ents = [Entry(i, term, data=f"{i}.{term}".encode())
                    for i in range(first, first + k)]
            hs = HardState(term, "n1", 0) if rng.random() < 0.5 else None
            ops.append(("save", hs, ents, None))
            last = first + k - 1
        elif r < 0.8 and last > snap:
            idx = rng.randint(snap + 1, last)
            ops.append(("compact", Snapshot(SnapshotMeta(idx, term, CONF), b"s%d" % idx)))
            snap = idx
        else:
            idx = rng.randint(snap + 1, last + 3)
            ops.append(("save", HardState(term, None, idx), [],
                        Snapshot(SnapshotMeta(idx, term + 1, CONF), b"i%d" % idx)))
            # In a newer term than any entry, so the stores drop the whole log.
            snap, term, last = idx, term + 1, idx
    return ops


def _apply(target, op: tuple) -> None:
    if op[0] == "save" and isinstance(target, Storage):
        target.save(op[1], op[2], op[3])
    elif op[0] == "save":
        target.write(op[1], op[2], op[3])
    else:
        target.compact(op[1])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_the_in_memory_disk_loads_what_sqlite_loads(tmp_path_factory, seed: int) -> None:
    rng = random.Random(seed)
    d = tmp_path_factory.mktemp("disk")
    image = DiskImage()
    with Storage(Path(d)) as real:
        for op in _ops(rng, 30):
            _apply(real, op)
            _apply(image, op)
            got = real.load()
            assert (got.hard_state, got.snapshot, got.entries) == (
                image.hard_state, image.snapshot, image.entries), op


@pytest.mark.parametrize("seed", range(20))
def test_a_crash_keeps_nothing_or_a_prefix_of_the_write_in_flight(seed: int) -> None:
    image = DiskImage()
    disk = SimDisk(image, random.Random(seed), DiskFaults(), lambda _: None)
    disk.save(HardState(1, "n1", 0), [Entry(1, 1), Entry(2, 1)])
    pending = [Entry(i, 1) for i in range(3, 9)]
    disk.in_flight = (HardState(2, "n1", 0), pending, None)
    disk.crash()
    assert image.hard_state == HardState(1, "n1", 0)  # the unsynced hard state is gone
    kept = image.entries[2:]
    assert image.entries[:2] == [Entry(1, 1), Entry(2, 1)]
    assert kept == pending[: len(kept)]
    with pytest.raises(RuntimeError):
        disk.load()  # a crashed store is closed; a restart opens a new one on the image
