"""An in-memory Raft store with the faults of a real disk, for the simulator.

It keeps the same contract as storage/sqlite_store.py (one atomic, durable transaction per
`save`; the same truncation rules), and adds what a disk does to a node:

* a crash loses the write that was in flight (not yet fsynced), or keeps a torn prefix of
  its entries (a store with checksums keeps whole records only: a prefix, never a hole);
* EIO on fsync: the write may or may not have reached the disk, and the store is poisoned,
  so the node stops (the driver's `on_fatal`); after a restart `load` shows what was kept;
* ENOSPC: nothing is written, the store is poisoned likewise;
* slow fsync: SimIO delays the save in virtual time.

And what a disk (or an operator) does to a stopped node's files (`damage`, applied by the
simulation's nemesis): a log cut by N records, a flipped bit in a record in the middle, a
lost snapshot, a lost hard state, an emptied data directory. The image keeps the durable
high-water mark a real store keeps apart from its log, so `load` tells these storage faults
(reported in PersistedState.fault, as the real store does) from a crash's torn write.

The durable image outlives the store object: a restarted node opens a new SimDisk on the
same `DiskImage`, as a restarted process opens the same files.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..raft.types import Entry, HardState, PersistedState, Snapshot, StorageFault


@dataclass
class DiskFaults:
    """Probabilities per save (eio, enospc) and the fsync delay range (seconds)."""

    eio: float = 0.0
    enospc: float = 0.0
    fsync_min: float = 0.0001
    fsync_max: float = 0.002
    slow_fsync: float = 0.0  # chance of a stall of up to `slow_max`
    slow_max: float = 0.2
    # Chance that power fails while a save is in flight (FoundationDB's "buggify": aim a
    # rare fault at the moment it matters; a crash at a random time seldom lands there).
    crash_in_fsync: float = 0.0


@dataclass
class DiskImage:
    """What is on the platter: survives crashes and restarts."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # contiguous, after the snapshot
    # The store's durable high-water mark, kept apart from the log: the log's last index
    # after the latest write. A log found shorter at load has lost fsynced records.
    durable_index: int = 0
    # Damage `load` detects (as checksums and the mark would): the first corrupt record,
    # a lost snapshot file, a lost hard state.
    corrupt_at: int = 0
    snapshot_lost: bool = False
    hard_state_lost: bool = False

    def snap_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index()

    def term_at(self, index: int) -> int | None:
        si = self.snap_index()
        if index == si:
            return self.snapshot.meta.term if self.snapshot is not None else 0
        k = index - si - 1
        if 0 <= k < len(self.entries):
            return self.entries[k].term
        return None

    def write(self, hs: HardState | None, entries: list[Entry],
              snapshot: Snapshot | None) -> None:
        """The same rules as Storage._save_locked, as one atomic step."""
        if snapshot is not None:
            m = snapshot.meta
            if m.index < self.snap_index():
                raise ValueError(f"snapshot at {m.index} older than {self.snap_index()}")
            if self.term_at(m.index) == m.term:
                self.entries = [e for e in self.entries if e.index > m.index]
            else:
                self.entries = []
            self.snapshot = snapshot
        si = self.snap_index()
        entries = [e for e in entries if e.index > si]
        if entries:
            first = entries[0].index
            if first > self.last_index() + 1:
                raise ValueError(f"entries start at {first} but the log ends at "
                                 f"{self.last_index()}")
            self.entries = [e for e in self.entries if e.index < first] + list(entries)
        if hs is not None:
            self.hard_state = hs
        self.durable_index = self.last_index()

    def compact(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index < self.snap_index():
            return
        self.entries = [e for e in self.entries if e.index > snapshot.meta.index]
        self.snapshot = snapshot
        self.durable_index = max(self.durable_index, self.last_index())

    def take_fault(self) -> StorageFault | None:
        """What a store finds at load: drop what cannot be trusted, and say what was lost.
        (After it, the node keeps the fault in its hard state until it is repaired.)"""
        mark = self.durable_index
        fault = None
        if self.snapshot_lost:
            self.snapshot_lost = False
            self.entries = []  # they follow a snapshot that is gone
            fault = StorageFault("lost_snapshot", mark, 1, "the snapshot file is gone")
        if self.corrupt_at:
            bad, self.corrupt_at = self.corrupt_at, 0
            self.entries = [e for e in self.entries if e.index < bad]
            fault = fault or StorageFault("corrupt_entry", mark, bad,
                                          f"record {bad} fails its checksum")
        if self.hard_state_lost:
            self.hard_state_lost = False
            fault = fault or StorageFault("lost_hard_state", mark, 0, "the hard state is gone")
        if fault is None and self.last_index() < mark:
            fault = StorageFault("lost_tail", mark, self.last_index() + 1,
                                 f"the log ends at {self.last_index()}, the mark says {mark}")
        return fault


# -- damage to a stopped node's disk (the nemesis's; each returns False if it cannot apply) --

def cut_tail(im: DiskImage, n: int) -> bool:
    """The last `n` fsynced records are gone (a truncated file; not a restored backup,
    whose heads are as old as its records: that is caught by start chains, starts.py)."""
    if len(im.entries) < 1:
        return False
    del im.entries[-min(n, len(im.entries)):]
    return True


def flip_bit(im: DiskImage, rng: random.Random) -> bool:
    """A bit flips in a record in the middle of the log: its checksum fails."""
    if len(im.entries) < 3:
        return False
    im.corrupt_at = im.entries[rng.randrange(1, len(im.entries) - 1)].index
    return True


def lose_snapshot(im: DiskImage) -> bool:
    if im.snapshot is None:
        return False
    im.snapshot = None
    im.snapshot_lost = True
    return True


def lose_hard_state(im: DiskImage) -> bool:
    if im.hard_state.term == 0:
        return False
    im.hard_state = HardState()
    im.hard_state_lost = True
    return True


def wipe(im: DiskImage) -> bool:
    """An empty data directory (a replaced disk): the mark is gone too, so the store sees
    a new node, and only the peers can tell it is not."""
    im.hard_state, im.snapshot, im.entries = HardState(), None, []
    im.durable_index = im.corrupt_at = 0
    im.snapshot_lost = im.hard_state_lost = False
    return True


DAMAGE_KINDS = ("cut_tail", "flip_bit", "lose_snapshot", "lose_hard_state", "wipe")


def damage(im: DiskImage, kind: str, rng: random.Random) -> bool:
    if kind == "cut_tail":
        return cut_tail(im, rng.randint(1, 8))
    if kind == "flip_bit":
        return flip_bit(im, rng)
    if kind == "lose_snapshot":
        return lose_snapshot(im)
    if kind == "lose_hard_state":
        return lose_hard_state(im)
    if kind == "wipe":
        return wipe(im)
    raise ValueError(kind)


class SimDisk:
    """One open store over a DiskImage (see the module docstring)."""

    def __init__(self, image: DiskImage, rng: random.Random, faults: DiskFaults,
                 trace: Callable[[str], None],
                 counts: collections.Counter[str] | None = None) -> None:
        self.counts = counts if counts is not None else collections.Counter()
        self.image = image
        self.rng = rng
        self.faults = faults
        self.trace = trace
        self.failed: BaseException | None = None
        self.closed = False
        # The save in flight (called by SimIO before its fsync delay), lost on a crash.
        self.in_flight: tuple[HardState | None, list[Entry], Snapshot | None] | None = None
        self.saves = 0

    def _usable(self) -> None:
        if self.closed:
            raise RuntimeError("store closed")
        if self.failed is not None:
            raise OSError(errno.EIO, f"store poisoned by {self.failed!r}")

    def load(self) -> PersistedState:
        self._usable()
        im = self.image
        fault = im.take_fault()
        return PersistedState(im.hard_state, im.snapshot, list(im.entries), fault)

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        self._usable()
        if hard_state is None and not entries and snapshot is None:
            return
        self.saves += 1
        f = self.faults
        r = self.rng.random()
        if r < f.enospc:
            self.failed = OSError(errno.ENOSPC, "No space left on device")
            self.counts["disk.enospc"] += 1
            self.trace("disk ENOSPC: nothing written, store poisoned")
            raise self.failed
        if r < f.enospc + f.eio:
            kept = self.rng.random() < 0.5
            if kept:
                self.image.write(hard_state, entries, snapshot)
            self.failed = OSError(errno.EIO, "Input/output error")
            self.counts["disk.eio"] += 1
            self.trace(f"disk EIO on fsync (write {'kept' if kept else 'lost'}), poisoned")
            raise self.failed
        self.image.write(hard_state, entries, snapshot)

    def compact(self, snapshot: Snapshot) -> None:
        self._usable()
        self.image.compact(snapshot)

    def close(self) -> None:
        self.closed = True

    def crash(self) -> None:
        """Power loss: the write in flight is lost, or a torn prefix of its entries stays."""
        pending, self.in_flight = self.in_flight, None
        self.closed = True
        if pending is None:
            return
        hs, entries, snap = pending
        if snap is None and entries and self.rng.random() < 0.5:
            keep = self.rng.randrange(len(entries) + 1)
            try:
                self.image.write(None, entries[:keep], None)
            except ValueError:
                keep = 0
            self.trace(f"crash tore the last write: kept {keep}/{len(entries)} entries")
            self.counts["disk.torn"] += 1
        else:
            self.trace("crash lost the write in flight")
            self.counts["disk.lost_unsynced"] += 1


class SimIO:
    """The IORunner for a SimDisk: a save takes virtual time (the fsync), during which a
    crash loses it. `inline` is chosen per node so both of the driver's save paths run."""

    def __init__(self, disk: SimDisk, inline: bool,
                 power_loss: Callable[[], None] | None = None) -> None:
        self.disk = disk
        self.inline = inline
        self.power_loss = power_loss

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        d, f = self.disk, self.disk.faults
        delay = d.rng.uniform(f.fsync_min, f.fsync_max)
        if f.slow_fsync and d.rng.random() < f.slow_fsync:
            delay = d.rng.uniform(f.fsync_max, f.slow_max)
            d.counts["disk.slow_fsync"] += 1
        if fn == d.save:
            d.in_flight = (args[0], list(args[1]), args[2] if len(args) > 2 else None)
            if self.power_loss is not None and d.rng.random() < f.crash_in_fsync:
                # In nobody's process: the power cut is not the node's own doing.
                asyncio.get_running_loop().call_later(d.rng.uniform(0, delay),
                                                      self.power_loss,
                                                      context=contextvars.Context())
        try:
            await asyncio.sleep(delay)
            if d.closed:  # crashed during the fsync: the write never happened
                raise OSError(errno.EIO, "crashed")
            d.in_flight = None
            return fn(*args)
        finally:
            if d.in_flight is not None and not d.closed:
                d.in_flight = None

    def close(self) -> None:
        pass
