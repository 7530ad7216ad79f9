"""The queue service's data: options and their limits, messages, partitions, consumers, and
the snapshot encoding. Behaviour (the commands) is in queues.py.

A message is in exactly one of three states:

    READY     waiting in its partition, deliverable (ordered by `seq`, its enqueue order)
    INFLIGHT  leased to one consumer until `deadline` (the visibility timeout)
    DELAYED   nacked with a delay; becomes READY again at `deadline`

Acked, dead-lettered and expired messages are removed from the queue's `messages`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import Any

from .base import SNAPSHOT_PACKER

READY, INFLIGHT, DELAYED = 0, 1, 2
STATE_NAMES = {READY: "ready", INFLIGHT: "in_flight", DELAYED: "delayed"}

# Option -> (default, minimum, maximum). Durations are milliseconds.
OPTION_LIMITS: dict[str, tuple[int, int, int]] = {
    "partitions": (8, 1, 256),
    "visibility_ms": (30_000, 100, 12 * 3600 * 1000),
    "max_deliveries": (5, 0, 1000),  # 0: unlimited, never dead-lettered
    "max_length": (100_000, 1, 10_000_000),
    "max_bytes": (64 << 20, 1024, 4 << 30),
    "retention_ms": (4 * 86400 * 1000, 0, 14 * 86400 * 1000),  # 0: keep until acked
    "dedupe_window_ms": (300_000, 0, 86400 * 1000),
    "consumer_ttl_ms": (15_000, 3_000, 3600 * 1000),
}
BOOL_OPTIONS: dict[str, bool] = {"dead_letter": True}
IMMUTABLE_OPTIONS = ("partitions",)

DLQ_SUFFIX = ".dlq"
# A dead-letter queue created on demand: one partition (dead letters in the order they died),
# never dead-lettered itself, kept until acked.
DLQ_OPTIONS = {"partitions": 1, "max_deliveries": 0, "dead_letter": False, "retention_ms": 0}

MAX_MESSAGE_BYTES = 256 * 1024  # body (as JSON) + key + headers, like SQS
MAX_BATCH = 1000  # messages per enqueue, receipts per ack/nack, messages per dequeue
MAX_WAIT_MS = 20_000  # long-poll limit, like SQS
DEDUPE_MAX_IDS = 100_000  # per queue; the oldest ids leave first


def default_options() -> dict[str, Any]:
    opts: dict[str, Any] = {k: v[0] for k, v in OPTION_LIMITS.items()}
    opts.update(BOOL_OPTIONS)
    return opts


def check_options(opts: dict[str, Any]) -> None:
    """Raise ValueError for an unknown option or a value out of range (the API checks the
    same with pydantic; this keeps the state machine safe on its own)."""
    for k, v in opts.items():
        if k in OPTION_LIMITS:
            _, lo, hi = OPTION_LIMITS[k]
            if type(v) is not int or not lo <= v <= hi:
                raise ValueError(f"{k} must be an integer in [{lo}, {hi}]")
        elif k in BOOL_OPTIONS:
            if type(v) is not bool:
                raise ValueError(f"{k} must be true or false")
        else:
            raise ValueError(f"unknown option {k!r}")


class Message:
    """One message. `packed` caches its snapshot row (msgpack of `encode()`) so that a
    snapshot re-encodes only the messages that changed since the last one: a long backlog
    costs a join, not a full encoding, each time (see `queue_chunks`). Whatever changes a
    field of `encode()` after creation must call `changed()`."""

    __slots__ = (
        "id", "seq", "part", "body", "key", "headers", "size", "enq_ms", "deliveries",
        "state", "consumer", "deadline", "receipt", "error", "dead", "packed",
    )

    def __init__(
        self, mid: str, seq: int, part: int, body: Any, key: str | None,
        headers: dict[str, str] | None, size: int, enq_ms: int,
    ):
        self.id, self.seq, self.part = mid, seq, part
        self.body, self.key, self.headers = body, key, headers
        self.size, self.enq_ms = size, enq_ms
        self.deliveries = 0
        self.state = READY
        self.consumer: str | None = None
        self.deadline = 0
        self.receipt: str | None = None  # of the latest delivery
        self.error: str | None = None  # last error (nack reason, "visibility timeout", ...)
        self.dead: list[Any] | None = None  # [source queue, deliveries, error, at_ms] in a DLQ
        self.packed: bytes | None = None

    def changed(self) -> None:
        self.packed = None

    def pack(self) -> bytes:
        """The snapshot row, from the cache or encoded now (and cached)."""
        b = self.packed
        if b is None:
            b = self.packed = SNAPSHOT_PACKER.pack(self.encode())
        return b

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "receipt": self.receipt, "body": self.body, "partition": self.part,
            "seq": self.seq, "deliveries": self.deliveries, "enqueued_at": self.enq_ms,
        }
        if self.key is not None:
            out["key"] = self.key
        if self.headers:
            out["headers"] = self.headers
        if self.dead is not None:
            src, n, err, at = self.dead
            out["dead_letter"] = {"queue": src, "deliveries": n, "error": err, "at": at}
        return out

    def encode(self) -> list[Any]:
        return [
            self.id, self.seq, self.part, self.body, self.key, self.headers, self.size,
            self.enq_ms, self.deliveries, self.state, self.consumer, self.deadline,
            self.receipt, self.error, self.dead,
        ]

    @classmethod
    def decode(cls, row: list[Any]) -> Message:
        m = cls.__new__(cls)
        (m.id, m.seq, m.part, m.body, m.key, m.headers, m.size, m.enq_ms, m.deliveries,
         m.state, m.consumer, m.deadline, m.receipt, m.error, m.dead) = row
        m.packed = None
        return m


class Partition:
    """READY messages in `seq` order: `fresh` holds never-delivered ones (appended in seq
    order), `returned` is a heap of ones that came back from a consumer. The head is the
    lower of the two, so a returned message goes out again before newer ones. Both may hold
    stale entries (a message acked while READY); they are skipped when met."""

    __slots__ = ("fresh", "returned", "ready", "holders")

    def __init__(self) -> None:
        self.fresh: deque[Message] = deque()
        self.returned: list[tuple[int, Message]] = []
        self.ready = 0
        self.holders: dict[str, int] = {}  # consumer -> messages of this partition in flight

    def push_returned(self, m: Message) -> None:
        heapq.heappush(self.returned, (m.seq, m))

    def head(self, live: dict[str, Message]) -> Message | None:
        """The READY message with the lowest seq, dropping stale entries on the way."""
        fresh, ret = self.fresh, self.returned
        while fresh:
            m = fresh[0]
            if m.state == READY and live.get(m.id) is m:
                break
            fresh.popleft()
        while ret:
            m = ret[0][1]
            if m.state == READY and live.get(m.id) is m:
                break
            heapq.heappop(ret)
        if fresh and (not ret or fresh[0].seq < ret[0][0]):
            return fresh[0]
        return ret[0][1] if ret else None

    def pop_head(self, live: dict[str, Message]) -> Message | None:
        m = self.head(live)
        if m is not None:
            self.take(m)
        return m

    def take(self, m: Message) -> None:
        """Remove `m`, which `head` just returned, from the indexes."""
        if self.fresh and self.fresh[0] is m:
            self.fresh.popleft()
        else:
            heapq.heappop(self.returned)

    def free_for(self, consumer: str) -> bool:
        """No other consumer holds a message of this partition in flight."""
        h = self.holders
        return not h or (len(h) == 1 and consumer in h)


class Consumer:
    __slots__ = ("id", "last_seen", "partitions", "inflight", "last_rid", "last_index",
                 "last_ids")

    def __init__(self, cid: str, last_seen: int):
        self.id = cid
        self.last_seen = last_seen
        self.partitions: list[int] = []  # derived: the assignment
        self.inflight: dict[str, None] = {}  # message ids this consumer holds (ordered set)
        # The latest dequeue that returned messages, so a retry with the same request id
        # gets the same messages instead of leasing more.
        self.last_rid: str | None = None
        self.last_index = 0
        self.last_ids: list[str] = []


class Queue:
    def __init__(self, name: str, opts: dict[str, Any], created: int):
        self.name = name
        self.opts = opts
        self.created = created  # log index of creation
        self.seq = 0  # next message sequence number
        self.rr = 0  # round-robin counter for messages without a key
        self.parts = [Partition() for _ in range(opts["partitions"])]
        self.messages: dict[str, Message] = {}
        self.consumers: dict[str, Consumer] = {}
        self.assignment: list[str | None] = [None] * opts["partitions"]
        self.dedupe: OrderedDict[str, int] = OrderedDict()  # client id -> enqueued at (ms)
        self.bytes = 0
        self.inflight = 0
        self.delayed = 0
        self.stats = dict.fromkeys(STAT_NAMES, 0)

    def ready(self) -> int:
        return sum(p.ready for p in self.parts)


STAT_NAMES = ("enqueued", "duplicates", "dequeued", "acked", "nacked", "redelivered",
              "dead_lettered", "expired")


def _queue_head(q: Queue) -> dict[str, Any]:
    """Everything of a queue's snapshot but its messages (which come last)."""
    return {
        "name": q.name, "opts": q.opts, "created": q.created, "seq": q.seq, "rr": q.rr,
        "stats": [q.stats[k] for k in STAT_NAMES],
        "dedupe": [[k, v] for k, v in q.dedupe.items()],
        "consumers": [
            [c.id, c.last_seen, c.last_rid, c.last_index, c.last_ids]
            for c in q.consumers.values()
        ],
    }


def encode_queue(q: Queue) -> dict[str, Any]:
    return {**_queue_head(q), "messages": [m.encode() for m in q.messages.values()]}


def queue_chunks(q: Queue) -> list[bytes]:
    """msgpack of `encode_queue(q)` as a list of byte strings to concatenate: the same bytes
    (msgpack is compositional: a map or array is a header followed by its items), but each
    message row comes from its cache, so the cost is in the messages that changed."""
    head = _queue_head(q)
    p = SNAPSHOT_PACKER
    out = [p.pack_map_header(len(head) + 1)]
    for k, v in head.items():
        out.append(p.pack(k))
        out.append(p.pack(v))
    out.append(p.pack("messages"))
    out.append(p.pack_array_header(len(q.messages)))
    out.extend([m.packed or m.pack() for m in q.messages.values()])
    return out


def decode_queue(d: dict[str, Any]) -> Queue:
    """Rebuild a queue, including the derived structures (partitions, holders, counts); the
    assignment is recomputed by the service."""
    q = Queue(d["name"], dict(d["opts"]), d["created"])
    q.seq, q.rr = d["seq"], d["rr"]
    q.stats = dict(zip(STAT_NAMES, d["stats"], strict=True))
    q.dedupe = OrderedDict((k, v) for k, v in d["dedupe"])
    for cid, seen, rid, idx, ids in d["consumers"]:
        c = Consumer(cid, seen)
        c.last_rid, c.last_index, c.last_ids = rid, idx, list(ids)
        q.consumers[cid] = c
    ready: list[Message] = []
    for row in d["messages"]:
        m = Message.decode(row)
        q.messages[m.id] = m
        q.bytes += m.size
        if m.state == READY:
            ready.append(m)
            q.parts[m.part].ready += 1
        elif m.state == INFLIGHT:
            q.inflight += 1
            p = q.parts[m.part]
            p.holders[m.consumer] = p.holders.get(m.consumer, 0) + 1  # type: ignore[index]
            q.consumers[m.consumer].inflight[m.id] = None  # type: ignore[index]
        else:
            q.delayed += 1
    for m in sorted(ready, key=lambda m: m.seq):
        q.parts[m.part].fresh.append(m)
    return q
