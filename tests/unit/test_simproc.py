"""The simulator's process model (distsync/testing/simproc.py, simloop.py): a killed process
stops at whatever await it was in, without running its own cleanup; a paused one runs
nothing (no task step, no timer) until the pause ends, then resumes."""

from __future__ import annotations

import asyncio

import pytest

from distsync.testing.simloop import VirtualLoop
from distsync.testing.simproc import ConnectionLost, Process


@pytest.fixture
def loop():
    lp = VirtualLoop()
    # A killed process's tasks stay suspended for ever, by design: asyncio would report each
    # as "destroyed but pending" when it is collected.
    lp.set_exception_handler(lambda loop, ctx: None)
    yield lp
    lp.close()


def test_a_killed_process_stops_at_its_await_and_runs_no_cleanup(loop) -> None:
    proc = Process(loop, "p")
    seen: list[str] = []

    async def work() -> None:
        try:
            seen.append("before")
            inner = asyncio.get_running_loop().create_task(asyncio.sleep(5))  # a child task
            await asyncio.sleep(1)
            seen.append("after")
            await inner
        finally:
            seen.append("finally")

    async def main() -> None:
        proc.spawn(work())
        await asyncio.sleep(0.5)
        proc.kill()
        await asyncio.sleep(10)

    loop.run_until_complete(main())
    assert seen == ["before"]
    with pytest.raises(ConnectionLost):
        loop.run_until_complete(proc.call(asyncio.sleep(0)))


def test_a_client_waiting_on_a_process_that_dies_sees_the_connection_break(loop) -> None:
    proc = Process(loop, "p")

    async def main() -> float:
        loop.call_later(2, proc.kill)
        t0 = loop.time()
        with pytest.raises(ConnectionLost):
            await proc.call(asyncio.sleep(60))
        return loop.time() - t0

    assert 2 <= loop.run_until_complete(main()) < 2.01


def test_a_paused_process_runs_nothing_until_the_pause_ends(loop) -> None:
    proc = Process(loop, "p")
    other = Process(loop, "q")
    ticks: dict[str, list[float]] = {"p": [], "q": []}

    async def ticker(name: str) -> None:
        while True:
            ticks[name].append(loop.time())
            await asyncio.sleep(0.1)

    async def main() -> None:
        proc.spawn(ticker("p"))
        other.spawn(ticker("q"))
        await asyncio.sleep(1.05)
        proc.pause(2.0)
        t_pause = loop.time()
        await asyncio.sleep(3.0)
        during = [t for t in ticks["p"] if t_pause < t < t_pause + 2.0]
        assert during == [], during  # not one step of the paused process ran
        assert any(t_pause < t < t_pause + 2.0 for t in ticks["q"])  # the others went on
        after = [t for t in ticks["p"] if t >= t_pause + 2.0]
        assert after and after[0] - (t_pause + 2.0) < 0.01  # resumed at once, timers late
        assert len(after) >= 9
        proc.kill()
        other.kill()

    loop.run_until_complete(main())
