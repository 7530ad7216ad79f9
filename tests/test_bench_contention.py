"""benchmarks/contention.py, the second follower's cost: which member it pauses, that the
pause really holds the process for its phase (and only then), and the report's shape. No
timing is asserted."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import contention  # noqa: E402


def test_the_paused_member_is_a_follower_and_the_same_on_a_rerun() -> None:
    pids = {"n1": 11, "n2": 12, "n3": 13}
    assert contention.paused_follower(pids, "n3") == "n2"
    assert contention.paused_follower(pids, "n1") == "n3"
    with pytest.raises(SystemExit, match="no follower"):
        contention.paused_follower({"n1": 11}, "n1")


def test_the_report_gives_the_paired_ratio_and_its_interval() -> None:
    ph = {"both": [{"per_s": 100.0, "p50_ms": 2.0, "cpu_us": 1500.0}] * 5,
          "one": [{"per_s": f, "p50_ms": 200.0 / f, "cpu_us": 1200.0}
                  for f in (120.0, 122.0, 125.0, 128.0, 130.0)]}
    head, row = contention.rows({"distsync": ph}, "ops/s")
    cells = dict(zip(head, row, strict=True))
    assert cells["ops/s, both"] == "100.0" and cells["ops/s, one paused"] == "125.0"
    assert cells["one/both ops/s, median [interval]"] == "1.25x [1.20x .. 1.30x, 94 %]: higher"
    assert cells["one/both p50, median [interval]"].endswith(": lower")
    assert cells["server CPU us/op, both / one"] == "1,500 / 1,200"


def test_arguments_are_checked() -> None:
    with pytest.raises(SystemExit):
        contention.parse_args(["--systems", "zookeeper"])
    with pytest.raises(SystemExit):
        contention.parse_args(["--nodes", "1"])
    assert contention.parse_args(["--systems", "distsync"]).systems == ["distsync"]


def test_a_real_run_pauses_the_follower_for_its_phases_only() -> None:
    """Three real nodes: in every "one" phase the paused follower used no CPU, in every
    "both" phase it did (it applies and acknowledges each write), and no phase saw an
    error or a leader change (measure() stops the run on either)."""
    a = contention.parse_args(["--systems", "distsync", "--rounds", "2", "--phase", "0.6",
                               "--warmup", "0.4"])
    out = asyncio.run(contention.measure("distsync", a))
    assert [len(out[m]) for m in contention.MODES] == [2, 2]
    assert all(p["per_s"] > 0 for m in contention.MODES for p in out[m])
    assert all(p["paused_cpu"] == 0 for p in out["one"]), out["one"]
    assert all(p["paused_cpu"] > 0 for p in out["both"]), out["both"]
