"""The CI seeds of the whole-cluster simulation, run in one background process from the
start of the test session, so that they use the second core while the integration tests
(mostly waiting on real processes and timeouts) run on the first. `test_seeds[<n>]` then
takes seed n's outcome from it: the same `run_seed`, the same checks, the same seed (a run
does not depend on the process it runs in: test_a_seed_replays_in_another_process). The
process runs at a lower priority (nice 10) so the real clusters' processes come first.

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


_RUN: BackgroundSeeds | None = None


def start(seeds: range) -> None:
    global _RUN
    if _RUN is None and os.environ.get("SIM_BACKGROUND", "1") != "0":
        _RUN = BackgroundSeeds(seeds)


def result(seed: int) -> dict[str, Any] | None:
    return _RUN.result(seed) if _RUN is not None else None


def stop() -> None:
    if _RUN is not None:
        _RUN.stop()
