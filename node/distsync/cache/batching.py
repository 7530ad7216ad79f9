"""Coalescing of concurrent requests into one message: what lets the cache pay one Redis
round trip (and one socket write) for many PUTs, and one invalidation message per peer for
many keys.

Requests submitted in the same event-loop turn, under the same group (a peer, a Redis
connection), are handed to `send` together as one batch once the loop gets to run the flush.
Nothing waits for a timer: an idle system sends each request on its own at once, a busy one
sends larger batches because more requests arrive while a batch is out. `max_inflight`
bounds the batches out at once per group; the rest wait and join the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# send(group, items) -> one result per item, in order; an item's result may be an exception
# instance, which is raised to its submitter alone. If send raises, every item gets it.
Send = Callable[[Any, list[T]], Awaitable[list[Any]]]


class _Group(Generic[T]):
    __slots__ = ("queue", "inflight", "scheduled")

    def __init__(self) -> None:
        self.queue: list[tuple[T, asyncio.Future]] = []
        self.inflight = 0
        self.scheduled = False


class Batcher(Generic[T]):
    def __init__(self, send: Send, max_batch: int = 256, max_inflight: int = 4):
        self.send = send
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._groups: dict[Hashable, _Group[T]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0  # batches sent (for tests and benchmarks)
        self.items = 0  # items sent

    async def submit(self, item: T, group: Hashable = None) -> Any:
        """Send `item` with whatever else is submitted to `group` meanwhile; its result."""
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _Group()
        fut = asyncio.get_running_loop().create_future()
        g.queue.append((item, fut))
        if not g.scheduled:
            g.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, group, g)
        return await fut

    def _flush(self, group: Hashable, g: _Group[T]) -> None:
        g.scheduled = False
        while g.queue and g.inflight < self.max_inflight:
            batch, g.queue = g.queue[:self.max_batch], g.queue[self.max_batch:]
            batch = [(it, f) for it, f in batch if not f.done()]  # drop cancelled waiters
            if not batch:
                continue
            g.inflight += 1
            task = asyncio.ensure_future(self._run(group, g, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not g.queue and not g.inflight and self._groups.get(group) is g:
            del self._groups[group]

    async def _run(self, group: Hashable, g: _Group[T],
                   batch: list[tuple[T, asyncio.Future]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self.send(group, [it for it, _ in batch])
            for (_, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
        except Exception as e:  # noqa: BLE001 - handed to every waiter
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
        except BaseException:
            for _, fut in batch:
                fut.cancel()
            raise
        finally:
            g.inflight -= 1
            if g.queue and not g.scheduled:
                g.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush, group, g)
            elif not g.queue and not g.inflight and self._groups.get(group) is g:
                del self._groups[group]

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except BaseException:  # noqa: BLE001
                pass
