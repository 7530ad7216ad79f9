"""Crash tests for Storage with real processes, real files and real fsync.

A child process (this same file run as a script) appends batches through Storage and prints a
line after each save() returns; the parent SIGKILLs it at a random moment and checks that
everything acknowledged survived, that nothing half-written shows up, and that the hard state
is one that was actually written, and that a crash is never reported as a storage fault. A
second group damages the segment of a killed writer by hand: a torn last record is dropped
silently, while a damaged record the writer had made durable is reported as a fault, never
silently cut away (that silent cut is how acknowledged writes used to be lost).

Every entry's term and payload are a function of its index, so the parent can verify content
without keeping a copy.
"""

from __future__ import annotations

import hashlib
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
    no_confirm = "--no-confirm" in argv
    batches = int(argv[argv.index("--batches") + 1]) if "--batches" in argv else None
    rng = random.Random(seed)
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    # --no-confirm: the durable mark stays where the last save left it (one batch behind),
    # as after a crash right after that save.
    store = Storage(data_dir, confirm=not no_confirm)
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
        assert st.fault is None, f"a crash was taken for a storage fault: {st.fault}"
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


def write_batches(data_dir: Path, n: int) -> list[Model]:
    """Run a writer for n batches with the idle confirm off, SIGKILL it, return the model
    after each batch (index 0: before the first one)."""
    proc = spawn(data_dir, 7, "--no-confirm", "--batches", str(n))
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
    return models


def record_spans(data_dir: Path) -> list[tuple[int, int]]:
    """(start, end) of every record in the one segment, in order (a scan of the format)."""
    from distsync.storage.mark import DATA_START
    from distsync.storage.records import HEADER_SIZE

    (seg,) = data_dir.glob("*.seg")
    raw = seg.read_bytes()
    spans, pos = [], DATA_START
    while True:
        crc, length, index = struct.unpack_from("<IIQ", raw, pos)
        if index == 0:
            return spans
        spans.append((pos, pos + HEADER_SIZE + length))
        pos += HEADER_SIZE + length


def segment(data_dir: Path) -> Path:
    (seg,) = data_dir.glob("*.seg")
    return seg


def flip_byte(path: Path, pos: int) -> None:
    with path.open("r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def assert_exactly(model: Model, data_dir: Path) -> None:
    with Storage(data_dir) as store:
        st = store.load()
    assert st.fault is None
    assert st.snapshot is None
    assert [e.index for e in st.entries] == list(range(1, model.acked_last + 1))
    assert st.entries == [entry_of(i) for i in range(1, model.acked_last + 1)]
    assert st.hard_state == model.acked_hs


N_BATCHES = 12


def test_torn_last_record_drops_only_the_last_save(tmp_path: Path) -> None:
    """The last save's records were in flight at the crash (its head slot may or may not
    have landed): cutting into them is a torn write, dropped without a fault."""
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    spans = record_spans(data_dir)
    start, end = spans[-1]
    flip_byte(segment(data_dir), start + (end - start) // 2)  # torn: half old, half new
    with Storage(data_dir) as store:
        st = store.load()
    assert st.fault is None
    last = models[N_BATCHES].acked_last
    assert st.entries == [entry_of(i) for i in range(1, last)]
    # And the store keeps working after recovery.
    with Storage(data_dir) as store:
        last = store.last_index()
        store.save(None, [entry_of(last + 1)])
    with Storage(data_dir) as store:
        assert store.load().entries[-1] == entry_of(last + 1)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_damaged_durable_record_is_a_fault_not_a_shorter_log(tmp_path: Path, seed: int) -> None:
    """A bad record among those the writer had made durable: load() says so (corrupt_entry,
    naming the index) and returns only the entries before it."""
    rng = random.Random(seed)
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    durable = models[N_BATCHES - 1].acked_last  # the mark lags one save (no confirm)
    spans = record_spans(data_dir)
    victim = rng.randrange(durable)  # 0-based: entry victim + 1
    start, end = spans[victim]
    flip_byte(segment(data_dir), rng.randrange(start + 4, end))
    with Storage(data_dir) as store:
        st = store.load()
    assert st.fault is not None and st.fault.kind == "corrupt_entry", st.fault
    assert st.fault.first_bad_index == victim + 1
    assert st.fault.durable_index == durable
    assert st.entries == [entry_of(i) for i in range(1, victim + 1)]


def test_garbage_after_the_last_record_is_ignored(tmp_path: Path) -> None:
    """Bytes after the end mark (a later, never completed write) do not hide the records
    before them."""
    data_dir = tmp_path / "node"
    models = write_batches(data_dir, N_BATCHES)
    _, end = record_spans(data_dir)[-1]
    with segment(data_dir).open("r+b") as f:
        f.seek(end + 40)
        f.write(random.Random(9).randbytes(3000))
    assert_exactly(models[N_BATCHES], data_dir)


if __name__ == "__main__":
    child_main(sys.argv[1:])
