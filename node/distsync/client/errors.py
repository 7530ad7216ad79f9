"""The errors the client raises, one class per kind of answer, so callers can catch what they
can handle (a failed compare, a missing key) apart from what they cannot (an unavailable
cluster)."""

from __future__ import annotations

from typing import Any


class DistSyncError(Exception):
    """An error answer from the cluster: `status`, `code` (the JSON `error`) and `body`."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body or {}


class InvalidArgument(DistSyncError, ValueError):
    """A bad argument: raised by the client before any request when it can tell (a lock name
    the API would refuse, a negative timeout), or for the cluster's 400 answers."""

    def __init__(self, code: str, message: str, status: int = 400,
                 body: dict[str, Any] | None = None):
        super().__init__(status, code, message, body)


class NotFound(DistSyncError):
    pass


class CompareFailed(DistSyncError):
    pass


class Unavailable(DistSyncError, ConnectionError):
    """The cluster could not serve the request before the client's deadline (a
    `ConnectionError`, as for any unreachable server)."""


class Compacted(DistSyncError):
    """A watch's start revision is older than the node's history (410 `compacted`): re-read
    the state you need, then watch from `oldest_revision` or later (etcd's ErrCompacted)."""

    @property
    def compact_revision(self) -> int:
        return int(self.body.get("compact_revision", 0))

    @property
    def oldest_revision(self) -> int:
        return int(self.body.get("oldest_revision", self.compact_revision + 1))


class _Retry(Exception):
    def __init__(self, cause: BaseException | DistSyncError):
        super().__init__(str(cause))
        self.cause = cause


def error_from_answer(status: int, body: dict[str, Any]) -> DistSyncError:
    code, msg = str(body.get("error", "http_error")), str(body.get("message", ""))
    if status == 404 and code == "not_found":
        return NotFound(status, code, msg, body)
    if status == 410 and code == "compacted":
        return Compacted(status, code, msg, body)
    if code == "compare_failed":
        return CompareFailed(status, code, msg, body)
    if status in (502, 503, 504):
        return Unavailable(status, code, msg, body)
    if status == 400:
        return InvalidArgument(code, msg, status, body)
    return DistSyncError(status, code, msg, body)
