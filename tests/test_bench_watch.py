"""The watch fan-out benchmark's machinery (benchmarks/watch_bench.py): its accounting of
receipts against acknowledged puts, the etcd gateway's message parsing, the table, and one
tiny real run against both systems (3 members each). Shapes and counts only: no timing is
asserted, benchmarks are not tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import watch_bench  # noqa: E402
from benchmarks.systems import etcd  # noqa: E402
from benchmarks.systems.distsync import LineSplitter  # noqa: E402
from benchmarks.watch_bench import Fanout, WatchResult  # noqa: E402


def test_fanout_counts_receipts_before_and_after_the_ack() -> None:
    now = [0.0]

    async def scenario() -> Fanout:
        fan = Fanout(2, m_start=1.0, m_end=10.0, clock=lambda: now[0])
        now[0] = 2.0
        fan.receive(0, [5])  # before the writer has the answer
        done = fan.ack(5, invoked=1.5, acked=2.5)
        assert not done.done()
        now[0] = 3.0
        fan.receive(1, [5])  # the last watcher: the writer may go on
        assert done.done()
        fan.ack(6, 3.0, 3.1)
        now[0] = 3.5
        fan.receive(0, [6, 6])  # a duplicate
        fan.receive(0, [7])  # an event of a put whose answer never came
        now[0] = 11.0
        fan.receive(1, [6])  # after the window: delivered, not counted in it
        return fan

    fan = asyncio.run(scenario())
    assert fan.events_in_window == 5
    assert sorted(round(x, 3) for x in fan.lat) == [-0.5, 0.4, 0.4, 0.5]
    assert fan.out_of_order == 1
    assert fan.missing() == 0 and fan.unacked_events() == 1
    assert fan.got == [4, 2]


def test_line_splitter_keeps_partial_lines() -> None:
    s = LineSplitter()
    assert s.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert s.feed(b':2}\n\n') == [b'{"b":2}']
    assert s.rest == b""


def test_etcd_watch_messages() -> None:
    assert etcd.prefix_end("wb/x/") == "wb/x0"
    ready = asyncio.Event()
    created = {"result": {"header": {"revision": "3"}, "created": True}}
    assert etcd.watch_revisions(created, ready) == [] and ready.is_set()
    events = {"result": {"header": {"revision": "9"}, "events": [
        {"kv": {"key": "d", "mod_revision": "8"}}, {"kv": {"key": "e", "mod_revision": "9"}}]}}
    assert etcd.watch_revisions(events, ready) == [8, 9]
    with pytest.raises(RuntimeError, match="canceled"):
        etcd.watch_revisions({"result": {"canceled": True, "cancel_reason": "x"}}, ready)


def test_rows_have_every_column_and_the_ratio() -> None:
    a = WatchResult("distsync", 100, events_per_s=2000.0, puts_per_s=20.0, p50_ms=1.0,
                    p99_ms=2.0, kib_per_watcher=40.0)
    b = WatchResult("etcd", 100, events_per_s=1000.0, puts_per_s=10.0, p50_ms=1.0, p99_ms=2.0)
    c = WatchResult("etcd", 1000, error="did not start: boom")
    rows = watch_bench.rows([a, b, c])
    head = rows[0]
    assert {len(r) for r in rows} == {len(head)}
    by = {(r[0], r[1]): dict(zip(head, r, strict=True)) for r in rows[1:]}
    assert by[("100", "etcd")]["distsync/this events/s"] == "2.00x"
    assert by[("100", "distsync")]["RSS KiB/idle watcher"] == "40.0"
    assert by[("1000", "etcd")]["puts/s"].startswith("ERROR: did not start")


def test_distsync_limits_are_raised_only_when_a_phase_needs_it() -> None:
    assert watch_bench._distsync_args(1000, 8, 3) == []
    args = watch_bench._distsync_args(6000, 8, 3)
    assert args[args.index("--max-watchers-per-client") + 1] == "2000"
    assert int(args[args.index("--max-connections-per-client") + 1]) > 2000


def test_watch_bench_end_to_end_tiny(tmp_path: Path) -> None:
    """`watch_bench.py` as a user runs it, on a tiny size: both systems (3 members each),
    1 and 3 watchers, a table, the result files, every event delivered."""
    systems = "distsync,etcd"
    if not etcd.available():
        if os.environ.get("CI"):
            pytest.fail("etcd-server is not installed (CI must run every test; .ci/run "
                        "installs it)")
        systems = "distsync"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "watch_bench.py"), "--watchers", "1,3",
         "--systems", systems, "--duration", "0.6", "--warmup", "0.2", "--writers", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Watch fan-out" in proc.stdout
    data = json.loads((tmp_path / "watch_bench.json").read_text())
    results = data["results"]
    assert {(r["system"], r["watchers"]) for r in results} == {
        (s, n) for s in systems.split(",") for n in (1, 3)}
    for r in results:
        assert r["error"] is None, r
        assert r["puts"] > 0 and r["events"] > 0 and r["missing"] == 0, r
        assert r["out_of_order"] == 0 and r["errors"] == 0, r
    assert len(data["table"]) == 1 + len(results)
    md = (tmp_path / "watch_bench.md").read_text()
    assert "| watchers | system |" in md
    if "plots" in data:
        assert (tmp_path / "watch-fanout.png").read_bytes().startswith(b"\x89PNG")
