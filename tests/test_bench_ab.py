"""benchmarks/ab.py, the interleaved A/B of two builds: what each build's node processes
run, and one real run end to end. Shapes only: no timing is asserted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import ab  # noqa: E402


def test_build_env_puts_the_tree_first_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = ab.build_env({"X": "1"}, ROOT)
    assert env["X"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str((ROOT / "node").resolve()), "/elsewhere"]
    assert ab.build_env({}, None) == {}


def test_build_env_refuses_a_directory_that_is_not_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a distsync checkout"):
        ab.build_env({}, tmp_path)


def test_same_build_twice_is_refused() -> None:
    with pytest.raises(SystemExit):
        ab.parse_args(["--rounds", "2"])


def test_ab_runs_each_build_from_its_own_tree(tmp_path: Path) -> None:
    """B runs a copy of the package that leaves a mark when its node processes import it;
    A runs the working tree, which does not."""
    tree = tmp_path / "b"
    shutil.copytree(ROOT / "node" / "distsync", tree / "node" / "distsync",
                    ignore=shutil.ignore_patterns("__pycache__"))
    marks = tmp_path / "marks"
    marks.mkdir()
    with (tree / "node" / "distsync" / "__init__.py").open("a") as f:
        f.write("\nimport os as _os\n_m = _os.environ.get('AB_TEST_MARKS')\n"
                "if _m and 'node' in __import__('sys').argv:\n"
                "    open(_os.path.join(_m, str(_os.getpid())), 'w').close()\n")
    env = {**os.environ, "AB_TEST_MARKS": str(marks)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--b-tree", str(tree),
         "--rounds", "2", "--phase", "0.5", "--warmup", "0.1"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("A", "B", "B/A")}
    assert set(rows) == {"A", "B", "B/A"}
    assert len(rows["A"]) == 5 + 2 and len(rows["B"]) == 5 + 2  # two phases' p50 each
    assert len(list(marks.iterdir())) == 3  # B's three nodes, and only those
    assert "Round by round, B/A" in proc.stdout
    assert "(50 % coverage, 2 rounds)" in proc.stdout  # two rounds say how little they show


def test_paired_ratios_are_b_over_a_round_by_round() -> None:
    """Round r's ratio is B_r / A_r (harness.median_interval bounds their median)."""
    p = ab.paired([100.0, 200.0, 100.0], [110.0, 180.0, 130.0])
    assert p["n"] == 3 and p["median"] == pytest.approx(1.1)
    assert (p["lo"], p["hi"], p["coverage"]) == (pytest.approx(0.9), pytest.approx(1.3), 0.75)
    assert ab.verdict(p) == "too few rounds (75 % coverage)"  # 1 - 2/8 of the time
    assert ab.verdict(ab.paired([100.0] * 5, [90.0, 110.0, 120.0, 95.0, 105.0])) == (
        "no difference shown")
    assert ab.verdict(ab.paired([1.0] * 8, [1.1] * 8)) == "B higher"
    assert ab.verdict(ab.paired([1.0] * 8, [0.9] * 8)) == "B lower"


def test_the_report_gives_every_measure_round_by_round() -> None:
    phases = {t: [{"per_s": 100.0 * f, "p50_ms": 2.0 / f, "p99_ms": 5.0, "cpu_us": 900.0}
                  for f in fs] for t, fs in (("A", (1.0,) * 5), ("B", (1.1, 1.15, 1.2, 1.25, 1.3)))}
    lines = ab.paired_lines(phases, "ops/s")
    assert lines[0].startswith("Round by round, B/A")
    assert [line.split()[0] for line in lines[1:]] == ["ops/s", "p50", "p99", "CPU/op"]
    assert lines[1].endswith("(94 % coverage, 5 rounds): B higher")
    assert "1.200x [1.100x .. 1.300x]" in lines[1]
    assert lines[3].endswith(": no difference shown")  # p99 equal in every round
