"""The CI seeds of the whole-cluster simulation, run in two background processes (each half
of the seeds) from the start of the test session, so that they use whatever CPU the
integration tests (mostly waiting on real processes and timeouts) leave idle on both
cores. `test_seeds[<n>]` then takes seed n's outcome from it: the same `run_seed`, the same
checks, the same seed (a run does not depend on the process it runs in:
test_a_seed_replays_in_another_process). The processes run at a lower priority (nice 10) so
the real clusters' processes come first.

Each process writes one JSON line per seed to a file in a directory of the session's own,
and a `.done` file when it has ended, so that any process of the session can read the
outcomes. That matters under pytest-xdist (README's test command runs two workers): the
controller owns the processes (tests/conftest.py starts them once the workers have
collected, and passes the directory to every worker), and whichever worker runs
`test_seeds[n]` reads seed n from the files. Without xdist the session's one process starts
them itself (tests/unit/conftest.py).

Off with `SIM_BACKGROUND=0` (then each test runs its seed itself, as before)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
# The tests that read the seeds' outcomes: they run last (unit/conftest.py), and under
# xdist each is a unit of work of its own (tests/conftest.py).
SEEDS_TEST = "tests/unit/test_sim.py::test_seeds["  # collected: the seeds run in the background
TAKES_BACKGROUND_SEEDS = (SEEDS_TEST,
                           "tests/unit/test_sim.py::test_every_fault_happens_in_the_ci_seeds[",
                           "tests/unit/test_sim.py::test_faults_are_spread_over_the_ci_seeds")
# How often a reader looks again at a file that does not have its seed yet.
_POLL_S = 0.05


def ci_seeds() -> range:
    """`SIM_SEEDS` (`lo:hi`, or one seed), default 0:500."""
    lo, _, hi = os.environ.get("SIM_SEEDS", "0:500").partition(":")
    return range(int(lo), int(hi)) if hi else range(int(lo), int(lo) + 1)


def enabled() -> bool:
    return os.environ.get("SIM_BACKGROUND", "1") != "0"


class BackgroundSeeds:
    """One process running `seeds`, its lines going to `<dir>/seeds-<lo>-<hi>.jsonl`."""

    def __init__(self, seeds: range, directory: Path) -> None:
        stem = directory / f"seeds-{seeds.start}-{seeds.stop}"
        self.out, self.done = stem.with_suffix(".jsonl"), stem.with_suffix(".done")
        cmd = [sys.executable, "-m", "distsync.testing.sim", "--jsonl",
               "--seeds", f"{seeds.start}:{seeds.stop}"]
        if hasattr(os, "nice"):
            cmd = ["nice", "-n", "10", *cmd]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=_REPO, stdout=out,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        # Marks the end for readers in other processes, which cannot wait on this child.
        self._waiter = threading.Thread(target=self._wait, name="sim-seeds", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        self.proc.wait()
        self.done.touch()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._waiter.join(timeout=5)


class Reader:
    """The outcomes in one `.jsonl` file, read as it grows."""

    def __init__(self, out: Path, seeds: range) -> None:
        self.out, self.seeds = out, seeds
        self.done = out.with_suffix(".done")
        self.results: dict[int, dict[str, Any]] = {}
        self._pos = 0

    def _read_more(self) -> None:
        with open(self.out, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time, whole
        self._pos += end
        for line in data[:end].splitlines():
            try:
                res = json.loads(line)
            except ValueError:
                continue
            self.results[res["seed"]] = res

    def result(self, seed: int) -> dict[str, Any] | None:
        """Seed's outcome, waiting for it; None if the process ended without it (it died or
        was stopped: the caller runs the seed itself)."""
        while seed not in self.results:
            ended = self.done.exists()  # looked at before the last read, so none is lost
            self._read_more()
            if seed in self.results or ended:
                break
            time.sleep(_POLL_S)
        return self.results.get(seed)


_DIR: Path | None = None
_OWNED = False  # whether this process made _DIR (and removes it at the end)
_RUNS: list[BackgroundSeeds] = []
_READERS: list[Reader] = []


def use_directory(directory: str | Path) -> None:
    """Read outcomes from `directory` (a worker, given the controller's)."""
    global _DIR
    _DIR = Path(directory)


def directory() -> Path:
    """This session's directory, made on first use."""
    global _DIR, _OWNED
    if _DIR is None:
        _DIR, _OWNED = Path(tempfile.mkdtemp(prefix="distsync-sim-seeds-")), True
    return _DIR


def start(seeds: range, processes: int = 2) -> None:
    if _RUNS or not enabled():
        return
    step = -(-len(seeds) // processes)
    for lo in range(seeds.start, seeds.stop, step):
        _RUNS.append(BackgroundSeeds(range(lo, min(lo + step, seeds.stop)), directory()))


def _readers() -> list[Reader]:
    if not _READERS and _DIR is not None:
        for out in sorted(_DIR.glob("seeds-*.jsonl")):
            _, lo, hi = out.stem.split("-")
            _READERS.append(Reader(out, range(int(lo), int(hi))))
    return _READERS


def result(seed: int) -> dict[str, Any] | None:
    for reader in _readers():
        if seed in reader.seeds:
            return reader.result(seed)
    return None


def stop() -> None:
    """Stop the processes this process started and remove their files."""
    for run in _RUNS:
        run.stop()
    _RUNS.clear()
    if _OWNED and _DIR is not None and _DIR.exists():
        shutil.rmtree(_DIR, ignore_errors=True)
