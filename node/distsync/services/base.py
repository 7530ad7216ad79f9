"""The contract every replicated service keeps: a pure function of the applied log.

`apply` must be deterministic (no clock, no randomness, no I/O): the same commands in the same
order give the same state and the same results on every node. Time-based behaviour is driven
by commands the leader proposes, carrying the leader's notion of time in their arguments.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack


class CommandError(Exception):
    """A command that the state machine refuses, deterministically, on every node. It becomes
    the command's result (an HTTP 4xx), never an exception that stops the apply loop."""

    def __init__(self, code: str, message: str, status: int = 409, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra

    def to_result(self) -> dict[str, Any]:
        return {
            "error": self.code, "message": self.message, "status": self.status, **self.extra,
        }


MAX_INT = (1 << 63) - 1


def bad_arg(message: str) -> CommandError:
    """A command whose arguments are malformed: the same 400 on every node, nothing changed."""
    return CommandError("invalid_command", message, 400)


def str_arg(args: dict[str, Any], key: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not v:
        raise bad_arg(f"{key} must be a non-empty string")
    return v


def int_arg(args: dict[str, Any], key: str, lo: int = 0, hi: int = MAX_INT) -> int:
    v = args.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise bad_arg(f"{key} must be an integer in [{lo}, {hi}]")
    return v


def dispatch(svc: Any, ops: dict[str, Any], kind: str, op: str, args: Any,
             index: int) -> Any:
    """Run `ops[op](svc, args, index)`: an unknown op or arguments that are not a map are
    refused (400) before anything changes."""
    fn = ops.get(op)
    if fn is None:
        raise CommandError("bad_op", f"unknown {kind} op {op!r}", 400)
    if not isinstance(args, dict):
        raise bad_arg("arguments must be a map")
    return fn(svc, args, index)


def no_session(sid: str) -> CommandError:
    """The 404 for a command naming a lock session that is not open."""
    return CommandError("session_not_found",
                        f"session {sid!r} does not exist (expired, closed or never opened)",
                        404, session=sid)


def mismatch(first_op: str) -> dict[str, Any]:
    """The answer to a request id reused for a different request."""
    return {
        "error": "request_id_mismatch",
        "message": f"this Request-Id was first used for a different request ({first_op} "
                   "with other arguments, or another method or path); nothing was applied. "
                   "Use a new id for a new request",
        "status": 422,
    }


class StateMachine(Protocol):
    name: str

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        """Apply one committed command at log `index` and return its result."""

    def snapshot(self) -> Any:
        """The whole state as msgpack-able plain data."""

    def restore(self, data: Any) -> None:
        """Replace the whole state with what `snapshot` returned."""


class LeaderDriven(Protocol):
    """Optional: a service whose time-based behaviour (lease expiry, visibility timeouts) is
    decided by the leader and replicated as ordinary commands, never by each node's clock.

    The node calls `on_leader_start` when this node becomes leader, with its clock and the
    term of the new leadership (reset leader-only, volatile state: for example give every
    session a fresh full TTL, valid for that term), then, every
    `LEADER_TIMER_MS` while it leads and has applied an entry of its own term, calls
    `due_commands(now_ms)` and proposes what it returns. `now_ms` is the leader's wall clock
    in milliseconds; commands carry it in their args so that apply stays deterministic.
    Proposals may be repeated until they apply, so those commands must be idempotent."""

    def on_leader_start(self, now_ms: int, term: int) -> None: ...

    def due_commands(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]: ...


# The one packer for snapshot pieces (KVStore, the queue service, the Registry's dedupe rows
# and framing): one set of options for every piece, so that they join into the very bytes that
# packing the whole snapshot at once would give. Not thread-safe; that is fine because every
# piece is encoded on the thread that applies commands (the node's event loop), and the
# snapshot thread only writes the finished bytes.
SNAPSHOT_PACKER = msgpack.Packer(use_bin_type=True)
