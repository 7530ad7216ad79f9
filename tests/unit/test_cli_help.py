"""`distsync bench --help` and `distsync chaos --help` show how to call them through
`distsync` (issue 20: they printed `run.py` and `python -m distsync.testing.chaos`)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("cmd", ["bench", "chaos"])
def test_help_shows_distsync_usage(cmd: str) -> None:
    res = subprocess.run([sys.executable, "-m", "distsync.cli", cmd, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: distsync {cmd} "), res.stdout[:200]
