"""Queue client: `client.queue("jobs")` on a `Client` (asyncio) or a `BlockingClient`.

```python
async with Client(addrs) as c:
    jobs = c.queue("jobs")
    await jobs.put({"task": 1}, key="user-7")              # -> message id
    await jobs.put_many([{"body": 2}, {"body": 3, "id": "order-3"}])
    async for msg in jobs.consume(consumer="w1"):
        try:
            handle(msg.body)
            await msg.ack()
        except Exception as e:
            await msg.nack(delay_ms=1000, error=str(e))

with BlockingClient(addrs) as c:
    jobs = c.queue("jobs")
    jobs.put("x")
    for msg in jobs.consume(consumer="w2"):
        msg.ack()
```

Every call goes through `Client.request`, so it finds the leader, retries through failover
with back-off, and keeps one Request-Id across the retries: an enqueue, ack or nack is
applied at most once, and a retried dequeue returns the messages the first attempt leased.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from .client import DistSyncError, blocking_attr

if TYPE_CHECKING:
    from .client import BlockingClient, Client

T = TypeVar("T")


class QueueFull(DistSyncError):
    """429 `queue_full`: the enqueue would pass max_length or max_bytes; nothing was added."""


class UnknownReceipt(DistSyncError):
    """404 `unknown_receipt`: no receipt matched a current delivery (acked already, or the
    message was redelivered after its visibility timeout)."""


def _typed(e: DistSyncError) -> DistSyncError:
    if e.code == "queue_full":
        return QueueFull(e.status, e.code, e.message, e.body)
    if e.code == "unknown_receipt":
        return UnknownReceipt(e.status, e.code, e.message, e.body)
    return e


def default_consumer_id() -> str:
    host = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in socket.gethostname())
    return f"{host[:60] or 'host'}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Message:
    """One delivery. `deliveries` > 1 means a redelivery (after a nack, a visibility
    timeout, or its consumer going away); `dead_letter` is set for messages read from a
    dead-letter queue."""

    # A batch of 1,000 of these is built per dequeue call: slots make that cheaper.
    __slots__ = ("queue", "id", "body", "key", "headers", "receipt", "partition", "seq",
                 "deliveries", "enqueued_at", "dead_letter")

    def __init__(self, queue: Queue, d: dict[str, Any]):
        self.queue = queue
        self.id: str = d["id"]
        self.body: Any = d["body"]
        self.key: str | None = d.get("key")
        self.headers: dict[str, str] = d.get("headers") or {}
        self.receipt: str = d["receipt"]
        self.partition: int = d["partition"]
        self.seq: int = d["seq"]
        self.deliveries: int = d["deliveries"]
        self.enqueued_at: int = d["enqueued_at"]  # ms, the leader's clock
        self.dead_letter: dict[str, Any] | None = d.get("dead_letter")

    async def ack(self) -> None:
        await self.queue.ack(self.receipt)

    async def nack(self, delay_ms: int = 0, error: str | None = None) -> dict[str, Any]:
        return await self.queue.nack(self.receipt, delay_ms=delay_ms, error=error)

    def __repr__(self) -> str:
        return (f"Message(id={self.id!r}, partition={self.partition}, "
                f"deliveries={self.deliveries}, body={self.body!r})")


def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def _receipts(items: Iterable[str | Message]) -> list[str]:
    return [i.receipt if isinstance(i, Message) else i for i in items]


class Queue:
    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name
        self._path = f"/v1/queues/{quote(name, safe='')}"

    async def _call(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        try:
            return await self.client.request_or_raise(method, self._path + path, body, **kw)
        except DistSyncError as e:
            raise _typed(e) from None

    # -- queue --------------------------------------------------------------------------

    async def create(self, **options: Any) -> dict[str, Any]:
        """Create, or change options (partitions, visibility_ms, max_deliveries, max_length,
        max_bytes, retention_ms, dedupe_window_ms, consumer_ttl_ms, dead_letter)."""
        return await self._call("PUT", "", options, mutating=True)

    async def info(self, *, consistency: str = "linearizable") -> dict[str, Any]:
        return await self._call("GET", "", params={"consistency": consistency})

    async def delete(self) -> dict[str, Any]:
        return await self._call("DELETE", "", mutating=True)

    # -- producing ----------------------------------------------------------------------

    async def put(
        self, body: Any, *, key: str | None = None, id: str | None = None,  # noqa: A002
        headers: dict[str, str] | None = None, request_id: str | None = None,
    ) -> str:
        """Enqueue one message; returns its id once it is committed on a majority."""
        msg: dict[str, Any] = {"body": body}
        for k, v in (("key", key), ("id", id), ("headers", headers)):
            if v is not None:
                msg[k] = v
        res = await self._call("POST", "/messages", msg, mutating=True, request_id=request_id)
        return res["id"]

    async def put_many(
        self, messages: Iterable[dict[str, Any]], *, request_id: str | None = None,
    ) -> list[str]:
        """Enqueue a batch (dicts with `body` and optional `key`, `id`, `headers`) in one
        command: all or nothing. Returns the ids in order."""
        res = await self._call("POST", "/messages", {"messages": list(messages)},
                               mutating=True, request_id=request_id)
        return res["ids"]

    # -- consuming ----------------------------------------------------------------------

    def _max_wait_ms(self) -> int:
        """The longest wait one HTTP call may ask for within the client's request timeout."""
        return max(0, int((self.client.request_timeout - 2.5) * 1000))

    async def get(
        self, consumer: str, *, max: int = 1, visibility_ms: int | None = None,  # noqa: A002
        wait_ms: int = 0, ack: Iterable[str | Message] = (), request_id: str | None = None,
    ) -> list[Message]:
        """Lease up to `max` messages for `visibility_ms` (queue default if None), waiting up
        to `wait_ms` for the first; [] if none came. `ack`: receipts (or messages) to ack in
        the same command first, like JetStream's AckNext (receipts that no longer match are
        skipped; use `ack_many` to learn which)."""
        deadline = time.monotonic() + wait_ms / 1000
        acks = _receipts(ack)
        while True:
            left = _clamp(int((deadline - time.monotonic()) * 1000), 0, self._max_wait_ms())
            body: dict[str, Any] = {"consumer": consumer, "max": max, "wait_ms": left}
            if visibility_ms is not None:
                body["visibility_ms"] = visibility_ms
            if acks:
                body["ack"] = acks
            res = await self._call("POST", "/dequeue", body, mutating=True,
                                   request_id=request_id)
            if res["messages"] or time.monotonic() >= deadline:
                return [Message(self, d) for d in res["messages"]]
            request_id, acks = None, []  # the next poll is a new request; acks are done
            if left == 0:
                await asyncio.sleep(0.2)

    async def ack(self, *receipts: str | Message) -> int:
        """Delete delivered messages. Returns how many were acked; raises UnknownReceipt
        when none matched (for a batch, the unmatched ones are in the answer's `unknown`)."""
        rs = _receipts(receipts)
        body = {"receipt": rs[0]} if len(rs) == 1 else {"receipts": rs}
        return (await self._call("POST", "/ack", body, mutating=True))["acked"]

    async def ack_many(self, items: Iterable[str | Message]) -> dict[str, Any]:
        return await self._call("POST", "/ack", {"receipts": _receipts(items)}, mutating=True)

    async def nack(
        self, *receipts: str | Message, delay_ms: int = 0, error: str | None = None,
    ) -> dict[str, Any]:
        """Give messages back for redelivery (after `delay_ms`); after max_deliveries they go
        to the dead-letter queue with `error` as the last error."""
        body: dict[str, Any] = {"receipts": _receipts(receipts), "delay_ms": delay_ms}
        if error is not None:
            body["error"] = error[:1024]
        return await self._call("POST", "/nack", body, mutating=True)

    async def heartbeat(self, consumer: str) -> list[int]:
        """Keep `consumer` registered; returns its partitions."""
        res = await self._call("POST", f"/consumers/{quote(consumer, safe='')}/heartbeat",
                               None, mutating=True)
        return res["partitions"]

    async def leave(self, consumer: str) -> int:
        """Unregister: messages it holds go back at once. Returns how many."""
        res = await self._call("DELETE", f"/consumers/{quote(consumer, safe='')}",
                               mutating=True)
        return res["released"]

    def consume(
        self, consumer: str | None = None, *, batch: int = 10, visibility_ms: int | None = None,
        wait_ms: int = 20_000, heartbeat_s: float = 5.0, leave_on_close: bool = True,
    ) -> Consumer:
        """`async for msg in queue.consume(consumer="w1"):` yields messages forever (ack or
        nack each). Use `async with queue.consume(...) as msgs:` to leave cleanly at the end:
        messages not yet acked then go back at once instead of after their timeout."""
        return Consumer(self, consumer or default_consumer_id(), batch, visibility_ms,
                        wait_ms, heartbeat_s, leave_on_close)


class Consumer:
    """An async iterator of messages for one consumer id, with a heartbeat while the caller
    is busy between messages (so a slow handler does not look like a silent consumer)."""

    def __init__(
        self, queue: Queue, consumer: str, batch: int, visibility_ms: int | None,
        wait_ms: int, heartbeat_s: float, leave_on_close: bool,
    ):
        self.queue, self.id = queue, consumer
        self.batch, self.visibility_ms, self.wait_ms = batch, visibility_ms, wait_ms
        self.heartbeat_s, self.leave_on_close = heartbeat_s, leave_on_close
        self._buf: collections.deque[Message] = collections.deque()
        self._last_contact = time.monotonic()
        self._hb: asyncio.Task | None = None
        self.closed = False

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        if self.closed:
            raise StopAsyncIteration
        if self._hb is None and self.heartbeat_s > 0:
            self._hb = asyncio.create_task(_heartbeats(weakref.ref(self), self.heartbeat_s))
        while not self._buf:
            got = await self.queue.get(self.id, max=self.batch,
                                       visibility_ms=self.visibility_ms, wait_ms=self.wait_ms)
            self._last_contact = time.monotonic()
            self._buf.extend(got)
        return self._buf.popleft()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._hb is not None:
            self._hb.cancel()
        if self.leave_on_close:
            try:
                await self.queue.leave(self.id)
            except DistSyncError:
                pass  # not registered, or the cluster is away: the TTL will do it

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _heartbeats(ref: weakref.ref[Consumer], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        c = ref()
        if c is None or c.closed:
            return
        if time.monotonic() - c._last_contact >= interval:
            try:
                await c.queue.heartbeat(c.id)
                c._last_contact = time.monotonic()
            except DistSyncError:
                pass
        del c


# -- blocking forms -----------------------------------------------------------------------


class BlockingMessage:
    def __init__(self, msg: Message, run: Callable[[Coroutine[Any, Any, Any]], Any]):
        self._msg, self._run = msg, run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._msg, name)

    def ack(self) -> None:
        self._run(self._msg.ack())

    def nack(self, delay_ms: int = 0, error: str | None = None) -> dict[str, Any]:
        return self._run(self._msg.nack(delay_ms=delay_ms, error=error))

    def __repr__(self) -> str:
        return repr(self._msg)


class BlockingQueue:
    """The same methods as Queue, blocking; `consume` is a plain generator."""

    def __init__(self, client: BlockingClient, name: str):
        self._run = client._run
        self._q = Queue(client._client, name)
        self.name = name

    def __getattr__(self, name: str) -> Any:
        return blocking_attr(self._q, name, self._run)

    def get(self, consumer: str, **kw: Any) -> list[BlockingMessage]:
        return [BlockingMessage(m, self._run) for m in self._run(self._q.get(consumer, **kw))]

    def consume(self, consumer: str | None = None, **kw: Any) -> Iterator[BlockingMessage]:
        c = self._q.consume(consumer, **kw)
        try:
            while True:
                yield BlockingMessage(self._run(c.__anext__()), self._run)
        finally:
            self._run(c.close())
