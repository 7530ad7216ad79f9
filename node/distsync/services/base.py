"""The contract every replicated service keeps: a pure function of the applied log.

`apply` must be deterministic (no clock, no randomness, no I/O): the same commands in the same
order give the same state and the same results on every node. Time-based behaviour is driven
by commands the leader proposes, carrying the leader's notion of time in their arguments.
"""

from __future__ import annotations

from typing import Any, Protocol


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


class StateMachine(Protocol):
    name: str

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        """Apply one committed command at log `index` and return its result."""

    def snapshot(self) -> Any:
        """The whole state as msgpack-able plain data."""

    def restore(self, data: Any) -> None:
        """Replace the whole state with what `snapshot` returned."""
