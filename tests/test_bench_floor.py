"""The relay floor of the side-by-side benchmark (benchmarks/systems/floor.py) on real
processes: it answers a write only once the leader and a follower hold it in their files,
keeps answering with one follower killed, and stops leaving no process or data behind. The
floor is a lower bound in the tables only if it does at least this much work per write.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.systems.base import Unsupported  # noqa: E402
from benchmarks.systems.floor import Floor  # noqa: E402


def _holders(data_dir: Path, key: str) -> set[str]:
    """The nodes whose log file holds `key`."""
    return {p.parent.name for p in data_dir.rglob("floor.log") if key.encode() in p.read_bytes()}


@pytest.mark.timeout(60)
async def test_the_floor_answers_once_a_majority_holds_the_write(tmp_path: Path) -> None:
    system = Floor(nodes=3, data_dir=str(tmp_path))
    try:
        assert await system.start() > 0
        pids = system.pids()
        assert len(pids) == 3
        async with aiohttp.ClientSession() as session:
            await system.prepare("put", session, 1)
            await system.op("put")(session, 0, "floor/put/first")
            holders = _holders(tmp_path, "floor/put/first")
            # Answered: in the leader's file and in at least one follower's.
            assert "floor-0" in holders and len(holders) >= 2, holders

            with pytest.raises(Unsupported):
                system.op("get")
            await system.op("lock")(session, 0, "")

            system.kill("floor-2")
            await system.op("put")(session, 0, "floor/put/after-kill")
            assert len(_holders(tmp_path, "floor/put/after-kill")) >= 2
    finally:
        pids = list(system.pids().values())
        await system.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert list(tmp_path.iterdir()) == []
