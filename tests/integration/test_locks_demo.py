"""`distsync demo locks` (README's lock scenario) runs and its checks hold."""

import subprocess
import sys


def test_locks_demo_succeeds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "distsync.cli", "demo", "locks", "--nodes", "3", "--writes", "30"],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "FAILED" not in out, out[-4000:]
    for line in ("B waits in the FIFO queue", "the lock went to the waiter with a higher token",
                 "deadlock detected, the cycle names B and A", "OK: locks behaved"):
        assert line in out, out[-4000:]
    assert "uncontended acquire: avg" in out and "grants/s" in out
