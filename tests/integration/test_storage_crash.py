"""Crash tests for Storage with real processes, real files and real fsync.

A child process (this same file run as a script) appends batches through Storage and prints a
line after each save() returns; the parent SIGKILLs it at a random moment and checks that
everything acknowledged survived, that nothing half-written shows up, and that the hard state
is one that was actually written. A second group of tests damages the WAL of a killed writer
by hand (torn last frame, flipped bit mid-log, garbage tail) and checks that SQLite's frame
checksums cut the log back to a clean, contiguous prefix.

Every entry's term and payload are a function of its index, so the parent can verify content
without keeping a copy.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distsync.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from distsync.storage import Storage

HERE = Path(__file__).resolve()
VOTE = "n1"


def term_of(index: int) -> int:
    return 1 + index // 700


def data_of(index: int) -> bytes:
    digest = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=16).digest()
    return digest * (index % 97)  # 0 .. ~1.5 KiB, varies so pages split unevenly


def type_of(index: int) -> EntryType:
    return EntryType.NOOP if index % 50 == 0 else EntryType.NORMAL


def entry_of(index: int) -> Entry:
    return Entry(index, term_of(index), type_of(index), data_of(index))


def snapshot_of(index: int) -> Snapshot:
    conf = ConfState(frozenset({"n1", "n2", "n3"}), frozenset(), (("n1", "h1:1"), ("n2", "h2:1")))
    return Snapshot(SnapshotMeta(index, term_of(index), conf), b"snap@%d" % index)


# --------------------------------------------------------------------------- child process


def child_main(argv: list[str]) -> None:
    """Writer loop. Protocol on stdout, one flushed line per event:
    ``try L T C`` before save() of entries up to L with HardState(T, VOTE, C); ``ack L`` after
    it returned; ``trysnap I`` / ``acksnap I`` around compact(); ``done`` after --batches."""
    data_dir, seed = argv[0], int(argv[1])
    no_checkpoint = "--no-checkpoint" in argv
    batches = int(argv[argv.index("--batches") + 1]) if "--batches" in argv else None
    rng = random.Random(seed)
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    store = Storage(data_dir)
    if no_checkpoint:
        # Test-only: keep every transaction in the WAL so the parent can damage chosen frames.
        store._conn.execute("PRAGMA wal_autocheckpoint=0")
    st = store.load()
    snap_index = st.snapshot.meta.index if st.snapshot else 0
    last = st.entries[-1].index if st.entries else snap_index
    commit = st.hard_state.commit
    done = 0
    while batches is None or done < batches:
        n = rng.choice((1, 2, 5, rng.randint(1, 300)))
        new_last = last + n
        commit = max(commit, new_last - rng.randint(0, 40))
        hs = HardState(term_of(new_last), VOTE, commit)
        say(f"try {new_last} {hs.term} {hs.commit}")
        store.save(hs, [entry_of(i) for i in range(last + 1, new_last + 1)])
        say(f"ack {new_last}")
        last = new_last
        done += 1
        if batches is None and rng.random() < 0.08 and commit > snap_index:
            say(f"trysnap {commit}")
            store.compact(snapshot_of(commit))
            say(f"acksnap {commit}")
            snap_index = commit
    say("done")
    time.sleep(600)  # wait to be killed, with the WAL left in place


def spawn(data_dir: Path, seed: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE), str(data_dir), str(seed), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill(proc: subprocess.Popen[bytes]) -> tuple[list[str], str]:
    """SIGKILL and collect what the child printed that the parent had not read yet: lines in
    the pipe were written after save() returned, so they are acknowledgements too."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # Not communicate(): it reads the raw pipe and would skip what readline() already buffered.
    assert proc.stdout is not None and proc.stderr is not None
    rest, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    complete = rest.decode().split("\n")[:-1]  # a line cut by the kill is not an ack
    return complete, err.decode()


# ------------------------------------------------------------------------------ checking


@dataclass
class Model:
    """What the parent knows is durable (acked) and what may or may not be (in flight)."""

    acked_last: int = 0
    acked_hs: HardState = field(default_factory=HardState)
    tried_last: int = 0
    tried_hs: HardState | None = None
    acked_snaps: set[int] = field(default_factory=lambda: {0})
    tried_snap: int | None = None
    acks: int = 0

    def feed(self, line: str) -> None:
        kind, *args = line.split()
        if kind == "try":
            last, term, commit = map(int, args)
            self.tried_last = last
            self.tried_hs = HardState(term, VOTE, commit)
        elif kind == "ack":
            assert int(args[0]) == self.tried_last
            self.acked_last = self.tried_last
            assert self.tried_hs is not None
            self.acked_hs, self.tried_hs = self.tried_hs, None
            self.acks += 1
        elif kind == "trysnap":
            self.tried_snap = int(args[0])
        elif kind == "acksnap":
            self.acked_snaps.add(int(args[0]))
            self.tried_snap = None
        else:
            assert kind == "done", line

    def check(self, data_dir: Path) -> None:
        with Storage(data_dir) as store:
            st = store.load()
        snap_index = st.snapshot.meta.index if st.snapshot else 0
        if st.snapshot is not None:
            assert st.snapshot == snapshot_of(snap_index)
        allowed_snaps = self.acked_snaps | ({self.tried_snap} if self.tried_snap else set())
        assert snap_index in allowed_snaps
        assert snap_index >= max(self.acked_snaps), "an acknowledged compaction was lost"
        # load() guarantees contiguity from snap_index + 1; check content of every entry.
        for i, e in enumerate(st.entries):
            assert e == entry_of(snap_index + 1 + i), f"entry {e.index} damaged"
        last = st.entries[-1].index if st.entries else snap_index
        assert last >= self.acked_last, f"acked index {self.acked_last} lost (log ends {last})"
        assert last <= max(self.tried_last, self.acked_last), "entries nobody wrote"
        allowed_hs = [self.acked_hs] + ([self.tried_hs] if self.tried_hs else [])
        assert st.hard_state in allowed_hs, (st.hard_state, allowed_hs)
        # From now on what was found is the baseline: the next writer continues from it.
        self.acked_last = self.tried_last = last
        self.acked_hs, self.tried_hs = st.hard_state, None
        self.acked_snaps = {snap_index}
        self.tried_snap = None


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_never_loses_acknowledged_writes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data_dir = tmp_path / "node"
    model = Model()
    total_acks = 0
    deadline = time.monotonic() + 15
    for rnd in range(6):
        proc = spawn(data_dir, seed * 1000 + rnd)
        target = rng.choice((0, rng.randint(1, 10), rng.randint(10, 80)))
        acks_before = model.acks
        try:
            if target == 0:
                # Kill at an arbitrary moment, possibly during start-up or WAL recovery.
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                while model.acks - acks_before < target:
                    line = proc.stdout.readline().decode()
                    assert line.endswith("\n"), f"child died: {proc.stderr.read().decode()}"
                    model.feed(line)
                time.sleep(rng.uniform(0.0, 0.01))  # land inside a save() some of the time
            lines, _ = kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for line in lines:
            model.feed(line)
        total_acks += model.acks - acks_before
        model.check(data_dir)
        assert time.monotonic() < deadline, "crash test too slow"
    assert total_acks > 0


def wal_frames(wal: Path) -> tuple[int, list[tuple[int, bool]]]:
    """(page_size, [(offset, is_commit)]) for every complete frame in the WAL file."""
    raw = wal.read_bytes()
    magic, _version, page_size = struct.unpack(">III", raw[:12])
    assert magic in (0x377F0682, 0x377F0683)
    frames = []
    off = 32
    while off + 24 + page_size <= len(raw):
        _pgno, db_size = struct.unpack(">II", raw[off : off + 8])
        frames.append((off, db_size != 0))
        off += 24 + page_size
    return page_size, frames


def write_batches(data_dir: Path, n: int) -> list[Model]:
    """Run a writer for n batches with checkpoints off, SIGKILL it, return the model after
    each batch (index 0: before the first one)."""
    proc = spawn(data_dir, 7, "--no-checkpoint", "--batches", str(n))
    models = [Model()]
    try:
        cur = Model()
        while True:
            line = proc.stdout.readline().decode()
            assert line.endswith("\n"), f"child died: {proc.stderr.read().decode()}"
            if line.startswith("done"):
                break
            cur.feed(line)
            if line.startswith("ack"):
                models.append(Model(acked_last=cur.acked_last, acked_hs=cur.acked_hs))
                models[-1].tried_last = cur.acked_last
        kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(models) == n + 1
    assert (data_dir / "raft.db-wal").stat().st_size > 0, "WAL was checkpointed away"
    return models


def save_frames(wal: Path, n: int) -> tuple[int, list[list[int]]]:
    """page size and, for each of the last n transactions (the n saves), its frame offsets:
    the frames after the previous commit frame, up to and including its own commit frame."""
    page_size, frames = wal_frames(wal)
    txs: list[list[int]] = []
    cur: list[int] = []
    for off, is_commit in frames:
        cur.append(off)
        if is_commit:
            txs.append(cur)
            cur = []
    assert len(txs) >= n
    return page_size, txs[-n:]


def flip_byte(wal: Path, pos: int) -> None:
    with wal.open("r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def assert_exactly(model: Model, data_dir: Path) -> None:
    with Storage(data_dir) as store:
        st = store.load()
    assert st.snapshot is None
    assert [e.index for e in st.entries] == list(range(1, model.acked_last + 1))
    assert st.entries == [entry_of(i) for i in range(1, model.acked_last + 1)]
    assert st.hard_state == model.acked_hs


N_BATCHES = 12


def test_torn_last_frame_drops_only_the_last_transaction(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    wal = data_dir / "raft.db-wal"
    size = wal.stat().st_size
    os.truncate(wal, size - 7)  # cut into the middle of the last (commit) frame
    assert_exactly(models[N_BATCHES - 1], data_dir)
    # And the store keeps working after recovery.
    with Storage(data_dir) as store:
        last = store.last_index()
        store.save(None, [entry_of(last + 1)])
    with Storage(data_dir) as store:
        assert store.load().entries[-1] == entry_of(last + 1)


def test_flipped_bit_in_last_frame_drops_only_the_last_transaction(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    wal = data_dir / "raft.db-wal"
    page_size, txs = save_frames(wal, N_BATCHES)
    flip_byte(wal, txs[-1][-1] + 24 + page_size // 2)
    assert_exactly(models[N_BATCHES - 1], data_dir)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_damaged_frame_mid_wal_cuts_log_to_prefix_before_it(tmp_path: Path, seed: int) -> None:
    """A bad frame inside transaction j invalidates j and everything after it (the checksums
    are cumulative): the store must come back with exactly the state after save j-1."""
    rng = random.Random(seed)
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    wal = data_dir / "raft.db-wal"
    page_size, txs = save_frames(wal, N_BATCHES)
    j = rng.randint(1, N_BATCHES)  # 1-based save number
    victim = rng.choice(txs[j - 1])
    flip_byte(wal, victim + 24 + rng.randrange(page_size))
    assert_exactly(models[j - 1], data_dir)


def test_garbage_after_last_commit_is_ignored(tmp_path: Path) -> None:
    """A partially written next transaction (frames that never got a valid commit) must not
    hide the transactions before it."""
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    wal = data_dir / "raft.db-wal"
    page_size, _ = wal_frames(wal)
    with wal.open("ab") as f:
        f.write(random.Random(9).randbytes(2 * (24 + page_size) + 100))
    assert_exactly(models[N_BATCHES], data_dir)


if __name__ == "__main__":
    child_main(sys.argv[1:])
