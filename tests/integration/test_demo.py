"""README's first command runs `distsync demo`; this keeps it true."""

import subprocess
import sys


def test_demo_command_succeeds_and_reports_no_loss() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "distsync.cli", "demo", "--nodes", "3", "--writes", "60"],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # README promises a restart of the killed leader; the demo says when it does it.
    killed = out.split("SIGKILL leader ", 1)[1].split()[0]
    assert f"restarting {killed} from its data directory" in out, out[-4000:]
    assert "acknowledged writes present after failover: 120/120" in out, out[-4000:]
    assert "OK: every acknowledged write survived" in out
