"""Routes committed commands to services, and makes retried commands apply at most once.

A command carries an optional request id. The first time an id is applied its result is
remembered; a retry with the same id (say after a timeout, or after the leader changed and the
client re-sent) gets the remembered result without applying again. The table is part of the
replicated state and of snapshots, and is bounded by count, oldest first, so every node evicts
the same ids at the same index.

Ids are scoped and bound, like Stripe's idempotency keys. The API layer (api/idempotency.py)
prefixes each id with the caller's scope (its token's digest and `Client-Id`), so two callers'
ids never meet, and sends with it a fingerprint of the request as the client sent it (method,
path, query, canonical JSON body). An id seen again with another fingerprint, or for another
operation, is refused with 422 `request_id_mismatch` and nothing is applied; the command's own
arguments are not compared, because a legitimate retry differs in leader-supplied fields such
as the proposal time. Refusals for lack of room (`quota_exceeded`) are not remembered: they
changed nothing, so a retry once there is room may apply, as the first attempt never did.

Each remembered id keeps the leader's clock at its first application (`t`, carried in the
command), only so that the metrics can show how far back the table reaches.

Snapshots are taken on the event loop, so they must be cheap however big the state is: the
snapshot is assembled from msgpack pieces (`snapshot_chunks`) that services and the dedupe
table cache between snapshots, re-encoding only what changed; the bytes are the same as a
plain `msgpack.packb` of the whole state, so `restore` is unchanged. And `snapshot_due` spaces
snapshots by the log they replace (see there), since writing one costs time proportional to
the state on every node.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgpack

from .base import SNAPSHOT_PACKER, CommandError, StateMachine, mismatch
from .quotas import QuotaService

DEDUPE_LIMIT = 100_000
DEDUPE_ROW_BYTES = 160  # about one remembered id in a snapshot (scoped id, fingerprint, result)
# Take a snapshot only once the log since the last one is at least this many times the size
# of the snapshot (LogCabin's snapshotRatio, same default): snapshot writes cost at most 1/4
# of the log's bytes, the log kept in memory stays below 4x the state, and a big transient
# state (a queue backlog) is usually snapshotted after it drained, when it is cheap.
SNAPSHOT_LOG_RATIO = 4.0
# Below this size a snapshot costs little to write (milliseconds), so the entry threshold
# alone decides; the ratio is for states whose write stalls the Raft loop.
SNAPSHOT_SMALL_BYTES = 4 << 20
# ... but never more than this many times the entry threshold, which bounds the entries a
# restart replays (and holds in memory) when small commands act on a big state.
SNAPSHOT_MAX_DEFER = 10


# Results that are never remembered under a request id (see the module docstring).
NOT_REMEMBERED = frozenset({"quota_exceeded"})


def encode_command(
    service: str, op: str, args: dict[str, Any], request_id: str | None,
    fingerprint: bytes | None = None, now_ms: int | None = None, bind: str | None = None,
) -> bytes:
    """`bind`: an id whose replays the service answers itself (a dequeue's long poll
    proposes many times under one id): the table only binds it to its request."""
    cmd: dict[str, Any] = {"s": service, "o": op, "a": args, "r": request_id}
    if fingerprint is not None:
        cmd["f"] = fingerprint
    if now_ms is not None:
        cmd["t"] = now_ms
    if bind is not None:
        cmd["b"] = bind
    return msgpack.packb(cmd, use_bin_type=True)


class Registry:
    def __init__(self, services: list[StateMachine], dedupe_limit: int = DEDUPE_LIMIT):
        self.services = {s.name: s for s in services}
        # Quotas (quotas.py): checked before every command, and a service of its own for the
        # replicated limits and the space alarm.
        quota = self.services.get("quota")
        if not isinstance(quota, QuotaService):
            quota = QuotaService()
            self.services["quota"] = quota
        quota.registry = self
        self.quota = quota
        self.dedupe: OrderedDict[str, Any] = OrderedDict()
        self.dedupe_limit = dedupe_limit
        # rid -> msgpack of its snapshot row, in the same order as `dedupe` (rows never change)
        self._dedupe_rows: dict[str, bytes] = {}
        self.log_bytes = 0  # bytes of commands applied since the last snapshot or restore
        self.replays = 0  # requests answered from the table (volatile, for metrics)
        # Bytes of that snapshot not covered by services' size hints (see state_bytes).
        self._unhinted_bytes = 0

    def apply(self, data: bytes, index: int) -> Any:
        self.log_bytes += len(data)
        try:
            cmd = msgpack.unpackb(data, raw=False)
            service, op, args, rid = cmd["s"], cmd["o"], cmd["a"], cmd.get("r")
            fp, stamp, bind = cmd.get("f"), cmd.get("t"), cmd.get("b")
        except Exception:  # noqa: BLE001 - a malformed entry must not stop the apply loop
            return {"error": "bad_command", "message": "undecodable command", "status": 400}
        if bind is not None:
            bound = self.dedupe.get(bind)
            if bound is not None:
                if bound[0] != f"{service}.{op}" or (
                        fp is not None and bound[2] is not None and fp != bound[2]):
                    return mismatch(bound[0])
            else:
                self._remember(bind, (f"{service}.{op}", None, fp, stamp))
        if rid is not None and rid in self.dedupe:
            first = self.dedupe[rid]
            first_op, first_result = first[0], first[1]
            first_fp = first[2] if len(first) > 2 else None
            if first_op != f"{service}.{op}" or (
                    fp is not None and first_fp is not None and fp != first_fp):
                return mismatch(first_op)
            self.replays += 1
            return first_result
        svc = self.services.get(service)
        if svc is None:
            result: Any = {"error": "bad_service", "message": service, "status": 400}
        else:
            try:
                self.quota.admit(service, op, args)
                result = svc.apply(op, args, index)
            except CommandError as e:
                result = e.to_result()
        if rid is not None and not (
                isinstance(result, dict) and result.get("error") in NOT_REMEMBERED):
            self._remember(rid, (f"{service}.{op}", result, fp, stamp))
        return result

    def _remember(self, rid: str, entry: tuple[Any, ...]) -> None:
        self.dedupe[rid] = entry
        self._dedupe_rows[rid] = SNAPSHOT_PACKER.pack((rid, entry))
        while len(self.dedupe) > self.dedupe_limit:
            old, _ = self.dedupe.popitem(last=False)
            del self._dedupe_rows[old]

    def snapshot(self) -> bytes:
        """msgpack of {"services": {name: service.snapshot()}, "dedupe": [[rid, [op,
        result, fingerprint, first_ms]], ...]}."""
        return b"".join(self.snapshot_chunks())

    def snapshot_chunks(self) -> list[bytes]:
        """`snapshot()` in pieces; a service with `snapshot_chunks` supplies its own (from
        its caches), any other is encoded whole."""
        p = SNAPSHOT_PACKER
        out = [p.pack_map_header(2), p.pack("services"), p.pack_map_header(len(self.services))]
        for n, s in self.services.items():
            out.append(p.pack(n))
            chunks = getattr(s, "snapshot_chunks", None)
            if chunks is not None:
                out.extend(chunks())
            else:
                out.append(p.pack(s.snapshot()))
        out.append(p.pack("dedupe"))
        out.append(p.pack_array_header(len(self._dedupe_rows)))
        out.extend(self._dedupe_rows.values())
        return out

    def window_ms(self, now_ms: int) -> int | None:
        """How far back the table reaches: the age of the oldest remembered id by the leader
        clock it carried (None when the table is empty or that id has no time)."""
        for entry in self.dedupe.values():
            stamp = entry[3] if len(entry) > 3 else None
            return None if stamp is None else max(0, now_ms - stamp)
        return None

    def snapshot_due(self, entries: int, threshold: int) -> bool:
        """Whether to snapshot now, `entries` after the last one: at least `threshold`
        entries, and log bytes since then of at least SNAPSHOT_LOG_RATIO times what the
        snapshot would weigh now, unless that is small (SNAPSHOT_SMALL_BYTES); or
        SNAPSHOT_MAX_DEFER times the threshold in entries, whichever comes first. Writing a
        snapshot stalls every node's Raft loop for a time
        proportional to its size, so a big state (a queue backlog) waits until the log it
        frees is worth it, while a drained queue is snapshotted soon, and cheaply."""
        if entries < threshold:
            return False
        if entries >= SNAPSHOT_MAX_DEFER * threshold:
            return True
        size = self.state_bytes()
        return size <= SNAPSHOT_SMALL_BYTES or self.log_bytes >= SNAPSHOT_LOG_RATIO * size

    def state_bytes(self) -> int:
        """About the size of a snapshot taken now: the services' own estimates where they
        give one (`snapshot_size_hint`, cheap), plus the rest as of the last snapshot."""
        return self._unhinted_bytes + self._hinted_bytes()

    def _hinted_bytes(self) -> int:
        return DEDUPE_ROW_BYTES * len(self.dedupe) + sum(
            s.snapshot_size_hint() for s in self.services.values()
            if hasattr(s, "snapshot_size_hint"))

    def snapshot_taken(self, size: int) -> None:
        """A snapshot of `size` bytes was written (or restored): the log starts again."""
        self.log_bytes = 0
        self._unhinted_bytes = max(0, size - self._hinted_bytes())

    def restore(self, data: bytes, index: int = 0) -> None:
        """`index`: the log index the snapshot covers (services with `restored_at` learn it:
        the kv history starts after it)."""
        if not data:
            for s in self.services.values():
                s.restore(s.__class__().snapshot())
            self.dedupe = OrderedDict()
            self._dedupe_rows = {}
        else:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            for n, s in self.services.items():
                if n in obj["services"]:
                    s.restore(obj["services"][n])
                else:  # a snapshot from before this service existed: its empty state
                    s.restore(s.__class__().snapshot())
            # Rows of older snapshots have [op, result] only: no fingerprint, no time.
            self.dedupe = OrderedDict(
                (k, (v[0], v[1], *(list(v[2:4]) + [None, None])[:2])) for k, v in obj["dedupe"]
            )
            self._dedupe_rows = {k: SNAPSHOT_PACKER.pack((k, v)) for k, v in self.dedupe.items()}
        for s in self.services.values():
            restored_at = getattr(s, "restored_at", None)
            if restored_at is not None:
                restored_at(index)
        self.snapshot_taken(len(data))
