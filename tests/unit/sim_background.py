"""The CI seeds of the whole-cluster simulation, run in two background processes (each half
of the seeds) from the start of the test session, so that they use whatever CPU the
integration tests (mostly waiting on real processes and timeouts) leave idle on both
cores. `test_seeds[<n>]` then takes seed n's outcome from it: the same `run_seed`, the same checks, the same seed (a run
does not depend on the process it runs in: test_a_seed_replays_in_another_process). The
processes run at a lower priority (nice 10) so the real clusters' processes come first.

Off with `SIM_BACKGROUND=0` (then each test runs its seed itself, as before)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]


class BackgroundSeeds:
    def __init__(self, seeds: range) -> None:
        self.seeds = seeds
        self.results: dict[int, dict[str, Any]] = {}
        self.done = False
        self._cond = threading.Condition()
        cmd = [sys.executable, "-m", "distsync.testing.sim", "--jsonl",
               "--seeds", f"{seeds.start}:{seeds.stop}"]
        if hasattr(os, "nice"):
            cmd = ["nice", "-n", "10", *cmd]
        self.proc = subprocess.Popen(cmd, cwd=_REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     text=True)
        # A reader thread drains the pipe as lines come, so the process never blocks on it.
        self._reader = threading.Thread(target=self._read, name="sim-seeds", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                res = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.results[res["seed"]] = res
                self._cond.notify_all()
        self.proc.wait()
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def result(self, seed: int) -> dict[str, Any] | None:
        """Seed's outcome, waiting for it; None if the process ended without it (it died:
        the caller runs the seed itself)."""
        with self._cond:
            self._cond.wait_for(lambda: seed in self.results or self.done)
            return self.results.get(seed)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


_RUNS: list[BackgroundSeeds] = []


def start(seeds: range, processes: int = 2) -> None:
    if _RUNS or os.environ.get("SIM_BACKGROUND", "1") == "0":
        return
    step = -(-len(seeds) // processes)
    for lo in range(seeds.start, seeds.stop, step):
        _RUNS.append(BackgroundSeeds(range(lo, min(lo + step, seeds.stop))))


def result(seed: int) -> dict[str, Any] | None:
    for run in _RUNS:
        if seed in run.seeds:
            return run.result(seed)
    return None


def stop() -> None:
    for run in _RUNS:
        run.stop()
