"""The side-by-side benchmark's own machinery (benchmarks/harness.py, plots.py, run.py): the
statistics, the ratio table, the result files, and one real end-to-end run of `run.py`
against a 3-node cluster. Shapes and counts only: no timing is asserted, benchmarks are not
tests.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Result  # noqa: E402


def test_latency_stats_nearest_rank() -> None:
    lat = [i / 1000 for i in range(1, 2001)]  # 1..2000 ms, unsorted below
    s = harness.latency_stats(reversed(lat))
    # Nearest rank, to within one rank (p/100*n sits on a float boundary here).
    assert 1000 <= s["p50_ms"] <= 1001
    assert 1980 <= s["p99_ms"] <= 1981
    assert 1998 <= s["p999_ms"] <= 1999
    assert s["max_ms"] == pytest.approx(2000)
    assert s["mean_ms"] == pytest.approx(1000.5)
    assert harness.pct([3.0, 1.0, 2.0], 50) == 2.0
    assert all(math.isnan(v) for v in harness.latency_stats([]).values())


def test_cdf_points_are_monotonic_and_end_at_max() -> None:
    pts = harness.cdf_points([0.003, 0.001, 0.002, 0.010], n=10)
    assert [p[0] for p in pts] == sorted(p[0] for p in pts)
    assert [p[1] for p in pts] == sorted(p[1] for p in pts)
    assert pts[-1] == [100.0, 10.0]
    assert harness.cdf_points([]) == []


def test_ratio_handles_missing_numbers() -> None:
    assert harness.ratio(200.0, 100.0) == 2.0
    assert harness.ratio(1.0, 0.0) is None
    assert harness.ratio(None, 1.0) is None
    assert harness.ratio(math.nan, 1.0) is None


def _res(system: str, c: int, per_s: float, p50: float) -> Result:
    return Result(system, "put", c, duration_s=1, requests=int(per_s), units=int(per_s),
                  per_s=per_s, p50_ms=p50, p99_ms=p50 * 2, p999_ms=p50 * 3, max_ms=p50 * 4)


def test_comparison_table_ratios_and_errors() -> None:
    rows = harness.comparison_rows([
        _res("distsync", 1, 100.0, 5.0), _res("etcd", 1, 50.0, 10.0),
        Result.failed("pysyncobj", "put", 1, "did not start: boom"),
        _res("distsync", 64, 900.0, 60.0), _res("etcd", 64, 1800.0, 30.0),
    ])
    head, body = rows[0], rows[1:]
    assert head[:3] == ["c", "system", "ops/s"]
    by = {(r[0], r[1]): dict(zip(head, r, strict=True)) for r in body}
    assert by[("1", "etcd")]["distsync/this ops/s"] == "2.00x"
    assert by[("1", "etcd")]["distsync/this p50"] == "0.50x"
    assert by[("64", "etcd")]["distsync/this ops/s"] == "0.50x"
    assert by[("1", "distsync")]["distsync/this ops/s"] == "-"
    assert by[("1", "pysyncobj")]["ops/s"].startswith("ERROR: did not start")
    # Every row has every column, in text and Markdown alike.
    assert {len(r) for r in rows} == {len(head)}
    md = harness.render(rows, markdown=True).splitlines()
    assert md[0].startswith("| c | system |") and md[1].startswith("|---:")
    assert len(md) == len(rows) + 1
    assert "ERROR: did not start" in harness.render(rows)


def test_comparison_table_gives_server_cpu_per_operation() -> None:
    """The servers' CPU per operation, beside the ratios: the same CPU per write can come
    with very different latencies (how much of it is on a write's path), and a table that
    shows both says which one a gap is made of."""
    ours, theirs = _res("distsync", 1, 500.0, 2.0), _res("etcd", 1, 650.0, 1.5)
    ours.cpu = {"servers_total": 88.0, "other": 3.0}  # % of one core over the window
    theirs.cpu = {"servers_total": 113.1, "other": 1.0}
    pairs = _res("distsync", 1, 250.0, 4.0)
    pairs.cpu = {"servers_total": 90.0}
    head, *body = harness.comparison_rows([ours, theirs])
    by = {r[1]: dict(zip(head, r, strict=True)) for r in body}
    assert by["distsync"]["server CPU us/op"] == "1,760"  # 0.88 s of CPU per s / 500 ops
    assert by["etcd"]["server CPU us/op"] == "1,740"
    head, *body = harness.comparison_rows([pairs], unit="pairs/s")
    assert dict(zip(head, body[0], strict=True))["server CPU us/pair"] == "3,600"
    # no CPU reading (a phase measured without one): a dash, not a zero
    head, *body = harness.comparison_rows([_res("distsync", 1, 500.0, 2.0)])
    assert dict(zip(head, body[0], strict=True))["server CPU us/op"] == "-"


def test_comparison_table_extra_ratio_column() -> None:
    rows = harness.comparison_rows(
        [_res("distsync", 1, 100.0, 5.0), _res("redis", 1, 400.0, 1.0)],
        extra_ratio={1: ("hit GET / etcd GET", 1.5)},
    )
    assert rows[0][-1] == "hit GET / etcd GET"
    assert rows[1][-1] == "1.50x" and rows[2][-1] == "-"


def test_rounds_table_gives_every_round_and_the_median() -> None:
    rounds = [
        [_res("distsync", 1, 100.0, 2.0), _res("etcd", 1, 200.0, 1.0)],
        [_res("distsync", 1, 300.0, 1.0), _res("etcd", 1, 300.0, 1.0)],
        [_res("distsync", 1, 150.0, 1.5), Result.failed("etcd", "put", 1, "crashed")],
    ]
    head, *body = harness.rounds_rows(rounds)
    by = {r[1]: dict(zip(head, r, strict=True)) for r in body}
    assert [r[1] for r in body] == ["distsync", "etcd"]  # ours first
    assert by["distsync"]["rounds"] == "3" and by["distsync"]["median ops/s"] == "150.0"
    assert by["etcd"]["rounds"] == "2"  # the failed round is not a number
    assert by["etcd"]["distsync/this ops/s per round"] == "0.50x / 1.00x / -"
    assert by["etcd"]["median distsync/this ops/s"] == "0.75x"
    assert by["etcd"]["distsync/this p50 per round"] == "2.00x / 1.00x / -"
    assert by["etcd"]["median distsync/this p50"] == "1.50x"
    assert by["distsync"]["median distsync/this ops/s"] == "-"
    # two rounds with a number: their range, which bounds the median half the time
    assert by["etcd"]["interval of the median ops/s ratio"] == "0.50x .. 1.00x (50 %)"
    assert by["etcd"]["interval of the median p50 ratio"] == "1.00x .. 2.00x (50 %)"
    assert by["distsync"]["interval of the median ops/s ratio"] == "-"


def test_median_interval_bounds_the_median_with_the_stated_coverage() -> None:
    # eight values: only the extremes bound the median at 95 % (they cover 1 - 2/256)
    iv = harness.median_interval([1.05, 0.95, 1.01, 0.98, 1.04, 1.02, 0.99, 1.03])
    assert iv["n"] == 8 and iv["median"] == pytest.approx(1.015)
    assert (iv["lo"], iv["hi"]) == (0.95, 1.05)
    assert iv["coverage"] == pytest.approx(1 - 2 / 256)
    assert harness.verdict(iv, "up", "down") == "no difference shown"
    # twelve: the 3rd smallest and 3rd largest (1 - 2 * 79/4096 = 96.1 %)
    twelve = [0.90 + i / 100 for i in range(12)]
    iv = harness.median_interval(twelve)
    assert (iv["lo"], iv["hi"]) == (pytest.approx(0.92), pytest.approx(0.99))
    assert iv["coverage"] == pytest.approx(1 - 2 * 79 / 4096)
    assert harness.verdict(iv, "up", "down") == "down"
    assert harness.verdict(harness.median_interval([2 - x for x in twelve]), "up", "down") == "up"
    assert harness.median_interval([]) == {"n": 0}
    assert harness.verdict({"n": 0}, "up", "down") == "no rounds"


def test_verdict_needs_an_interval_that_covers_the_median_often_enough() -> None:
    # One round's "interval" is that round alone: it covers the median 0 % of the time, so
    # however far from 1.0 it lies it shows nothing; four rounds cover 87.5 %, five 93.75 %.
    one = harness.median_interval([0.5])
    assert one["coverage"] == 0
    assert harness.verdict(one, "up", "down") == "too few rounds (0 % coverage)"
    four = harness.median_interval([0.5, 0.6, 0.7, 0.8])
    assert harness.verdict(four, "up", "down") == "too few rounds (88 % coverage)"
    five = harness.median_interval([0.5, 0.6, 0.7, 0.8, 0.9])
    assert five["coverage"] == pytest.approx(1 - 2 / 32)
    assert harness.verdict(five, "up", "down") == "down"
    assert harness.verdict(harness.median_interval([1.5] * 5), "up", "down") == "up"


def test_write_json_turns_nan_into_null(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.json"
    harness.write_json(path, {"results": [Result.failed("etcd", "get", 16, "x")],
                              "v": math.nan})
    data = json.loads(path.read_text())
    assert data["v"] is None
    assert data["results"][0]["per_s"] is None
    assert data["results"][0]["error"] == "x"


def test_closed_loop_counts_units_and_errors() -> None:
    async def step(w: int, i: int) -> int:
        await asyncio.sleep(0.001)
        if i % 4 == 3:
            raise ValueError("every fourth fails")
        return 10

    r = asyncio.run(harness.closed_loop(step, 4, duration=0.3, warmup=0.05, keep_cdf=True))
    assert r.requests > 0 and r.units == 10 * r.requests
    assert r.errors > 0 and list(r.error_types) == ["ValueError: every fourth fails"]
    assert r.per_s == pytest.approx(r.units / 0.3)
    assert r.cdf and r.cdf[-1][0] == 100.0


def test_rss_of_this_process_and_a_missing_one() -> None:
    import os

    got = harness.rss_of({"me": os.getpid(), "gone": 2**22 + 12345})
    assert got["me"] is not None and got["me"] > 1
    assert got["gone"] is None


def test_plots_from_a_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.plots import draw_all

    res = [_res("distsync", 1, 100.0, 5.0), _res("distsync", 16, 500.0, 20.0)]
    for r in res:
        r.cdf = harness.cdf_points([0.001, 0.002, 0.004])
    report = harness._clean({
        "workloads": {"put": {"title": "PUT", "unit": "ops/s", "results": res}},
        "scaling": {"results": [{**harness._clean(r), "nodes": 3} for r in res]},
    })
    names = draw_all(report, tmp_path)
    assert set(names) == {"throughput-put.png", "put-latency-cdf.png", "scaling.png"}
    assert all((tmp_path / n).read_bytes().startswith(b"\x89PNG") for n in names)


def test_run_py_end_to_end_on_a_real_cluster(tmp_path: Path) -> None:
    """`run.py` as a user runs it: starts a 3-node cluster, a short PUT phase in two
    rounds, writes run.json and run.md, stops every node."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "put,resources",
         "--systems", "distsync", "--duration", "1", "--warmup", "0.2", "--concurrency", "1",
         "--rounds", "2", "--no-setup", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["machine"]["cores"] >= 1
    assert data["systems"]["distsync"]["nodes"] == 3
    assert data["systems"]["distsync"]["start_to_ready_s"] > 0
    put = data["workloads"]["put"]
    (r,) = put["results"]
    assert (r["system"], r["workload"], r["concurrency"]) == ("distsync", "put", 1)
    assert r["error"] is None and r["requests"] > 0 and r["per_s"] > 0
    assert r["p50_ms"] > 0 and r["cdf"]
    assert len(put["table"]) == 2
    assert [len(rnd) for rnd in put["rounds"]] == [1, 1]  # --rounds 2: both kept
    assert put["rounds"][1][0]["requests"] > 0
    assert put["rounds_table"][1][:3] == ["1", "distsync", "2"]
    md = (tmp_path / "run.md").read_text()
    assert "## Replicated PUT" in md and "2 rounds of the phases above" in md
    assert "Replicated PUT" in proc.stdout


def test_the_machine_header_says_how_idle_cpus_wait(tmp_path: Path) -> None:
    """A KVM guest's halt polling can move every system's c=1 numbers, so the header states
    it; a machine without the knobs gets no line rather than a guess."""
    from benchmarks.raft_bench import idle_polling, idle_text, machine_info, machine_text

    (tmp_path / "devices/system/cpu/cpuidle").mkdir(parents=True)
    (tmp_path / "devices/system/cpu/cpuidle/current_driver").write_text("haltpoll\n")
    (tmp_path / "module/haltpoll/parameters").mkdir(parents=True)
    knob = tmp_path / "module/haltpoll/parameters/guest_halt_poll_ns"
    knob.write_text("0\n")
    assert idle_polling(tmp_path) == {"cpuidle_driver": "haltpoll", "guest_halt_poll_ns": 0}
    assert idle_text(idle_polling(tmp_path)) == (
        "cpuidle haltpoll, guest halt polling off (guest_halt_poll_ns=0)")
    knob.write_text("200000\n")
    assert "guest halt polling on (guest_halt_poll_ns=200000)" in idle_text(idle_polling(tmp_path))
    assert idle_polling(tmp_path / "no-sysfs") == {}
    assert idle_text({}) == ""

    m = machine_info(tmp_path)  # this machine's own /sys
    header = machine_text(m)
    assert ("Idle:" in header) == bool(idle_text(m["idle"]))
    if m["idle"]:
        assert idle_text(m["idle"]) in header
