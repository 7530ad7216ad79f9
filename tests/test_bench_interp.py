"""The interpreter distsync's nodes run on: LocalCluster's `python`, and what a benchmark
says about it (benchmarks/interp.py). Real interpreters and real node processes; no timing
is asserted."""

from __future__ import annotations

import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import distsync
from distsync.local import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import ab  # noqa: E402
from benchmarks.interp import describe_python, python_summary  # noqa: E402


def test_describe_python_tells_what_this_interpreter_is() -> None:
    info = describe_python(sys.executable)
    with open("/proc/self/maps") as f:
        shared = "libpython" in f.read()
    assert info["version"] == platform.python_version()
    assert info["libpython_shared"] is shared
    assert Path(info["distsync"]).resolve() == Path(distsync.__path__[0]).resolve()
    line = python_summary(info, ROOT)
    assert line.startswith(f"{sys.executable} (CPython {platform.python_version()}, ")
    assert ("shared libpython" if shared else "libpython linked in") in line
    if Path(info["distsync"]).resolve() == (ROOT / "node" / "distsync").resolve():
        assert "WARNING" not in line
    assert "WARNING: it imports distsync from" in python_summary(info, ROOT / "elsewhere")


def test_a_debian_packaged_interpreter_is_named_as_such() -> None:
    """Debian builds its python3.x with PGO and LTO but keeps those flags out of sysconfig
    (its changelog), so "configure without --enable-optimizations" alone misleads; the
    header says which kind of build it is."""
    info = {"path": "/usr/bin/python3.11", "implementation": "CPython", "version": "3.11.2",
            "libpython_shared": False, "configure_optimizations": False,
            "configure_lto": False, "distsync": str(ROOT / "node" / "distsync"),
            "debian_package": True}
    line = python_summary(info, ROOT)
    assert "Debian's package, built with PGO and LTO outside configure" in line
    assert "Debian" not in python_summary({**info, "debian_package": False}, ROOT)
    # this interpreter (a venv or pyenv build, not Debian's): the probe says so
    assert describe_python(sys.executable)["debian_package"] is (
        sys.base_prefix == "/usr" and Path(
            f"/usr/share/doc/python{sys.version_info[0]}.{sys.version_info[1]}"
            "/changelog.Debian.gz").exists())


def test_an_interpreter_without_distsync_is_refused_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True, timeout=120)
    bare = tmp_path / "bare" / "bin" / "python"
    with pytest.raises(SystemExit, match="cannot import distsync.*install it there"):
        describe_python(bare)
    with pytest.raises(SystemExit, match="cannot run it"):
        describe_python(tmp_path / "no-such-python")
    with pytest.raises(SystemExit, match="cannot import distsync"):
        ab.parse_args(["--b-python", str(bare)])


def test_local_cluster_runs_its_nodes_on_the_interpreter_it_is_given(tmp_path: Path) -> None:
    """A wrapper interpreter that leaves a mark, then runs this one: the node serves, and
    the mark shows it started through the wrapper."""
    marks = tmp_path / "marks"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {marks}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    with LocalCluster(1, data_dir=tmp_path / "data", python=wrapper) as lc:
        assert lc.python == str(wrapper)
        lc.wait_ready(30)
        pid = lc.nodes["n1"].proc.pid
        assert marks.read_text().split() == [str(pid)]  # exec kept the pid
    assert LocalCluster(1, data_dir=tmp_path / "d2").python == sys.executable


def test_the_floor_runs_on_the_nodes_interpreter_and_other_peers_ignore_it(
        tmp_path: Path) -> None:
    from benchmarks.peers import make_peer

    assert make_peer("floor", 3, tmp_path, "/opt/py/bin/python").python == "/opt/py/bin/python"
    assert make_peer("floor", 3, tmp_path).python == sys.executable
    etcd = make_peer("etcd", 3, tmp_path, "/opt/py/bin/python")  # a Go binary: not its concern
    assert not hasattr(etcd, "python")
