"""Simulated processes: what a node's OS process is to the simulator (sim.py), so that a
crash or a pause reaches the node from outside, as a power cut or a stalled VM would, and
never through the node's own attributes.

Every callback asyncio runs (a task's next step, a timer, a future's done-callback) carries
a `contextvars.Context`. A `Process` is a context variable set in the context its node is
built and started in; every task and timer the node's code creates inherits it, since
asyncio copies the current context into each. The virtual loop (simloop.py) looks at it
before running a callback:

* a **killed** process's callbacks never run again: each of its tasks stops at whatever
  await it was in (a crash at any await point), with no `finally` or `except` of its own
  running; what its disk kept is all that a restart sees (simdisk.py);
* a **paused** process's callbacks wait until the pause ends (a GC or VM pause): nothing of
  that node runs, no timer of it fires, and it resumes with its clock moved on by the pause.

Callbacks that belong to nobody (the network's deliveries, the simulator's own tasks) run
in contexts without a process.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "distsync_sim_process", default=None)


class ConnectionLost(Exception):
    """The process serving a request died before it answered (the client's connection
    broke): the request may or may not have taken effect."""


class Process:
    """One incarnation of a node's process. A restart is a new Process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.name = name
        self.context = contextvars.Context()
        self.context.run(PROCESS.set, self)
        self.dead = False
        self.paused_until = 0.0
        # Set when the process dies; clients waiting on it see their connection break.
        self.died: asyncio.Future[None] = loop.create_future()

    def run(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Call fn inside the process (what it schedules belongs to the process)."""
        return self.context.copy().run(fn, *args, **kw)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.loop.create_task(coro, context=self.context.copy())

    async def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Serve one request inside the process (as its HTTP handler would) and return its
        answer; raises ConnectionLost if the process dies first."""
        if self.dead:
            coro.close()
            raise ConnectionLost(f"{self.name} is down")
        task = self.spawn(coro)
        await asyncio.wait((task, self.died), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise ConnectionLost(f"{self.name} died")
        return task.result()

    def kill(self) -> None:
        if not self.dead:
            self.dead = True
            self.died.set_result(None)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.loop.time() + seconds)

    def paused(self) -> bool:
        return self.paused_until > self.loop.time()


def owner(context: contextvars.Context | None) -> Process | None:
    """The process a callback scheduled with `context` belongs to (None: the current one)."""
    return PROCESS.get() if context is None else context.get(PROCESS)
