"""A partitioned work queue as a deterministic state machine on the Raft log: at-least-once
delivery with ack, visibility timeouts, nack with delay, dead-lettering, idempotent enqueue,
and consumers balanced over partitions by the consistent-hash ring.

Determinism: every command carries the leader's clock (`now`, ms) in its args; apply never
reads a clock. Message ids of messages without a client id are `~{index}.{i}` (the Raft
index of the enqueue and the position in its batch), and a receipt handle is
`{index}:{message id}` (the Raft index of the dequeue that delivered it), so every node agrees
on both. Visibility expiry, delayed redelivery, silent consumers and retention are proposed by
the leader through `due_commands` and re-checked at apply, so a late or repeated proposal is a
no-op.

Placement: a message with a `key` goes to the partition that owns the key on a hash ring over
the partitions; one without goes round-robin. Consumers register by dequeuing (or by a
heartbeat), and the partitions are assigned to them with `HashRing.assign` (bounded loads:
partition counts per consumer differ by at most one), recomputed when a consumer joins,
leaves or goes silent. A consumer takes only from its own partitions, and from one of them
only when no other consumer still holds a message of it in flight (a handed-over partition
is drained first), so each partition is processed by one consumer at a time, in order.
"""

from __future__ import annotations

import heapq
from typing import Any

from .base import CommandError, mismatch
from .queue_core import QueueState, defaults_for
from .queue_model import (
    DEDUPE_MAX_IDS,
    DELAYED,
    DLQ_SUFFIX,
    IMMUTABLE_OPTIONS,
    INFLIGHT,
    READY,
    Message,
    Queue,
    check_options,
)

_STATE_NAMES = {READY: "ready", INFLIGHT: "in_flight", DELAYED: "delayed"}
REPROPOSE_MS = 2_000  # a leader re-proposes a due command not applied by then
MAX_DUE_ITEMS = 2_000  # expiries per leader timer round


class QueueService(QueueState):
    name = "queues"

    # -- reads (local; linearizable after a ReadIndex barrier) ---------------------------

    def get(self, name: str) -> Queue | None:
        return self.queues.get(name)

    def names(self) -> list[str]:
        return sorted(self.queues)

    def describe(self, q: Queue) -> dict[str, Any]:
        parts = []
        for i, p in enumerate(q.parts):
            parts.append({
                "partition": i, "ready": p.ready, "consumer": q.assignment[i],
                "in_flight": sum(p.holders.values()),
            })
        consumers = [
            {"id": c.id, "partitions": c.partitions, "in_flight": len(c.inflight),
             "last_seen": c.last_seen}
            for c in sorted(q.consumers.values(), key=lambda c: c.id)
        ]
        dlq = q.name + DLQ_SUFFIX
        return {
            "name": q.name, "options": q.opts, "messages": len(q.messages),
            "ready": q.ready(), "in_flight": q.inflight, "delayed": q.delayed,
            "bytes": q.bytes, "partitions": parts, "consumers": consumers,
            "dead_letter_queue": dlq if dlq in self.queues else None,
            "dead_lettered": q.stats["dead_lettered"], "stats": dict(q.stats),
        }

    def peek(self, q: Queue, limit: int) -> list[dict[str, Any]]:
        """The `limit` oldest messages (by sequence) in any state, without leasing them or
        counting a delivery: what an operator reads before redriving a dead-letter queue.
        No receipt: a receipt acks, and a peek needs only the read role."""
        out = []
        for m in heapq.nsmallest(limit, q.messages.values(), key=lambda m: m.seq):
            v = m.view()
            del v["receipt"]
            v["state"] = _STATE_NAMES[m.state]
            if m.error:
                v["error"] = m.error
            out.append(v)
        return out

    def summary(self, q: Queue) -> dict[str, Any]:
        return {"name": q.name, "messages": len(q.messages), "ready": q.ready(),
                "in_flight": q.inflight, "delayed": q.delayed, "consumers": len(q.consumers)}

    def available(self, name: str, consumer: str) -> bool:
        """Would a dequeue by `consumer` get a message now? (Long-poll predicate.)"""
        q = self.queues.get(name)
        c = q.consumers.get(consumer) if q else None
        if q is None or c is None:
            return False
        for p in c.partitions:
            part = q.parts[p]
            if part.ready and part.free_for(consumer) and part.head(q.messages) is not None:
                return True
        return False

    def consumer_fresh(self, name: str, consumer: str, now_ms: int) -> bool:
        """Registered and seen within half its TTL: no heartbeat is needed yet."""
        q = self.queues.get(name)
        if q is None or consumer not in q.consumers:
            return False
        return q.consumers[consumer].last_seen + q.opts["consumer_ttl_ms"] // 2 > now_ms

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        fn = _OPS.get(op)
        if fn is None:
            raise CommandError("bad_op", f"unknown queues op {op!r}", 400)
        bad = _malformed_arg(op, args)
        if bad is not None:
            raise CommandError("bad_command", f"malformed {op} command: {bad}", 400)
        try:
            return fn(self, args, index)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            # Malformed arguments (the API never sends them): refuse, the same on every node.
            raise CommandError("bad_command", f"malformed {op} command: {e!r}", 400) from None

    def _create(self, args: dict[str, Any], index: int) -> Any:
        name, opts = args["q"], dict(args.get("opts") or {})
        try:
            check_options(opts)
        except ValueError as e:
            raise CommandError("invalid_options", str(e), 400) from None
        q = self.queues.get(name)
        if q is None:
            full = defaults_for(name)
            full.update(opts)
            self._new_queue(name, full, index)
            # Copies: a result is remembered (request-id dedupe, snapshots) as it was when
            # applied, and the options may change later.
            return {"created": True, "name": name, "options": dict(full)}
        for k in IMMUTABLE_OPTIONS:
            if k in opts and opts[k] != q.opts[k]:
                raise CommandError(
                    "immutable_option", f"{k} cannot change after creation (is {q.opts[k]})",
                    409, option=k, current=q.opts[k],
                )
        q.opts.update(opts)
        return {"created": False, "name": name, "options": dict(q.opts)}

    def _delete(self, args: dict[str, Any], index: int) -> Any:
        q = self._existing(args["q"])
        del self.queues[q.name]
        if q.inflight or q.delayed:
            self._compact_timers()
        return {"deleted": True, "messages": len(q.messages)}

    def _enqueue(self, args: dict[str, Any], index: int) -> Any:
        """All or nothing: a batch that does not fit is refused whole (reject-publish), and a
        refused batch changes nothing, not even the queue's existence."""
        name, now, msgs = args["q"], args["now"], args["m"]
        q = self.queues.get(name)
        opts = q.opts if q is not None else defaults_for(name)
        cutoff = now - opts["dedupe_window_ms"]
        new, dups, seen = [], [], set()
        for i, (_body, _key, cid, _headers, size) in enumerate(msgs):
            if type(size) is not int or size < 0:
                raise ValueError("size")
            if cid is not None and (cid in seen or (q is not None and (
                q.dedupe.get(cid, cutoff) > cutoff or cid in q.messages
            ))):
                dups.append(i)
                continue
            if cid is not None:
                seen.add(cid)
            new.append(i)
        have_n, have_bytes = (len(q.messages), q.bytes) if q is not None else (0, 0)
        for limit, have, add in (
            ("max_length", have_n, len(new)),
            ("max_bytes", have_bytes, sum(msgs[i][4] for i in new)),
        ):
            if add and have + add > opts[limit]:
                self.obs.count(name, "rejected", len(new))
                raise CommandError(
                    "queue_full", f"queue {name} would exceed {limit} ({opts[limit]}); "
                    "nothing was enqueued", 429, limit=limit, current=have, adding=add,
                )
        q = self._queue(name, index)
        self._prune_dedupe(q, now)
        for i in new:
            body, key, cid, headers, size = msgs[i]
            mid = cid if cid is not None else f"~{index}.{i}"
            self._add_message(q, mid, body, key, headers, size, now)
            if cid is not None:
                q.dedupe[cid] = now
                q.dedupe.move_to_end(cid)
        while len(q.dedupe) > DEDUPE_MAX_IDS:
            q.dedupe.popitem(last=False)
        q.stats["enqueued"] += len(new)
        q.stats["duplicates"] += len(dups)
        self.obs.count(q.name, "enqueued", len(new))
        if dups:
            self.obs.count(q.name, "duplicates", len(dups))
        return {"index": index, "n": len(msgs), "dup": dups}

    def _dequeue(self, args: dict[str, Any], index: int) -> Any:
        now, cid, rid, want = args["now"], args["c"], args.get("rid"), args["max"]
        if not isinstance(cid, str) or not cid or type(want) is not int or want < 0:
            raise ValueError("consumer or max")
        q = self._queue(args["q"], index)
        c = self._touch(q, cid, now)
        fp = args.get("fp")
        if rid is not None and fp is not None:
            # The request's fingerprint rides in the remembered id (no new snapshot field): the
            # same id with another request is refused, as the id table does elsewhere.
            rid = f"{rid}\x1e{fp.hex()}"
        if rid is not None and c.last_rid is not None and c.last_ids and rid != c.last_rid \
                and rid.split("\x1e")[0] == c.last_rid.split("\x1e")[0]:
            return mismatch("queues.dequeue")
        if rid is not None and rid == c.last_rid and c.last_ids:
            # A retry of a dequeue that was applied: the same messages, not more.
            prefix = f"{c.last_index}:"
            again = [q.messages.get(mid) for mid in c.last_ids]
            return {"messages": [
                m.view() for m in again
                if m is not None and m.state == INFLIGHT and m.consumer == cid
                and m.receipt is not None and m.receipt.startswith(prefix)
            ], "partitions": list(c.partitions), "replayed": True}
        acks = args.get("ack")
        acked, ack_unknown = self._ack_receipts(q, acks, now) if acks else (0, [])
        vis = args.get("vis") or q.opts["visibility_ms"]
        live = q.messages
        # The heads of the consumer's partitions, merged by seq: oldest first across them.
        heads: list[tuple[int, int, Message]] = []
        for p in c.partitions:
            part = q.parts[p]
            if part.ready and part.free_for(cid):
                m = part.head(live)
                if m is not None:
                    heads.append((m.seq, p, m))
        heapq.heapify(heads)
        taken: list[Message] = []
        while heads and len(taken) < want:
            _, p, m = heads[0]
            part = q.parts[p]
            part.take(m)
            taken.append(m)
            nxt = part.head(live)
            if nxt is None:
                heapq.heappop(heads)
            else:
                heapq.heapreplace(heads, (nxt.seq, p, nxt))
        if taken:
            self._lease(q, c, taken, index, now, vis)
            self.obs.count(q.name, "dequeued", len(taken))
            if rid is not None:
                c.last_rid, c.last_index, c.last_ids = rid, index, [m.id for m in taken]
        out = {"messages": [m.view() for m in taken], "partitions": list(c.partitions)}
        if acks:
            out["acked"], out["ack_unknown"] = acked, ack_unknown
        return out

    def _ack(self, args: dict[str, Any], index: int) -> Any:
        q = self._existing(args["q"])
        acked, unknown = self._ack_receipts(q, args["r"], args["now"])
        if not acked:
            raise CommandError(
                "unknown_receipt", "no receipt matched a current delivery (acked already, "
                "redelivered since, or never issued); nothing changed", 404, unknown=unknown,
            )
        return {"acked": acked, "unknown": unknown}

    def _ack_receipts(self, q: Queue, receipts: list[Any], now: int) -> tuple[int, list[Any]]:
        unknown, by, lived = [], set(), []
        for r in receipts:
            m = self.by_receipt(q, r)
            if m is None:
                unknown.append(r)
                continue
            by.add(m.consumer)
            self._remove(q, m)
            lived.append(max(0, now - m.enq_ms) / 1000)
        for cid in by:  # an ack shows its consumer is alive
            c = q.consumers.get(cid) if cid is not None else None
            if c is not None:
                c.last_seen = max(c.last_seen, now)
        acked = len(lived)
        if acked:
            q.stats["acked"] += acked
            self.obs.count(q.name, "acked", acked)
            self.obs.latencies(q.name, "end_to_end", lived)
        return acked, unknown

    def _nack(self, args: dict[str, Any], index: int) -> Any:
        q = self._existing(args["q"])
        now, delay, error = args["now"], args.get("delay") or 0, args.get("error")
        nacked, dead, unknown = 0, 0, []
        for r in args["r"]:
            m = self.by_receipt(q, r)
            if m is None or m.state != INFLIGHT:
                unknown.append(r)
                continue
            if m.consumer in q.consumers:
                q.consumers[m.consumer].last_seen = max(q.consumers[m.consumer].last_seen, now)
            nacked += 1
            q.stats["nacked"] += 1
            if self._give_back(q, m, now, delay, error or "nacked", index):
                dead += 1
        if not nacked:
            raise CommandError(
                "unknown_receipt", "no receipt matched a message in flight; nothing changed",
                404, unknown=unknown,
            )
        self.obs.count(q.name, "nacked", nacked)
        return {"nacked": nacked, "dead_lettered": dead, "unknown": unknown}

    def _heartbeat(self, args: dict[str, Any], index: int) -> Any:
        cid, now = args["c"], args["now"]
        if not isinstance(cid, str) or not cid:
            raise ValueError("consumer")
        q = self._queue(args["q"], index)
        c = self._touch(q, cid, now)
        return {"consumer": c.id, "partitions": list(c.partitions)}

    def _leave(self, args: dict[str, Any], index: int) -> Any:
        q = self._existing(args["q"])
        cid = args["c"]
        if cid not in q.consumers:
            raise CommandError("not_found", f"consumer {cid!r} is not registered", 404)
        released = self._drop_consumers(q, [cid], args["now"], "consumer left", index)
        return {"left": True, "released": released}

    def _consumer_expire(self, args: dict[str, Any], index: int) -> Any:
        q = self.queues.get(args["q"])
        if q is None:
            return {"expired": []}
        now, ttl = args["now"], q.opts["consumer_ttl_ms"]
        gone = [cid for cid in args["c"]
                if cid in q.consumers and q.consumers[cid].last_seen + ttl <= now]
        if gone:
            self._drop_consumers(q, gone, now, "consumer went silent", index)
        return {"expired": gone}

    def _expire(self, args: dict[str, Any], index: int) -> Any:
        """Leader-proposed: visibility timeouts that passed, delays that ended. Each item is
        re-checked here, so a stale or repeated item changes nothing."""
        now, done = args["now"], 0
        for qname, mid, receipt, state in args["items"]:
            q = self.queues.get(qname)
            m = q.messages.get(mid) if q else None
            if m is None or m.receipt != receipt or m.state != state or m.deadline > now:
                continue
            assert q is not None
            done += 1
            if state == INFLIGHT:
                self._give_back(q, m, now, 0, "visibility timeout expired", index)
            else:
                q.delayed -= 1
                self._make_ready(q, m)
        return {"expired": done}

    def _retention(self, args: dict[str, Any], index: int) -> Any:
        q = self.queues.get(args["q"])
        if q is None or not q.opts["retention_ms"]:
            return {"expired": 0}
        cutoff, n = args["now"] - q.opts["retention_ms"], 0
        for part in q.parts:
            while True:
                m = part.head(q.messages)
                if m is None or m.enq_ms > cutoff:
                    break
                part.pop_head(q.messages)
                self._remove(q, m)
                n += 1
        if n:
            q.stats["expired"] += n
            self.obs.count(q.name, "expired", n)
        return {"expired": n}

    # -- leader-driven time ---------------------------------------------------------------

    def on_leader_start(self, now_ms: int, term: int) -> None:
        """A new leader gives every consumer a full TTL from now (it cannot know when they
        last reached the old leader) and forgets what a previous reign proposed."""
        self._leader_since = now_ms
        self._proposed.clear()

    def due_commands(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        self._proposed = {k: t for k, t in self._proposed.items() if t + REPROPOSE_MS > now_ms}
        out: list[tuple[str, dict[str, Any]]] = []
        items = self._due_timers(now_ms)
        for i in range(0, len(items), 500):
            out.append(("expire", {"items": items[i:i + 500], "now": now_ms}))
        for q in self.queues.values():
            ttl = q.opts["consumer_ttl_ms"]
            silent = [
                cid for cid, c in q.consumers.items()
                if max(c.last_seen, self._leader_since) + ttl <= now_ms
                and self._once(("c", q.name, cid, c.last_seen), now_ms)
            ]
            if silent:
                out.append(("consumer_expire", {"q": q.name, "c": sorted(silent), "now": now_ms}))
            if q.opts["retention_ms"] and self._retention_due(q, now_ms) and self._once(
                ("r", q.name), now_ms
            ):
                out.append(("retention", {"q": q.name, "now": now_ms}))
        return out

    def _once(self, key: tuple[Any, ...], now_ms: int) -> bool:
        if key in self._proposed:
            return False
        self._proposed[key] = now_ms
        return True

    def _due_timers(self, now_ms: int) -> list[list[Any]]:
        """Visibility timeouts and delays that have passed, oldest first (sorted, so the
        proposal does not depend on the heap's shape, which differs after a restore)."""
        h = self._timers
        while h and not self._timer_any(h[0]):
            heapq.heappop(h)
        due: list[tuple[int, str, int, list[Any]]] = []
        stack = [0] if h else []
        while stack and len(due) < MAX_DUE_ITEMS:  # walk the heap's due part only
            i = stack.pop()
            e = h[i]
            if e[0] > now_ms:
                continue
            for m in self._timer_live(e):
                if self._once(("t", e[2], m.id, m.receipt, e[0]), now_ms):
                    due.append((e[0], e[2], m.seq, [e[2], m.id, m.receipt, m.state]))
            stack.extend(j for j in (2 * i + 1, 2 * i + 2) if j < len(h))
        due.sort(key=lambda d: d[:3])
        return [d[3] for d in due]

    def _retention_due(self, q: Queue, now_ms: int) -> bool:
        cutoff = now_ms - q.opts["retention_ms"]
        for part in q.parts:
            if part.ready:
                m = part.head(q.messages)
                if m is not None and m.enq_ms <= cutoff:
                    return True
        return False


def _is_int(v: Any) -> bool:
    return type(v) is int


def _opt(rule: Any) -> Any:
    return lambda v: v is None or rule(v)


def _list_of(rule: Any) -> Any:
    return lambda v: isinstance(v, list) and all(rule(x) for x in v)


def _name(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


# The arguments a command may carry, each with the shape it must have. Checked before a
# command touches anything: an error half-way through would otherwise leave the state half
# changed (messages taken off a partition but never leased, say) while the command reports
# that it was refused. The handlers never send anything else; this guards the log.
_ARG_RULES: dict[str, Any] = {
    "now": _is_int,
    "max": lambda v: _is_int(v) and v >= 0,
    "vis": _opt(lambda v: _is_int(v) and v > 0),
    "delay": _opt(lambda v: _is_int(v) and v >= 0),
    "error": _opt(lambda v: isinstance(v, str)),
    "rid": _opt(lambda v: isinstance(v, str)),
    "ack": _opt(_list_of(lambda r: isinstance(r, str))),
    "r": _list_of(lambda r: isinstance(r, str)),
    "c": _name,
    "m": _list_of(lambda m: isinstance(m, (list, tuple)) and len(m) == 5),
    "items": _list_of(lambda i: isinstance(i, (list, tuple)) and len(i) == 4
                      and isinstance(i[0], str) and isinstance(i[1], str)),
}
_OP_ARG_RULES: dict[tuple[str, str], Any] = {
    ("consumer_expire", "c"): _list_of(_name),
}


def _malformed_arg(op: str, args: Any) -> str | None:
    """The first argument of `args` that breaks its rule, or None."""
    if not isinstance(args, dict):
        return "arguments are not a map"
    for k, v in args.items():
        rule = _OP_ARG_RULES.get((op, k)) or _ARG_RULES.get(k)
        if rule is not None and not rule(v):
            return f"{k}={v!r}"
    return None


_OPS = {
    "create": QueueService._create,
    "delete": QueueService._delete,
    "enqueue": QueueService._enqueue,
    "dequeue": QueueService._dequeue,
    "ack": QueueService._ack,
    "nack": QueueService._nack,
    "heartbeat": QueueService._heartbeat,
    "leave": QueueService._leave,
    "consumer_expire": QueueService._consumer_expire,
    "expire": QueueService._expire,
    "retention": QueueService._retention,
}
