"""Queue client: `client.queue("jobs")` on a `Client` (asyncio) or a `BlockingClient`.

```python
async with Client(addrs) as c:
    jobs = c.queue("jobs")
    await jobs.put({"task": 1}, key="user-7")              # -> message id
    await jobs.put_many([{"body": 2}, {"body": 3, "id": "order-3"}])
    async with jobs.consume("w1") as messages:
        async for msg in messages:
            async with msg.process():       # ack on success; nack with the error on raise
                await handle(msg.body)

with BlockingClient(addrs) as c:
    jobs = c.queue("jobs")
    jobs.put("x")
    with jobs.consume("w2") as messages:
        for msg in messages:
            with msg.process():
                handle(msg.body)
```

Times are seconds (floats), as in the rest of the client: `wait=`, `visibility=`, `delay=`;
the older `*_ms` keywords still work.

Inside `consume()`, acks are batched: `msg.ack()` (or `process()`) queues the receipt, and the
queued receipts go with the next fetch (one command, like JetStream's AckNext), or after
`ack_linger` seconds, or at `flush()` / close. A crash before then redelivers them
(at-least-once). Receipts a batch could not ack are in `consumer.ack_unknown`.

A consumer sends heartbeats at a third of the queue's `consumer_ttl_ms` (learned from the
queue) while its handler works. A handler still busy with a message past that message's
visibility timeout counts as hung: the message is `expired` (the cluster hands it to someone
else), the consumer stops heartbeating and leaves so that its partitions move to the other
consumers, and `msg.process()` cancels the handler with `LeaseExpired` (a TimeoutError).

Every call goes through `Client.request`, so it finds the leader, retries through failover
with back-off, and keeps one Request-Id across the retries: an enqueue, ack or nack is
applied at most once, and a retried dequeue returns the messages the first attempt leased.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import re
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from .errors import DistSyncError, InvalidArgument, NotFound

if TYPE_CHECKING:
    from .core import BlockingClient, Client

T = TypeVar("T")


class QueueFull(DistSyncError):
    """429 `queue_full`: the enqueue would pass max_length or max_bytes; nothing was added."""


class UnknownReceipt(DistSyncError):
    """404 `unknown_receipt`: no receipt matched a current delivery (acked already, or the
    message was redelivered after its visibility timeout)."""


QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,123}$")  # as api/queues.py checks
CONSUMER_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")
# seconds keywords of create(), and the option (ms) each sets
SECONDS_OPTIONS = {"visibility": "visibility_ms", "retention": "retention_ms",
                   "dedupe_window": "dedupe_window_ms", "consumer_ttl": "consumer_ttl_ms"}


class InvalidQueueName(InvalidArgument):
    """A queue name or consumer id the API would refuse (raised before any request)."""


def check_queue_name(name: str) -> str:
    if not isinstance(name, str) or not QUEUE_NAME_RE.fullmatch(name):
        raise InvalidQueueName("invalid_queue_name",
                               "queue names are 1-124 characters of A-Z a-z 0-9 _ . - (not "
                               f"starting with . or -), not {name!r}")
    return name


def check_consumer_id(cid: str) -> str:
    if not isinstance(cid, str) or not CONSUMER_RE.fullmatch(cid):
        raise InvalidQueueName("invalid_consumer",
                               f"consumer ids are 1-128 of A-Z a-z 0-9 _ . : @ -, not {cid!r}")
    return cid


class LeaseExpired(DistSyncError, TimeoutError):
    """The message's visibility timeout passed while its handler still had it: the cluster
    may have handed it to another consumer, and its ack would not count."""


# The queue defaults (services/queue_model.OPTION_LIMITS), for a queue the client cannot read.
DEFAULT_VISIBILITY_S = 30.0
DEFAULT_CONSUMER_TTL_S = 15.0
MIN_CONSUMER_TTL_S = 3.0
HUNG_GRACE_S = 0.25  # past a lease before the consumer calls its handler hung

log = logging.getLogger("distsync.client.queues")


@dataclass
class AckResult:
    """What an ack or nack did; one shape for `ack`, `ack_many`, `nack` and `Message.ack`.
    `deferred`: acks queued inside `consume()` that go with the next fetch (see flush())."""

    acked: int = 0
    unknown: list[str] = field(default_factory=list)
    nacked: int = 0
    dead_lettered: int = 0
    deferred: int = 0

    @classmethod
    def of(cls, res: dict[str, Any]) -> AckResult:
        return cls(acked=int(res.get("acked", 0)), unknown=list(res.get("unknown", [])),
                   nacked=int(res.get("nacked", 0)),
                   dead_lettered=int(res.get("dead_lettered", 0)))

    def __getitem__(self, key: str) -> Any:
        """`res["acked"]` etc., as the dict answers of earlier versions were read."""
        return getattr(self, key)


def _ms(what: str, seconds: float | None, ms: int | None) -> int | None:
    """One wire value (ms) from the seconds keyword (or the older `*_ms` one)."""
    if seconds is not None:
        if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                or not math.isfinite(seconds) or seconds < 0):
            raise InvalidArgument("invalid_argument",
                                  f"{what} must be a number of seconds >= 0, not {seconds!r}")
        return int(seconds * 1000)
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or ms < 0):
        raise InvalidArgument("invalid_argument", f"{what}_ms must be an int >= 0, not {ms!r}")
    return ms


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
    dead-letter queue. `expired`: its lease (visibility timeout) has run out unacked."""

    # A batch of 1,000 of these is built per dequeue call: slots make that cheaper.
    __slots__ = ("queue", "id", "body", "key", "headers", "receipt", "partition", "seq",
                 "deliveries", "enqueued_at", "dead_letter", "deadline", "settled",
                 "_consumer")

    def __init__(self, queue: Queue, d: dict[str, Any], deadline: float | None = None,
                 consumer: Consumer | None = None):
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
        self.deadline = deadline  # time.monotonic() when the lease ends (None: unknown)
        self.settled = False
        self._consumer = consumer

    @property
    def expired(self) -> bool:
        return (not self.settled and self.deadline is not None
                and time.monotonic() >= self.deadline)

    async def ack(self) -> AckResult:
        """Delete the message (inside `consume()`: queued, sent with the next fetch)."""
        c = self._consumer
        if c is not None and c.batch_acks and not c.closed:
            return c._defer_ack(self)
        self.settled = True
        if c is not None:
            c._settled(self)
        return await self.queue.ack(self.receipt)

    async def nack(self, delay: float | None = None, error: str | None = None, *,
                   delay_ms: int | None = None) -> AckResult:
        """Give it back for redelivery after `delay` seconds."""
        self.settled = True
        if self._consumer is not None:
            self._consumer._settled(self)
        return await self.queue.nack(self.receipt, delay=delay, delay_ms=delay_ms, error=error)

    @contextlib.asynccontextmanager
    async def process(self, *, timeout: float | None = None, requeue_delay: float = 0.0,
                      ) -> AsyncIterator[Message]:
        """`async with msg.process():` ack when the block succeeds, nack (with the error, after
        `requeue_delay` s) when it raises. The block is cancelled when the message's lease
        ends (or after `timeout` s), raising LeaseExpired: the handler is told, not left
        working on a message that someone else may have."""
        if self.expired:
            self.settled = True
            raise LeaseExpired(409, "lease_expired", f"message {self.id!r}: its visibility "
                                                     "timeout passed before processing")
        ends = [t for t in (self.deadline, None if timeout is None
                            else time.monotonic() + timeout) if t is not None]
        loop = asyncio.get_running_loop()
        when = None if not ends else loop.time() + (min(ends) - time.monotonic())
        cm = asyncio.timeout_at(when)
        try:
            async with cm:
                yield self
        except TimeoutError:
            if not cm.expired():
                await self._nack_quietly(requeue_delay, "TimeoutError")
                raise
            self.settled = True
            if self._consumer is not None:
                self._consumer._settled(self)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise LeaseExpired(409, "lease_expired", f"message {self.id!r}: the handler "
                                   "outlived its visibility timeout") from None
            await self._nack_quietly(requeue_delay, "handler timeout")
            raise
        except BaseException as e:
            await self._nack_quietly(requeue_delay, f"{type(e).__name__}: {e}")
            raise
        else:
            await self.ack()

    async def _nack_quietly(self, delay: float, error: str) -> None:
        with contextlib.suppress(DistSyncError):
            await self.nack(delay, error=error)

    def __repr__(self) -> str:
        return (f"Message(id={self.id!r}, partition={self.partition}, "
                f"deliveries={self.deliveries}, body={self.body!r})")


class _HasReceipt(Protocol):
    receipt: str


def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def _receipts(items: Iterable[str | _HasReceipt]) -> list[str]:
    """Receipts from receipts, Messages or BlockingMessages."""
    return [i if isinstance(i, str) else i.receipt for i in items]


def _mark_settled(items: Iterable[Any]) -> None:
    for i in items:
        m = i if isinstance(i, Message) else getattr(i, "_msg", None)
        if isinstance(m, Message):
            m.settled = True
            if m._consumer is not None:
                m._consumer._settled(m)


class Queue:
    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = check_queue_name(name)
        self._path = f"/v1/queues/{quote(name, safe='')}"

    async def _call(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        try:
            return await self.client.request_or_raise(method, self._path + path, body, **kw)
        except DistSyncError as e:
            raise _typed(e) from None

    # -- queue --------------------------------------------------------------------------

    async def create(self, **options: Any) -> dict[str, Any]:
        """Create, or change options (partitions, max_deliveries, max_length, max_bytes,
        dead_letter; times in seconds as visibility=, retention=, dedupe_window=,
        consumer_ttl=, or in ms as the API's visibility_ms, retention_ms, ...)."""
        for kw, opt in SECONDS_OPTIONS.items():
            if kw in options:
                if opt in options:
                    raise InvalidArgument("invalid_argument", f"give {kw} or {opt}, not both")
                options[opt] = _ms(kw, options.pop(kw), None)
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
        return str(res["id"])

    async def put_many(
        self, messages: Iterable[dict[str, Any]], *, request_id: str | None = None,
    ) -> list[str]:
        """Enqueue a batch (dicts with `body` and optional `key`, `id`, `headers`) in one
        command: all or nothing. Returns the ids in order."""
        res = await self._call("POST", "/messages", {"messages": list(messages)},
                               mutating=True, request_id=request_id)
        return list(res["ids"])

    # -- consuming ----------------------------------------------------------------------

    def _max_wait_ms(self) -> int:
        """The longest wait one HTTP call may ask for within the client's request timeout."""
        return max(0, int((self.client.request_timeout - 2.5) * 1000))

    async def get(
        self, consumer: str, *, max: int = 1, visibility: float | None = None,  # noqa: A002
        wait: float | None = None, ack: Iterable[str | _HasReceipt] = (),
        request_id: str | None = None, visibility_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> list[Message]:
        """Lease up to `max` messages for `visibility` seconds (queue default if None),
        waiting up to `wait` seconds for the first; [] if none came. `ack`: receipts (or
        messages) to ack in the same command first, like JetStream's AckNext (receipts that
        no longer match are skipped; use `ack_many` to learn which)."""
        check_consumer_id(consumer)
        msgs, _ = await self._fetch(consumer, max, _ms("visibility", visibility, visibility_ms),
                                    _ms("wait", wait, wait_ms) or 0, ack, request_id, None)
        return msgs

    async def _fetch(
        self, consumer: str, max: int, vis_ms: int | None, wait_ms: int,  # noqa: A002
        ack: Iterable[str | _HasReceipt], request_id: str | None, cons: Consumer | None,
        default_vis_s: float | None = None,
    ) -> tuple[list[Message], dict[str, Any]]:
        deadline = time.monotonic() + wait_ms / 1000
        ack = list(ack)
        acks = _receipts(ack)
        acked: dict[str, Any] = {}
        vis_s = vis_ms / 1000 if vis_ms is not None else default_vis_s
        while True:
            left = _clamp(int((deadline - time.monotonic()) * 1000), 0, self._max_wait_ms())
            body: dict[str, Any] = {"consumer": consumer, "max": max, "wait_ms": left}
            if vis_ms is not None:
                body["visibility_ms"] = vis_ms
            if acks:
                body["ack"] = acks
            sent = time.monotonic()
            res = await self._call("POST", "/dequeue", body, mutating=True,
                                   request_id=request_id)
            if acks:
                _mark_settled(ack)
                acked = {"acked": res.get("acked", 0), "unknown": res.get("ack_unknown", [])}
            if res["messages"] or time.monotonic() >= deadline:
                # the lease counts from the server's dequeue, after `sent`; the long poll may
                # have waited before it, so this is conservative only for wait 0.
                ends = None if vis_s is None else sent + vis_s
                return [Message(self, d, ends, cons) for d in res["messages"]], acked
            request_id, acks, ack = None, [], []  # the next poll is a new request
            if left == 0:
                await asyncio.sleep(0.2)

    async def ack(self, *receipts: str | _HasReceipt) -> AckResult:
        """Delete delivered messages (receipts or messages). Raises UnknownReceipt when none
        matched; for a batch, the unmatched ones are in `unknown`."""
        rs = _receipts(receipts)
        if not rs:
            return AckResult()
        body = {"receipt": rs[0]} if len(rs) == 1 else {"receipts": rs}
        res = AckResult.of(await self._call("POST", "/ack", body, mutating=True))
        _mark_settled(receipts)
        return res

    async def ack_many(self, items: Iterable[str | _HasReceipt]) -> AckResult:
        items = list(items)
        if not items:
            return AckResult()
        res = AckResult.of(await self._call("POST", "/ack", {"receipts": _receipts(items)},
                                            mutating=True))
        _mark_settled(items)
        return res

    async def nack(
        self, *receipts: str | _HasReceipt, delay: float | None = None,
        error: str | None = None, delay_ms: int | None = None,
    ) -> AckResult:
        """Give messages back for redelivery (after `delay` seconds); after max_deliveries
        they go to the dead-letter queue with `error` as the last error."""
        body: dict[str, Any] = {"receipts": _receipts(receipts),
                                "delay_ms": _ms("delay", delay, delay_ms) or 0}
        if error is not None:
            body["error"] = error[:1024]
        res = AckResult.of(await self._call("POST", "/nack", body, mutating=True))
        _mark_settled(receipts)
        return res

    async def heartbeat(self, consumer: str) -> list[int]:
        """Keep `consumer` registered; returns its partitions."""
        check_consumer_id(consumer)
        res = await self._call("POST", f"/consumers/{quote(consumer, safe='')}/heartbeat",
                               None, mutating=True)
        return list(res["partitions"])

    async def leave(self, consumer: str) -> int:
        """Unregister: messages it holds go back at once. Returns how many."""
        check_consumer_id(consumer)
        res = await self._call("DELETE", f"/consumers/{quote(consumer, safe='')}",
                               mutating=True)
        return int(res["released"])

    def consume(
        self, consumer: str | None = None, *, batch: int = 10, visibility: float | None = None,
        wait: float | None = None, heartbeat: float | None = None,
        leave_on_close: bool = True, batch_acks: bool = True, ack_linger: float = 0.2,
        visibility_ms: int | None = None, wait_ms: int | None = None,
        heartbeat_s: float | None = None,
    ) -> Consumer:
        """`async with queue.consume("w1") as msgs: async for msg in msgs:` yields messages
        forever (ack or nack each, or use `msg.process()`). Leaving the `async with` flushes
        queued acks and leaves: messages not yet acked go back at once instead of after
        their timeout. `heartbeat`: at most this many seconds between heartbeats (they are
        always at most a third of the queue's consumer_ttl_ms). `wait`: long-poll seconds
        per fetch (default 20)."""
        w = _ms("wait", wait, wait_ms)
        return Consumer(self, check_consumer_id(consumer or default_consumer_id()), batch,
                        _ms("visibility", visibility, visibility_ms),
                        20_000 if w is None else w,
                        heartbeat if heartbeat is not None else heartbeat_s,
                        leave_on_close, batch_acks, ack_linger)


class Consumer:
    """An async iterator of messages for one consumer id. A background task heartbeats while
    the handler works, flushes queued acks, and notices a hung handler (see the module doc)."""

    def __init__(
        self, queue: Queue, consumer: str, batch: int, visibility_ms: int | None,
        wait_ms: int, heartbeat: float | None, leave_on_close: bool, batch_acks: bool = True,
        ack_linger: float = 0.2,
    ):
        self.queue, self.id = queue, consumer
        self.batch, self.visibility_ms, self.wait_ms = batch, visibility_ms, wait_ms
        self.heartbeat_max, self.leave_on_close = heartbeat, leave_on_close
        self.batch_acks, self.ack_linger = batch_acks, ack_linger
        self.heartbeat_s: float | None = None  # known after the first fetch
        self.visibility_s: float | None = None  # the lease of a fetch, once known
        self.hung = False
        self.closed = False
        self.ack_unknown: list[str] = []
        self._buf: collections.deque[Message] = collections.deque()
        self._outstanding: dict[str, Message] = {}
        self._pending: list[Message] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_contact = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._ready = False

    async def _learn(self) -> None:
        """The queue's consumer TTL and visibility: heartbeats go at a third of the TTL."""
        ttl = MIN_CONSUMER_TTL_S  # unknown: heartbeat often enough for the shortest TTL
        try:
            opts = (await self.queue.info(consistency="stale"))["options"]
            ttl = opts["consumer_ttl_ms"] / 1000
            self.visibility_s = opts["visibility_ms"] / 1000
        except NotFound:
            # created by our first fetch, with the defaults
            ttl, self.visibility_s = DEFAULT_CONSUMER_TTL_S, DEFAULT_VISIBILITY_S
        except DistSyncError:
            pass  # not readable with this token: leases unknown, no hang detection
        if self.visibility_ms is not None:
            self.visibility_s = self.visibility_ms / 1000
        every = ttl / 3
        if self.heartbeat_max is not None and self.heartbeat_max > 0:
            every = min(every, self.heartbeat_max)
        self.heartbeat_s = every
        self._ready = True

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        if self.closed:
            raise StopAsyncIteration
        if not self._ready:
            await self._learn()
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(_maintain(weakref.ref(self), self._wake))
        self.hung = False  # the handler is back
        while True:
            while not self._buf:
                acks, self._pending = self._pending, []
                got, res = await self.queue._fetch(
                    self.id, self.batch, self.visibility_ms, self.wait_ms, acks, None, self,
                    self.visibility_s)
                self._note_acked(res)
                self._last_contact = time.monotonic()
                self._buf.extend(got)
            msg = self._buf.popleft()
            if msg.expired:  # leased while earlier ones were handled; it will come back
                continue
            self._outstanding[msg.receipt] = msg
            self._poke()
            return msg

    def _note_acked(self, res: dict[str, Any]) -> None:
        if res.get("unknown"):
            self.ack_unknown.extend(res["unknown"])
            log.warning("queue %s: %d acks of consumer %s matched no delivery", self.queue.name,
                        len(res["unknown"]), self.id)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _settled(self, msg: Message) -> None:
        self._outstanding.pop(msg.receipt, None)

    def _defer_ack(self, msg: Message) -> AckResult:
        msg.settled = True
        self._outstanding.pop(msg.receipt, None)
        self._pending.append(msg)
        if self._flusher is None or self._flusher.done():
            # a task of its own (not the weakly-referenced upkeep loop), so that queued acks
            # go out even if the caller drops the consumer without closing it
            self._flusher = asyncio.create_task(self._flush_later())
        return AckResult(deferred=1)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.ack_linger)
        with contextlib.suppress(DistSyncError):
            await self.flush()

    async def flush(self) -> AckResult:
        """Send the queued acks now (one command); returns what it did."""
        pending, self._pending = self._pending, []
        if not pending:
            return AckResult()
        try:
            res = await self.queue.ack_many(pending)
        except UnknownReceipt as e:
            res = AckResult(unknown=list(e.body.get("unknown", [m.receipt for m in pending])))
        self._note_acked({"unknown": res.unknown})
        self._last_contact = time.monotonic()
        return res

    async def _tick(self) -> float:
        """One round of upkeep; returns the seconds until the next is due."""
        now = time.monotonic()
        waits = []
        if self._outstanding and not self.hung:
            oldest = min((m.deadline for m in self._outstanding.values()
                          if m.deadline is not None), default=None)
            if oldest is not None and now >= oldest + HUNG_GRACE_S:
                await self._hung()
                return 0.0
            if oldest is not None:
                waits.append(oldest + HUNG_GRACE_S - now)
        if not self.hung and self.heartbeat_s is not None:
            due = self._last_contact + self.heartbeat_s
            if now >= due:
                with contextlib.suppress(DistSyncError):
                    await self.queue.heartbeat(self.id)
                    self._last_contact = time.monotonic()
                due = time.monotonic() + self.heartbeat_s
            waits.append(due - time.monotonic())
        return max(0.0, min(waits, default=self.heartbeat_s or 1.0))

    async def _hung(self) -> None:
        """The handler outlived a lease: stop claiming liveness and give the partitions
        away (the cluster gives the messages back at once)."""
        self.hung = True
        now = time.monotonic()
        for r, m in list(self._outstanding.items()):  # counted once (they stay `expired`)
            if m.deadline is not None and now >= m.deadline:
                del self._outstanding[r]
        log.warning("queue %s: consumer %s's handler outlived a message's visibility "
                    "timeout; leaving so its partitions move to other consumers",
                    self.queue.name, self.id)
        await self.flush()
        with contextlib.suppress(DistSyncError):
            await self.queue.leave(self.id)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(DistSyncError):
            await self.flush()
        if self.leave_on_close:
            try:
                await self.queue.leave(self.id)
            except DistSyncError:
                pass  # not registered, or the cluster is away: the TTL will do it

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _maintain(ref: weakref.ref[Consumer], wake: asyncio.Event) -> None:
    while True:
        c = ref()
        if c is None or c.closed:
            return
        try:
            delay = await c._tick()
        except DistSyncError:
            delay = 0.5
        del c
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)


# -- blocking forms -----------------------------------------------------------------------


class BlockingMessage:
    """A Message for ordinary threads (its attributes, and blocking ack/nack/process)."""

    def __init__(self, msg: Message, run: Callable[[Coroutine[Any, Any, Any]], Any]):
        self._msg, self._run = msg, run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._msg, name)

    @property
    def receipt(self) -> str:
        return self._msg.receipt

    @property
    def body(self) -> Any:
        return self._msg.body

    @property
    def expired(self) -> bool:
        return self._msg.expired

    def ack(self) -> AckResult:
        res: AckResult = self._run(self._msg.ack())
        return res

    def nack(self, delay: float | None = None, error: str | None = None, *,
             delay_ms: int | None = None) -> AckResult:
        res: AckResult = self._run(self._msg.nack(delay, error=error, delay_ms=delay_ms))
        return res

    @contextlib.contextmanager
    def process(self, *, requeue_delay: float = 0.0) -> Iterator[BlockingMessage]:
        """`with msg.process():` ack on success, nack with the error on raise. A thread
        cannot be cancelled: a block that outlives the lease raises LeaseExpired at its end
        (and is neither acked nor nacked)."""
        m = self._msg
        if m.expired:
            m.settled = True
            raise LeaseExpired(409, "lease_expired", f"message {m.id!r}: its visibility "
                                                     "timeout passed before processing")
        try:
            yield self
        except BaseException as e:
            with contextlib.suppress(DistSyncError):
                self.nack(requeue_delay, error=f"{type(e).__name__}: {e}")
            raise
        if m.expired:
            m.settled = True
            if m._consumer is not None:
                m._consumer._settled(m)
            raise LeaseExpired(409, "lease_expired", f"message {m.id!r}: the handler "
                                                     "outlived its visibility timeout")
        self.ack()

    def __repr__(self) -> str:
        return repr(self._msg)


class BlockingConsumer:
    """`with queue.consume("w") as msgs: for msg in msgs:` on a BlockingClient."""

    def __init__(self, consumer: Consumer, run: Callable[[Coroutine[Any, Any, Any]], Any]):
        self._c, self._run = consumer, run

    @property
    def id(self) -> str:
        return self._c.id

    @property
    def hung(self) -> bool:
        return self._c.hung

    @property
    def ack_unknown(self) -> list[str]:
        return self._c.ack_unknown

    def __iter__(self) -> Iterator[BlockingMessage]:
        """Messages until closed; leaving a plain `for` loop (break, an exception) closes
        the consumer as the `with` form does."""
        try:
            while True:
                try:
                    yield BlockingMessage(self._run(self._c.__anext__()), self._run)
                except StopAsyncIteration:
                    return
        finally:
            self.close()

    def flush(self) -> AckResult:
        res: AckResult = self._run(self._c.flush())
        return res

    def close(self) -> None:
        self._run(self._c.close())

    def __enter__(self) -> BlockingConsumer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class BlockingQueue:
    """The same methods as Queue, blocking."""

    def __init__(self, client: BlockingClient, name: str):
        self._run = client._run
        self._q = Queue(client._client, name)
        self.name = name

    def _msgs(self, got: list[Message]) -> list[BlockingMessage]:
        return [BlockingMessage(m, self._run) for m in got]

    def create(self, **options: Any) -> dict[str, Any]:
        return self._run(self._q.create(**options))

    def info(self, *, consistency: str = "linearizable") -> dict[str, Any]:
        return self._run(self._q.info(consistency=consistency))

    def delete(self) -> dict[str, Any]:
        return self._run(self._q.delete())

    def put(self, body: Any, *, key: str | None = None, id: str | None = None,  # noqa: A002
            headers: dict[str, str] | None = None, request_id: str | None = None) -> str:
        return self._run(self._q.put(body, key=key, id=id, headers=headers,
                                     request_id=request_id))

    def put_many(self, messages: Iterable[dict[str, Any]], *,
                 request_id: str | None = None) -> list[str]:
        return self._run(self._q.put_many(messages, request_id=request_id))

    def get(
        self, consumer: str, *, max: int = 1, visibility: float | None = None,  # noqa: A002
        wait: float | None = None, ack: Iterable[str | _HasReceipt] = (),
        request_id: str | None = None, visibility_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> list[BlockingMessage]:
        return self._msgs(self._run(self._q.get(
            consumer, max=max, visibility=visibility, wait=wait, ack=ack,
            request_id=request_id, visibility_ms=visibility_ms, wait_ms=wait_ms)))

    def ack(self, *receipts: str | _HasReceipt) -> AckResult:
        return self._run(self._q.ack(*receipts))

    def ack_many(self, items: Iterable[str | _HasReceipt]) -> AckResult:
        return self._run(self._q.ack_many(items))

    def nack(self, *receipts: str | _HasReceipt, delay: float | None = None,
             error: str | None = None, delay_ms: int | None = None) -> AckResult:
        return self._run(self._q.nack(*receipts, delay=delay, error=error, delay_ms=delay_ms))

    def heartbeat(self, consumer: str) -> list[int]:
        return self._run(self._q.heartbeat(consumer))

    def leave(self, consumer: str) -> int:
        return self._run(self._q.leave(consumer))

    def consume(self, consumer: str | None = None, **kw: Any) -> BlockingConsumer:
        """A blocking consumer (same arguments as Queue.consume): use it in a `with` block
        and iterate it."""
        return BlockingConsumer(self._q.consume(consumer, **kw), self._run)
