"""The peer adapters of the side-by-side benchmark (benchmarks/systems: etcd, PySyncObj) on
real processes: one put, one get where the peer has a linearizable read, one lock cycle, a
SIGKILLed leader followed by an acknowledged write, a restart, and a stop that leaves no
process or data behind; and distsync's own adapter, whose failed start leaves no process.
Numbers are the benchmark's job; these only check the adapters keep the contract the
harness relies on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.systems import etcd, pysyncobj  # noqa: E402
from benchmarks.systems.base import Unsupported  # noqa: E402

SETUP_HINT = ("install it with: apt-get install -y etcd-server (README names every tool the "
              "tests use), or run benchmarks/setup_peers.py")

PEERS = [
    pytest.param(
        etcd.Etcd, True,
        marks=pytest.mark.skipif(not etcd.available(), reason=f"etcd-server not installed; {SETUP_HINT}"),
        id="etcd",
    ),
    pytest.param(
        pysyncobj.PySyncObj, False,
        marks=pytest.mark.skipif(not pysyncobj.available(), reason=f"pysyncobj not installed; {SETUP_HINT}"),
        id="pysyncobj",
    ),
]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _write_until_acknowledged(system: Any, session: aiohttp.ClientSession) -> None:
    """What the harness's failover timer does: retry write_once until one succeeds."""
    deadline = time.monotonic() + 15.0
    while True:
        try:
            await system.write_once(session, "failover/probe")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "has_get"), PEERS)
async def test_adapter_contract(make: Callable[..., Any], has_get: bool, tmp_path: Path) -> None:
    system = make(nodes=3, data_dir=str(tmp_path))
    try:
        ready = await system.start()
        assert ready > 0
        assert len(system.pids()) == 3
        async with aiohttp.ClientSession() as session:
            await system.prepare("put", session, 1)
            await system.op("put")(session, 0, "test/put/0")

            if has_get:
                await system.prepare("get", session, 1)
                await system.op("get")(session, 0, "")
            else:
                with pytest.raises(Unsupported):
                    system.op("get")

            await system.prepare("lock", session, 2)
            await system.op("lock")(session, 1, "")
            await system.op("lock")(session, 1, "")  # released, so it can be taken again

            leader = await system.leader()
            system.kill(leader)
            assert leader not in system.pids()
            await _write_until_acknowledged(system, session)
            assert await system.leader() != leader

            system.restart(leader)
            assert leader in system.pids()
    finally:
        pids = list(system.pids().values())
        await system.stop()
    assert pids and all(_gone(p) for p in pids)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
async def test_a_distsync_start_that_fails_leaves_no_process_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ab.py (and any script) calls start() before its try/finally: nodes that never
    acknowledge a write must not outlive the exception. Here they are real processes that
    never serve (an "interpreter" that sleeps)."""
    from benchmarks.systems import distsync as dsmod

    never_serves = tmp_path / "never-serves"
    never_serves.write_text("#!/bin/sh\nexec sleep 600\n")
    never_serves.chmod(0o755)
    monkeypatch.setattr(dsmod, "READY_TIMEOUT_S", 1.0)
    d = dsmod.Distsync(3, python=never_serves)
    with pytest.raises(RuntimeError, match="no acknowledged write"):
        await d.start()
    pids = [nd.proc.pid for nd in d.lc.nodes.values() if nd.proc is not None]
    assert len(pids) == 3
    assert [p for p in pids if not _gone(p)] == []
    await d.stop()  # run.py stops a system that failed to start too: still fine
