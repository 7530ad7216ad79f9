"""A deterministic asyncio event loop with virtual time, for the simulator (sim.py).

Time stands still while callbacks are ready and jumps to the next timer when none are, so
a minute of cluster life runs in well under a second, and the order of every callback is a
function of the program and its seed alone: asyncio's ready queue is FIFO and its timer heap
is ordered by due time, so without real I/O and threads nothing else decides the schedule.
Each loop iteration also costs a microsecond of virtual time, as real work costs real time;
without that a driver that waits for "a few nanoseconds more" would spin forever.

Why not `looptime` (nolar/looptime): it fakes the time of a real loop inside pytest
fixtures, but still lets real sockets and threads in; here any attempt at real I/O or an
executor must fail loudly, because it would make a run unrepeatable, and the loop must also
run outside pytest (`python -m distsync.testing.sim`). The whole mechanism is the selector
below: about twenty lines.

The loop also keeps simulated processes (simproc.py) apart: a callback that belongs to a
killed process is dropped, and one that belongs to a paused process waits for the pause to
end. That check is made when the callback is due to run, so a crash or a pause takes effect
wherever the process's tasks happen to be waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
from collections.abc import Callable
from typing import Any

from .simproc import Process, owner

START = 1_000.0  # virtual seconds at creation (some code treats 0 as "never")
STEP = 1e-6  # virtual cost of one loop iteration


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: every task waits for something that cannot
    happen (in a simulation, a lost wake-up)."""


class _VirtualSelector(selectors.SelectSelector):
    """The loop's only way to wait. Instead of blocking, it moves virtual time on by the
    timeout the loop asked for; there is never a real event to report."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise Deadlock("no callback ready and no timer set")
        self.now += max(timeout, STEP)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._vsel = _VirtualSelector()
        super().__init__(self._vsel)

    def time(self) -> float:
        return self._vsel.now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        raise RuntimeError("threads make a simulation unrepeatable: use an in-memory part")

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        proc = owner(context)
        if proc is None:
            return super().call_soon(callback, *args, context=context)
        return super().call_soon(self._guard, proc, callback, args, context=context)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        proc = owner(context)
        if proc is None:
            return super().call_at(when, callback, *args, context=context)
        return super().call_at(when, self._guard, proc, callback, args, context=context)

    def _guard(self, proc: Process, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Runs in the callback's own context, so a deferred callback keeps its owner."""
        if proc.dead:
            return
        if proc.paused_until > self._vsel.now:
            self.call_at(proc.paused_until, callback, *args)
            return
        callback(*args)

    async def getaddrinfo(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("no real network in a simulation")
