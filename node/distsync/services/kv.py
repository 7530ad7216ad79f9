"""A linearizable key-value register: the smallest service that proves the pipeline, and the
pattern the lock, queue and cache services follow.

Each key carries `revision`, the log index of the command that last wrote it; revisions are
therefore unique and increase across leaders and restarts, like etcd's mod_revision.
"""

from __future__ import annotations

from typing import Any

from .base import SNAPSHOT_PACKER, CommandError
from .kv_history import KVHistory

_MISSING = object()
ROW_BYTES = 48  # a row's framing and revision in a snapshot, about


class KVStore:
    name = "kv"

    def __init__(self, history: KVHistory | None = None) -> None:
        # Recent changes for watches (kv_history.py): fed here, from the applied log.
        self.history = history if history is not None else KVHistory()
        self.data: dict[str, tuple[Any, int]] = {}
        # Each key's snapshot row, encoded once and dropped when the key changes: encoding
        # every key at every snapshot stalled the event loop (tens of ms per 10k keys, plus
        # the garbage collections that the temporary lists set off).
        self._rows: dict[str, bytes] = {}
        # About the bytes of the data (keys, and values as the API measured them, in `sz`):
        # what the space quota weighs (quotas.py). Kept per key so that it stays exact.
        self._sizes: dict[str, int] = {}
        self.bytes = 0

    # -- reads (local; linearizable when preceded by a ReadIndex barrier) ---------------

    def get(self, key: str) -> tuple[Any, int] | None:
        return self.data.get(key)

    def keys(self, prefix: str = "", limit: int = 1000) -> list[str]:
        return sorted(k for k in self.data if k.startswith(prefix))[:limit]

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        key = args["key"]
        cur = self.data.get(key)
        if op == "put":
            self._check(args, cur)
            self.data[key] = (args["value"], index)
            self._rows.pop(key, None)
            size = len(key) + (args.get("sz") if type(args.get("sz")) is int else 0)
            self.bytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size
            prev = cur[1] if cur else 0
            self.history.record(index, "put", key, args["value"], prev, size - len(key))
            return {"revision": index, "prev_revision": prev}
        if op == "delete":
            self._check(args, cur)
            if cur is None:
                return {"deleted": False, "revision": index}
            del self.data[key]
            self._rows.pop(key, None)
            self.bytes -= self._sizes.pop(key, 0)
            self.history.record(index, "delete", key, None, cur[1], 0)
            return {"deleted": True, "revision": index, "prev_revision": cur[1]}
        raise CommandError("bad_op", f"unknown kv op {op!r}", 400)

    @staticmethod
    def _check(args: dict[str, Any], cur: tuple[Any, int] | None) -> None:
        """Compare-and-set guards: `expect_revision` (0 means "must not exist") and
        `expect_value`. A failed compare changes nothing and reports what is there."""
        if "expect_revision" in args and args["expect_revision"] is not None:
            have = cur[1] if cur else 0
            if have != args["expect_revision"]:
                raise CommandError(
                    "compare_failed",
                    f"revision is {have}, expected {args['expect_revision']}",
                    409,
                    revision=have,
                )
        if args.get("has_expect_value"):
            have_value = cur[0] if cur else None
            if cur is None or have_value != args.get("expect_value"):
                raise CommandError(
                    "compare_failed",
                    "value differs from expect_value",
                    409,
                    revision=cur[1] if cur else 0,
                )

    def snapshot_size_hint(self) -> int:
        return self.bytes + ROW_BYTES * len(self.data)

    def snapshot(self) -> Any:
        return [[k, v, r] for k, (v, r) in self.data.items()]

    def snapshot_chunks(self) -> list[bytes]:
        """`snapshot()` already msgpack-encoded, in pieces, from the cached rows: the same
        bytes as packing `snapshot()` whole."""
        pack, rows = SNAPSHOT_PACKER.pack, self._rows
        out = [SNAPSHOT_PACKER.pack_array_header(len(self.data))]
        for k, (v, r) in self.data.items():
            row = rows.get(k)
            if row is None:
                row = rows[k] = pack([k, v, r])
            out.append(row)
        return out

    def restore(self, data: Any) -> None:
        self.data = {k: (v, r) for k, v, r in data}
        self._rows = {}
        # Sizes of restored values are not in the snapshot: weigh them once, by msgpack.
        self._sizes = {k: len(k) + len(SNAPSHOT_PACKER.pack(v)) for k, (v, _) in
                       self.data.items()}
        self.bytes = sum(self._sizes.values())

    def restored_at(self, index: int) -> None:
        """The state just restored is the log up to `index`: the history starts after it."""
        self.history.reset(index)
