"""A new user's first commands fail in plain words: a node that dies is named with its exit
code and log tail, the cluster stops, the logs stay, and no command prints a traceback.

Each test runs the real console script (`distsync` next to this interpreter), as README's
commands do, against real node processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from distsync.local import LocalCluster, free_ports
from distsync.testing.harness import pids_where

DISTSYNC = str(Path(sys.executable).with_name("distsync"))


def _run(args: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([DISTSYNC, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def _up(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([DISTSYNC, "up", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            stdin=subprocess.DEVNULL)


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float = 60) -> str:
    """Lines of `proc`'s output up to the first that matches (or its end)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line) or time.monotonic() > deadline:
            break
    return "".join(seen)


@pytest.fixture(autouse=True)
def _console_script() -> None:
    assert os.path.exists(DISTSYNC), f"{DISTSYNC}: install the package (pip install -e .)"


def test_up_reports_a_node_that_dies_at_start_and_exits_non_zero(tmp_path: Path) -> None:
    # n2's data directory cannot be created (a file stands there): n2 crashes at start-up.
    (tmp_path / "n2").write_text("not a directory")
    proc = _up(["--nodes", "3", "--data-dir", str(tmp_path)])
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        _stop(proc, tmp_path)
    assert proc.returncode == 1, out
    assert re.search(r"node n2 \(127\.0\.0\.1:\d+\) died: exit code 1", out), out
    assert "NotADirectoryError" in out or "FileExistsError" in out, "the log tail is shown"
    assert "node logs kept in" in out and "cluster up" not in out
    assert "Traceback" not in out.split("last lines of")[0], "no traceback of the CLI itself"
    assert (tmp_path / "n2.log").read_text(), "the log stays"


def test_up_reports_a_node_killed_while_it_starts(tmp_path: Path) -> None:
    proc = _up(["--nodes", "3", "--data-dir", str(tmp_path)])
    try:
        pid = _wait_node_pid(tmp_path / "n3")
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=90)
    finally:
        _stop(proc, tmp_path)
    assert proc.returncode == 1, out
    assert re.search(r"node n3 \(127\.0\.0\.1:\d+\) died: killed by signal 9", out), out
    assert f"last lines of {tmp_path / 'n3.log'}" in out
    assert "stopping the other nodes" in out


def test_up_reports_a_node_that_dies_later(tmp_path: Path) -> None:
    proc = _up(["--nodes", "3", "--data-dir", str(tmp_path)])
    try:
        head = _read_until(proc, r"cluster up")
        assert "cluster up" in head, head
        assert re.search(r"n1\s+127\.0\.0\.1:\d+\s+(leader|follower)", head), head
        os.kill(_wait_node_pid(tmp_path / "n1"), signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    finally:
        _stop(proc, tmp_path)
    assert proc.returncode == 1, head + rest
    assert "node n1" in rest and "killed by signal 9" in rest, rest
    assert not _node_pids(tmp_path), "the other nodes were stopped"


def test_up_starts_from_a_directory_holding_a_folder_named_distsync(tmp_path: Path) -> None:
    """The parent of a checkout named `distsync`: that folder must not shadow the package."""
    (tmp_path / "distsync" / "node").mkdir(parents=True)
    (tmp_path / "distsync" / "README.md").write_text("a checkout\n")
    data = tmp_path / "data"
    proc = _up(["--nodes", "1", "--data-dir", str(data)], cwd=tmp_path)
    try:
        head = _read_until(proc, r"cluster up|error")
        assert "cluster up" in head, head
        # The operator console's address, and the page behind it.
        url = re.search(r"console: (http://127\.0\.0\.1:\d+/ui/)", head)
        assert url, head
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            assert page.headers.get_content_type() == "text/html"
            assert b"distsync console" in page.read()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        _stop(proc, tmp_path)
    assert proc.returncode == 0, head + rest
    assert "ImportError" not in (data / "n1.log").read_text()


def test_demo_keeps_the_logs_and_shows_why_when_every_node_dies() -> None:
    env = {**os.environ, "DISTSYNC_MAX_BODY_BYTES": "lots"}  # every node refuses to start
    proc = _run(["demo", "--nodes", "3"], env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert re.search(r"node n\d \(127\.0\.0\.1:\d+\) died: exit code 2", out), out
    assert "Invalid value for '--max-body-bytes'" in out, "the log tail says why"
    kept = re.search(r"node logs kept in (\S+)", out)
    assert kept, out
    logs = Path(kept.group(1))
    try:
        assert (logs / "n1.log").is_file()
    finally:
        import shutil

        shutil.rmtree(logs, ignore_errors=True)


def test_demo_help_lists_the_scenarios() -> None:
    from distsync.demo import SCENARIOS

    out = _run(["demo", "--help"]).stdout
    for name in SCENARIOS:
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), f"{name} missing:\n{out}"
    assert "Exit codes" in _run(["--help"]).stdout


def test_status_of_an_address_nobody_serves_is_one_line_and_exit_3() -> None:
    (port,) = free_ports(1)
    proc = _run(["status", "--addr", f"127.0.0.1:{port}"], timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: no node answered"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_status_with_a_wrong_token_says_the_token_was_refused() -> None:
    env = {"DISTSYNC_READ_TOKEN": "r" * 24, "DISTSYNC_WRITE_TOKEN": "w" * 24,
           "DISTSYNC_ADMIN_TOKEN": "a" * 24}
    with LocalCluster(1, env=env, token="a" * 24) as lc:
        lc.wait_ready(30)
        proc = _run(["status", "--addr", lc.addrs[0], "--token", "nope"], timeout=60)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: the node refused the token (401"), proc.stderr
        assert "Traceback" not in proc.stderr
        good = _run(["status", "--addr", lc.addrs[0], "--token", "r" * 24], timeout=60)
        assert good.returncode == 0 and "n1" in good.stdout, good.stderr


def _stop(proc: subprocess.Popen, data_dir: Path) -> None:
    """Whatever a failed assertion left running: `up` (gracefully, so it stops its nodes),
    then any node process still there."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in _node_pids(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _node_pids(data_dir: Path) -> list[int]:
    """Pids of node processes whose --data-dir is under `data_dir`."""
    prefix = str(data_dir).encode()
    return pids_where(lambda cmd: b"node" in cmd and any(a.startswith(prefix) for a in cmd))


def _wait_node_pid(node_dir: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _node_pids(node_dir)
        if pids:
            return pids[0]
        time.sleep(0.01)
    raise AssertionError(f"no node process for {node_dir} within {timeout}s")


def test_node_refuses_bad_addresses_and_ticks_as_usage_errors(tmp_path: Path) -> None:
    for bad in (["--listen", "nonsense"], ["--listen", "127.0.0.1:99999"],
                ["--tick-ms", "0"], ["--peers", "n1=host-without-port"]):
        proc = _run(["node", "--id", "n1", "--data-dir", str(tmp_path), *bad], timeout=30)
        assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)
        assert "Invalid value" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_node_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        addr = f"127.0.0.1:{held.getsockname()[1]}"
        proc = _run(["node", "--id", "n1", "--listen", addr, "--peers", f"n1={addr}",
                     "--data-dir", str(tmp_path)], timeout=60)
    errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or ln.startswith("error")]
    assert proc.returncode == 1, proc.stderr
    assert errors == [next(ln for ln in errors if "address already in use" in ln)], proc.stderr
    assert "Traceback" not in proc.stderr and "Unclosed" not in proc.stderr, proc.stderr
