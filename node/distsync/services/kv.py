"""A linearizable key-value register: the smallest service that proves the pipeline, and the
pattern the lock, queue and cache services follow.

Each key carries `revision`, the log index of the command that last wrote it; revisions are
therefore unique and increase across leaders and restarts, like etcd's mod_revision.

**Ephemeral keys** (README "Ephemeral keys"). A put with `session` (a lock session's id,
services/locks.py) binds the key to that session, like an etcd key put with a lease: when
the session ends (closed, or expired by the leader), every key bound to it is deleted inside
the apply of that close or expire, so at that log index on every node, in key order, each
as a `delete` event of the kv history at that one revision. The binding follows the last
put (etcd semantics): a later put with another session moves it, a put without one makes the
key ordinary again; a delete drops it. A put naming a session that is not open (never
opened, closed, expired) is refused with 404 `session_not_found` and changes nothing.
Bindings are in the snapshot: a bound key's row has the session id as a fourth element, so a
snapshot without any (or from before bindings existed) restores as before.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from .base import SNAPSHOT_PACKER, CommandError
from .kv_history import KVHistory

_MISSING = object()
ROW_BYTES = 48  # a row's framing and revision in a snapshot, about
BINDING_BYTES = 24  # a bound row's session id in the snapshot and the indexes here, about
# A listing page stops once it holds this many bytes of keys and values (at least one key),
# whatever its `limit`: a page of 10,000 large values would be an answer of gigabytes.
LIST_PAGE_BYTES = 4 << 20


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
        # Ephemeral keys: key -> the session it is bound to, and the inverse index.
        self.owner: dict[str, str] = {}
        self.bound: dict[str, dict[str, None]] = {}
        # Whether a session id is open at this point of the applied log: the lock service's
        # `session_open`, wired by `bind_sessions` (without it no session is open).
        self.session_open: Callable[[str], bool] = lambda sid: False

    def bind_sessions(self, locks: Any) -> None:
        """Wire the lock service in (server.py): a put's `session` must be open there, and
        each session's end deletes the keys bound to it, in the same apply."""
        self.session_open = locks.session_open
        locks.on_session_end(self.session_ended)

    # -- reads (local; linearizable when preceded by a ReadIndex barrier) ---------------

    def get(self, key: str) -> tuple[Any, int] | None:
        return self.data.get(key)

    def owner_of(self, key: str) -> str | None:
        """The session an ephemeral key is bound to (None: an ordinary key, or absent)."""
        return self.owner.get(key)

    def keys(self, prefix: str = "", limit: int = 1000) -> list[str]:
        return sorted(k for k in self.data if k.startswith(prefix))[:limit]

    def page(self, prefix: str = "", after: str = "", limit: int = 1000,
             max_bytes: int = LIST_PAGE_BYTES) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the keys starting with `prefix` and sorted after `after`, in key order,
        each `{"key", "value", "revision"}` plus `"session"` when bound; and the key to give
        as `after` for the next page (None: this was the last). At most `limit` keys, fewer
        once the page holds `max_bytes` of keys and values (never fewer than one)."""
        names = heapq.nsmallest(
            limit + 1, (k for k in self.data if k > after and k.startswith(prefix)))
        out: list[dict[str, Any]] = []
        size = 0
        for k in names[:limit]:
            if out and size >= max_bytes:
                break
            v, r = self.data[k]
            item: dict[str, Any] = {"key": k, "value": v, "revision": r}
            sid = self.owner.get(k)
            if sid is not None:
                item["session"] = sid
            out.append(item)
            size += self._sizes.get(k, len(k))
        more = len(out) < len(names)
        return out, (out[-1]["key"] if more else None)

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        key = args["key"]
        cur = self.data.get(key)
        if op == "put":
            sid = args.get("session")
            if sid is not None and (not isinstance(sid, str) or not sid):
                raise CommandError("invalid_command", "session must be a non-empty string",
                                   400)
            if sid is not None and not self.session_open(sid):
                raise CommandError(
                    "session_not_found",
                    f"session {sid!r} does not exist (expired, closed or never opened); "
                    "nothing was written", 404, session=sid,
                )
            self._check(args, cur)
            self.data[key] = (args["value"], index)
            self._rows.pop(key, None)
            size = len(key) + (args.get("sz") if type(args.get("sz")) is int else 0)
            self.bytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size
            self._bind(key, sid)
            prev = cur[1] if cur else 0
            self.history.record(index, "put", key, args["value"], prev, size - len(key))
            return {"revision": index, "prev_revision": prev}
        if op == "delete":
            self._check(args, cur)
            if cur is None:
                return {"deleted": False, "revision": index}
            self._remove(key, cur, index)
            return {"deleted": True, "revision": index, "prev_revision": cur[1]}
        raise CommandError("bad_op", f"unknown kv op {op!r}", 400)

    def session_ended(self, sid: str, index: int, reason: str) -> None:
        """The lock service's `on_session_end`: delete every key bound to `sid` at `index`
        (the close's or expiry's own), in key order so that every node, whether it replayed
        the log or restored a snapshot, records the same events in the same order."""
        keys = self.bound.get(sid)
        if not keys:
            return
        for key in sorted(keys):
            self._remove(key, self.data[key], index)

    def _remove(self, key: str, cur: tuple[Any, int], index: int) -> None:
        del self.data[key]
        self._rows.pop(key, None)
        self.bytes -= self._sizes.pop(key, 0)
        self._bind(key, None)
        self.history.record(index, "delete", key, None, cur[1], 0)

    def _bind(self, key: str, sid: str | None) -> None:
        """`key` is now bound to `sid` (None: to no session)."""
        old = self.owner.get(key)
        if old == sid:
            return
        if old is not None:
            keys = self.bound[old]
            del keys[key]
            if not keys:
                del self.bound[old]
            del self.owner[key]
        if sid is not None:
            self.owner[key] = sid
            self.bound.setdefault(sid, {})[key] = None

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
        return self.bytes + ROW_BYTES * len(self.data) + BINDING_BYTES * len(self.owner)

    def _row(self, k: str, v: Any, r: int) -> list[Any]:
        sid = self.owner.get(k)
        return [k, v, r] if sid is None else [k, v, r, sid]

    def snapshot(self) -> Any:
        return [self._row(k, v, r) for k, (v, r) in self.data.items()]

    def snapshot_chunks(self) -> list[bytes]:
        """`snapshot()` already msgpack-encoded, in pieces, from the cached rows: the same
        bytes as packing `snapshot()` whole."""
        pack, rows = SNAPSHOT_PACKER.pack, self._rows
        out = [SNAPSHOT_PACKER.pack_array_header(len(self.data))]
        for k, (v, r) in self.data.items():
            row = rows.get(k)
            if row is None:
                row = rows[k] = pack(self._row(k, v, r))
            out.append(row)
        return out

    def restore(self, data: Any) -> None:
        """Rows are [key, value, revision] or, bound to a session, [key, value, revision,
        session] (snapshots from before ephemeral keys have only the first kind)."""
        self.data, self.owner, self.bound = {}, {}, {}
        for k, v, r, *rest in data:
            self.data[k] = (v, r)
            if rest and isinstance(rest[0], str):
                self._bind(k, rest[0])
        self._rows = {}
        # Sizes of restored values are not in the snapshot: weigh them once, by msgpack.
        self._sizes = {k: len(k) + len(SNAPSHOT_PACKER.pack(v)) for k, (v, _) in
                       self.data.items()}
        self.bytes = sum(self._sizes.values())

    def restored_at(self, index: int) -> None:
        """The state just restored is the log up to `index`: the history starts after it."""
        self.history.reset(index)
