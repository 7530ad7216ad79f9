"""The queue service's state and the transitions every command is built from: placing,
leasing, giving back, dead-lettering and removing messages, consumer registration and
partition assignment, and the index of visibility/delay deadlines. The commands themselves
(and the leader-driven ones) are in queues.py; the data types in queue_model.py.
"""

from __future__ import annotations

import heapq
import itertools
from functools import lru_cache
from typing import Any

from ..hashring import HashRing
from .base import SNAPSHOT_PACKER, CommandError
from .queue_model import (
    DELAYED,
    DLQ_OPTIONS,
    DLQ_SUFFIX,
    INFLIGHT,
    READY,
    Consumer,
    Message,
    Queue,
    decode_queue,
    default_options,
    encode_queue,
    queue_chunks,
)

CONSUMER_VNODES = 64
PARTITION_VNODES = 160
_COMPACT_MIN = 1024  # timer entries before the first compaction
# Snapshot bytes per message row besides its `size`, and per remembered client id (measured:
# ~54 for a row with a short generated id, and ~40 for an id; a hint, not a bound).
ROW_BYTES, ID_BYTES = 56, 48

Timer = tuple[int, int, str, tuple[tuple[str, str], ...]]


@lru_cache(maxsize=64)
def partition_ring(partitions: int) -> HashRing:
    """The ring that maps a message key to a partition (the same for every queue with this
    many partitions, so it is built once)."""
    return HashRing([str(p) for p in range(partitions)], vnodes=PARTITION_VNODES)


class NullObserver:
    """Receives events for metrics; the node's API layer installs a Prometheus one."""

    def count(self, queue: str, event: str, n: int = 1) -> None: ...

    def latency(self, queue: str, kind: str, seconds: float) -> None: ...

    def latencies(self, queue: str, kind: str, seconds: list[float]) -> None: ...


class QueueState:
    """Replicated queue state plus derived indexes; see QueueService for the commands."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.obs: Any = NullObserver()
        # Derived (rebuilt on restore): a heap of (deadline, tie, queue, ((message id,
        # receipt), ...)) covering every INFLIGHT or DELAYED message. One entry per group
        # that shares a deadline (the leases of one dequeue), so a 100-message batch costs
        # one push; members acked or returned since are skipped, and entries left with no
        # live member are compacted away.
        self._timers: list[Timer] = []
        self._tie = itertools.count()
        self._compact_at = _COMPACT_MIN
        # Leader-only, volatile: what this leader proposed and when; since when it leads.
        self._proposed: dict[tuple[Any, ...], int] = {}
        self._leader_since = 0

    # -- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return [encode_queue(q) for q in self.queues.values()]

    def snapshot_chunks(self) -> list[bytes]:
        """msgpack of `snapshot()`, in pieces, re-encoding only what changed since the last
        call (see Message.packed): what the Registry joins into the snapshot."""
        out = [SNAPSHOT_PACKER.pack_array_header(len(self.queues))]
        for q in self.queues.values():
            out.extend(queue_chunks(q))
        return out

    def snapshot_size_hint(self) -> int:
        """About the bytes `snapshot_chunks` would give, in O(queues): what the Registry
        weighs against the log to decide when a snapshot is worth its write."""
        return sum(q.bytes + ROW_BYTES * len(q.messages) + ID_BYTES * len(q.dedupe)
                   for q in self.queues.values())

    def restore(self, data: Any) -> None:
        self.queues = {}
        for d in data or []:
            q = decode_queue(d)
            self.queues[q.name] = q
            self._rebalance(q)
        self._rebuild_timers()
        self._proposed.clear()

    # -- internals ---------------------------------------------------------------------------

    def _existing(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise CommandError("not_found", f"queue {name!r} does not exist", 404)
        return q

    def _queue(self, name: str, index: int) -> Queue:
        """The queue, created on first use with the default options (those of a
        dead-letter queue for a name ending in `.dlq`)."""
        q = self.queues.get(name)
        if q is None:
            if not isinstance(name, str) or not name:
                raise ValueError("queue name")
            q = self._new_queue(name, defaults_for(name), index)
        return q

    def _new_queue(self, name: str, opts: dict[str, Any], index: int) -> Queue:
        q = Queue(name, opts, index)
        self.queues[name] = q
        return q

    def _add_message(
        self, q: Queue, mid: str, body: Any, key: str | None, headers: Any, size: int, now: int,
    ) -> Message:
        n = q.opts["partitions"]
        if key is not None:
            part = int(partition_ring(n).owner(key)) if n > 1 else 0
        else:
            part = q.rr % n
            q.rr += 1
        m = Message(mid, q.seq, part, body, key, headers, size, now)
        q.seq += 1
        q.messages[mid] = m
        q.bytes += size
        p = q.parts[part]
        p.fresh.append(m)
        p.ready += 1
        return m

    def _prune_dedupe(self, q: Queue, now: int) -> None:
        cutoff = now - q.opts["dedupe_window_ms"]
        d = q.dedupe
        while d:
            cid, at = next(iter(d.items()))
            if at > cutoff:
                break
            d.popitem(last=False)

    def _touch(self, q: Queue, cid: str, now: int) -> Consumer:
        if not isinstance(cid, str) or not cid:
            raise ValueError("consumer id")
        c = q.consumers.get(cid)
        if c is None:
            c = q.consumers[cid] = Consumer(cid, now)
            self._rebalance(q)
        else:
            c.last_seen = max(c.last_seen, now)
        return c

    def _rebalance(self, q: Queue) -> None:
        n = q.opts["partitions"]
        for c in q.consumers.values():
            c.partitions = []
        if not q.consumers:
            q.assignment = [None] * n
            return
        ring = HashRing(sorted(q.consumers), vnodes=CONSUMER_VNODES)
        keys = [f"{q.name}/{p}" for p in range(n)]
        placed = ring.assign(keys)
        q.assignment = [placed[k] for k in keys]
        for p, cid in enumerate(q.assignment):
            q.consumers[cid].partitions.append(p)  # type: ignore[index]

    def _lease(
        self, q: Queue, c: Consumer, taken: list[Message], index: int, now: int, vis: int,
    ) -> None:
        """READY -> INFLIGHT for messages already taken off their partitions' indexes, all
        with receipts of this dequeue's `index` and one deadline. The hot path of a
        dequeue: per-message work is kept to the fields that change."""
        deadline, prefix, cid = now + vis, f"{index}:", c.id
        parts, held = q.parts, c.inflight
        waited: list[float] = []
        for m in taken:
            part = parts[m.part]
            part.ready -= 1
            part.holders[cid] = part.holders.get(cid, 0) + 1
            if not m.deliveries:
                waited.append(max(0, now - m.enq_ms) / 1000)
            m.packed = None  # Message.changed(), inlined
            m.state = INFLIGHT
            m.deliveries += 1
            m.consumer = cid
            m.receipt = prefix + m.id
            m.deadline = deadline
            held[m.id] = None
        n, again = len(taken), len(taken) - len(waited)
        q.inflight += n
        q.stats["dequeued"] += n
        self._push_timer(q, deadline, taken)
        if waited:
            self.obs.latencies(q.name, "first_delivery", waited)
        if again:
            q.stats["redelivered"] += again
            self.obs.count(q.name, "redelivered", again)

    def _unlease(self, q: Queue, m: Message) -> None:
        """INFLIGHT -> (caller decides): release the consumer's hold."""
        holders = q.parts[m.part].holders
        cid = m.consumer
        assert cid is not None
        left = holders[cid] - 1
        if left:
            holders[cid] = left
        else:
            del holders[cid]
        c = q.consumers.get(cid)
        if c is not None:
            c.inflight.pop(m.id, None)
        q.inflight -= 1

    def _give_back(
        self, q: Queue, m: Message, now: int, delay: int, error: str, index: int,
    ) -> bool:
        """An INFLIGHT message comes back (nack, visibility timeout, consumer gone): to the
        dead-letter queue after max_deliveries, else delayed or READY at its place. Returns
        True if it was dead-lettered."""
        self._unlease(q, m)
        m.changed()
        m.error = error
        limit = q.opts["max_deliveries"]
        if limit and m.deliveries >= limit:
            self._dead_letter(q, m, now, index)
            return True
        keep = q.opts["retention_ms"]
        if keep and m.enq_ms + keep <= now:  # too old to deliver again
            del q.messages[m.id]
            q.bytes -= m.size
            q.stats["expired"] += 1
            self.obs.count(q.name, "expired")
            return False
        if delay > 0:
            m.state = DELAYED
            m.deadline = now + delay
            q.delayed += 1
            self._push_timer(q, m.deadline, [m])
        else:
            self._make_ready(q, m)
        return False

    def _make_ready(self, q: Queue, m: Message) -> None:
        m.changed()
        m.state = READY
        m.consumer = None
        part = q.parts[m.part]
        part.ready += 1
        part.push_returned(m)

    def _dead_letter(self, q: Queue, m: Message, now: int, index: int) -> None:
        """Move to `{queue}.dlq` (created on demand; its limits do not apply: a dead letter is
        never dropped), or drop when the queue has dead_letter off."""
        del q.messages[m.id]
        q.bytes -= m.size
        q.stats["dead_lettered"] += 1
        self.obs.count(q.name, "dead_lettered")
        if not q.opts["dead_letter"]:
            return
        dname = q.name + DLQ_SUFFIX
        dlq = self.queues.get(dname)
        if dlq is None:
            dlq = self._new_queue(dname, defaults_for(dname), index)
        mid = m.id if m.id not in dlq.messages else f"{m.id}~{index}.{dlq.seq}"
        d = self._add_message(dlq, mid, m.body, m.key, m.headers, m.size, m.enq_ms)
        d.dead = [q.name, m.deliveries, m.error, now]
        d.changed()
        dlq.stats["enqueued"] += 1
        self.obs.count(dname, "enqueued")

    def _remove(self, q: Queue, m: Message) -> None:
        """Delete a message in any state (ack, retention)."""
        if m.state == INFLIGHT:
            self._unlease(q, m)
        elif m.state == DELAYED:
            q.delayed -= 1
        else:
            q.parts[m.part].ready -= 1  # its partition entry is now stale and skipped
        del q.messages[m.id]
        q.bytes -= m.size

    def _drop_consumers(
        self, q: Queue, cids: list[str], now: int, why: str, index: int,
    ) -> int:
        """Unregister consumers; their messages in flight go back at once (like a closed
        AMQP channel), then the partitions are rebalanced over the rest."""
        held: list[Message] = []
        for cid in cids:
            c = q.consumers[cid]
            held.extend(q.messages[mid] for mid in c.inflight)
        for m in sorted(held, key=lambda m: m.seq):
            self._give_back(q, m, now, 0, why, index)
        for cid in cids:
            del q.consumers[cid]
        self._rebalance(q)
        return len(held)

    def by_receipt(self, q: Queue, receipt: Any) -> Message | None:
        """The current delivery a receipt names, or None (acked, redelivered since, forged)."""
        if not isinstance(receipt, str):
            return None
        _, sep, mid = receipt.partition(":")
        m = q.messages.get(mid) if sep else None
        return m if m is not None and m.receipt == receipt else None

    def _push_timer(self, q: Queue, deadline: int, ms: list[Message]) -> None:
        """Index messages whose visibility timeout or delay ends at `deadline`."""
        members = tuple([(m.id, m.receipt) for m in ms])  # type: ignore[misc]
        heapq.heappush(self._timers, (deadline, next(self._tie), q.name, members))
        if len(self._timers) >= self._compact_at:
            self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop entries with no live member left (all acked, returned or deleted). The next
        compaction waits until the heap has doubled, so the cost, proportional to the heap,
        is amortized O(1) per push; followers, which never pop due entries, rely on it."""
        self._timers = [e for e in self._timers if self._timer_any(e)]
        heapq.heapify(self._timers)
        self._compact_at = max(_COMPACT_MIN, 2 * len(self._timers))

    def _timer_any(self, e: Timer) -> bool:
        q = self.queues.get(e[2])
        if q is None:
            return False
        live, deadline = q.messages, e[0]
        for mid, receipt in e[3]:
            m = live.get(mid)
            if m is not None and m.receipt == receipt and m.deadline == deadline and (
                    m.state != READY):
                return True
        return False

    def _timer_live(self, e: Timer) -> list[Message]:
        """The entry's messages still waiting on its deadline."""
        q = self.queues.get(e[2])
        if q is None:
            return []
        live, deadline, out = q.messages, e[0], []
        for mid, receipt in e[3]:
            m = live.get(mid)
            if m is not None and m.receipt == receipt and m.deadline == deadline and (
                    m.state != READY):
                out.append(m)
        return out

    def _rebuild_timers(self) -> None:
        groups: dict[tuple[str, int], list[Message]] = {}
        for q in self.queues.values():
            for m in q.messages.values():
                if m.state != READY:
                    groups.setdefault((q.name, m.deadline), []).append(m)
        self._timers = [
            (deadline, next(self._tie), name, tuple([(m.id, m.receipt) for m in ms]))  # type: ignore[misc]
            for (name, deadline), ms in groups.items()
        ]
        heapq.heapify(self._timers)
        self._compact_at = max(_COMPACT_MIN, 2 * len(self._timers))


def defaults_for(name: str) -> dict[str, Any]:
    opts = default_options()
    if name.endswith(DLQ_SUFFIX):
        opts.update(DLQ_OPTIONS)
    return opts
