"""An in-memory Raft store with the faults of a real disk, for the simulator.

It keeps the same contract as storage/sqlite_store.py (one atomic, durable transaction per
`save`; the same truncation rules), and adds what a disk does to a node:

* a crash loses the write that was in flight (not yet fsynced), or keeps a torn prefix of
  its entries (a store with checksums keeps whole records only: a prefix, never a hole);
* EIO on fsync: the write may or may not have reached the disk, and the store is poisoned,
  so the node stops (the driver's `on_fatal`); after a restart `load` shows what was kept;
* ENOSPC: nothing is written, the store is poisoned likewise;
* slow fsync: SimIO delays the save in virtual time.

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

from ..raft.types import Entry, HardState, PersistedState, Snapshot


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

    def compact(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index < self.snap_index():
            return
        self.entries = [e for e in self.entries if e.index > snapshot.meta.index]
        self.snapshot = snapshot


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
        return PersistedState(im.hard_state, im.snapshot, list(im.entries))

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
