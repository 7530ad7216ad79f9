"""`distsync demo queue` (README's queue demo) runs and shows what it promises."""

import subprocess
import sys


def test_queue_demo_shows_fifo_redelivery_and_dead_letter() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "distsync.cli", "demo", "queue", "--nodes", "3"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "FIFO order: yes" in out, out[-4000:]
    assert "task_006 delivery 2" in out, out[-4000:]
    assert "demo.dlq has task_007: from queue 'demo' after 2 deliveries" in out, out[-4000:]
    assert "latency (median / max): enqueue" in out
    assert "OK: FIFO, redelivery and dead-lettering as documented" in out
