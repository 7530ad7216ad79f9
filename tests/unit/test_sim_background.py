"""The file protocol between the background seed processes and the tests that read their
outcomes (sim_background.py): under xdist the reader is another process than the starter,
so a seed's outcome must be found in the file as it grows, a half-written line must wait
for its end, and a process that ends without a seed must not leave its reader waiting."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import sim_background


def _line(seed: int) -> bytes:
    return json.dumps({"seed": seed, "ok": True, "faults": {"x": seed}}).encode() + b"\n"


def test_a_reader_sees_seeds_as_they_are_written_and_none_after_the_end(tmp_path: Path):
    out = tmp_path / "seeds-0-3.jsonl"
    out.write_bytes(_line(0) + _line(1)[:10])  # seed 1's line is still being written
    reader = sim_background.Reader(out, range(0, 3))
    assert reader.result(0)["faults"] == {"x": 0}

    def finish() -> None:
        with open(out, "ab") as f:
            f.write(_line(1)[10:])
        out.with_suffix(".done").touch()  # ends without seed 2 (a killed process)

    t = threading.Timer(0.2, finish)
    t.start()
    try:
        assert reader.result(1)["faults"] == {"x": 1}
        assert reader.result(2) is None
    finally:
        t.join()


def test_a_worker_reads_the_directory_it_is_given(tmp_path: Path, monkeypatch):
    (tmp_path / "seeds-10-12.jsonl").write_bytes(_line(10) + _line(11))
    (tmp_path / "seeds-10-12.done").touch()
    monkeypatch.setattr(sim_background, "_READERS", [])
    monkeypatch.setattr(sim_background, "_DIR", None)
    sim_background.use_directory(tmp_path)
    assert sim_background.result(11)["faults"] == {"x": 11}
    assert sim_background.result(99) is None  # no process ran it: the test runs it itself
