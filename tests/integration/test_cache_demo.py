"""`distsync demo cache` (the README's cache command) runs and shows what it promises."""

import shutil
import subprocess
import sys


def test_cache_demo_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "distsync.cli", "demo", "cache"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    if shutil.which("redis-server"):
        assert "cache backend: redis-server" in out
    else:  # README: without redis-server on PATH, the embedded store stands in
        assert "no redis-server on PATH; using the embedded in-process store" in out
    assert "n1=I n2=I n3=E" in out, "the update invalidated the other copies"
    assert "silent upgrades: 1" in out
    assert "OK: every node saw the update at once" in out
