"""ThreadIO, the worker thread the Raft loop hands saves and snapshot writes to: what the
loop relies on, whatever hands the work over (realparts.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from distsync.realparts import ThreadIO


async def test_work_runs_in_order_on_one_thread_off_the_loop() -> None:
    io = ThreadIO("t-order")
    try:
        seen: list[tuple[int, str]] = []

        def job(i: int) -> int:
            seen.append((i, threading.current_thread().name))
            return i * i

        results = await asyncio.gather(*(io.run(job, i) for i in range(50)))
        assert results == [i * i for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))  # one worker: saves stay ordered
        names = {n for _, n in seen}
        assert len(names) == 1 and names != {threading.current_thread().name}
    finally:
        io.close()


async def test_an_exception_reaches_the_caller_and_the_worker_goes_on() -> None:
    io = ThreadIO("t-exc")
    try:
        def boom() -> None:
            raise OSError(5, "EIO from fsync")

        with pytest.raises(OSError, match="EIO"):
            await io.run(boom)
        assert await io.run(lambda a, b: a + b, 2, 3) == 5
    finally:
        io.close()


async def test_the_loop_runs_while_the_worker_works() -> None:
    io = ThreadIO("t-overlap")
    try:
        release = threading.Event()
        started = threading.Event()

        def slow() -> str:
            started.set()
            assert release.wait(10)
            return "done"

        task = asyncio.ensure_future(io.run(slow))
        assert await asyncio.to_thread(started.wait, 10)
        assert not task.done()  # the loop got here while the worker was busy
        release.set()
        assert await task == "done"
    finally:
        io.close()


async def test_a_caller_that_gives_up_does_not_stop_the_work() -> None:
    io = ThreadIO("t-cancel")
    try:
        release, finished = threading.Event(), threading.Event()

        def slow() -> None:
            assert release.wait(10)
            finished.set()

        task = asyncio.ensure_future(io.run(slow))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await io.run(lambda: finished.is_set())  # ordered: ran after slow() ended
    finally:
        io.close()


def test_close_finishes_queued_work_then_refuses_more() -> None:
    io = ThreadIO("t-close")
    done: list[int] = []
    release = threading.Event()

    async def main() -> list[asyncio.Future]:
        first = asyncio.ensure_future(io.run(release.wait, 10))
        rest = [asyncio.ensure_future(io.run(done.append, i)) for i in range(3)]
        await asyncio.sleep(0)  # each task runs up to its await: the work is handed over
        return [first, *rest]

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        release.set()
        io.close()  # returns once the queued work has run
        assert done == [0, 1, 2]
        io.close()  # twice is harmless
        with pytest.raises(RuntimeError):  # no work is taken after close
            loop.run_until_complete(io.run(print))
    finally:
        loop.close()
