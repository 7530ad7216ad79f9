"""The long poll that locks, semaphores and elections share: a write that queues a wait
(an acquire, a campaign) answers once the wait is resolved or a poll window ends, and the
client continues at a `.../waits/{id}` (or `.../candidates/{id}`) route.

Only the leader knows a wait's outcome as it happens, so a poll that outlives the node's
leadership answers NotLeader (leader_only forwards it with the same Request-Id), and a
brand-new leader that does not know the wait yet takes a read barrier before it says 404:
it may not have applied the write that queued it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..raft.core import NotLeader
from .appkeys import NODE
from .errors import ApiError

LONG_POLL_S = 4.0  # under the client's default per-attempt timeout (6 s) and forwarding's
GRACE_S = 2.0  # keep polling this long past a wait's deadline for the leader's timeout

State = dict[str, Any] | None


def window_until(node: Any, deadline_ms: int, started: float) -> float:
    """The poll window for a wait with a deadline: until the deadline (plus GRACE_S, for the
    leader's timeout to be applied), and within LONG_POLL_S of `started` (the node's
    monotonic clock at the request's start) however long the proposal took."""
    left_s = (deadline_ms - node.clock.wall_ms()) / 1000 + GRACE_S
    return max(0.5, min(LONG_POLL_S - (node.clock.monotonic() - started), left_s))


async def await_resolved(node: Any, state_of: Callable[[], State], window: float) -> State:
    """The wait's state once it no longer says `waiting`, or when `window` ends."""

    def resolved() -> bool:
        st = state_of()
        return not node.is_leader() or st is None or not st.get("waiting")

    await node.wait_until(resolved, window)
    if not node.is_leader():
        raise NotLeader(node.leader_id)  # leader_only forwards, same Request-Id
    state = state_of()
    if state is None:  # a brand-new leader may not have applied the write yet
        await node.read_barrier()
        state = state_of()
    return state


def wait_answer(state: State, wait_id: int, field: str,
                granted: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The HTTP answer for a queued wait's state (`wait_state` of the lock or semaphore
    service, whose states name their object in `field`); `granted` adds what a grant of
    that kind says beyond the object, session and token."""
    if state is None:
        return {"error": "not_found", "status": 404, "wait_id": wait_id,
                "message": f"no wait {wait_id} (never queued, or finished long ago)"}
    if state.get("waiting"):
        return state
    st, name, sid = state["state"], state[field], state["session"]
    if st == "granted":
        return {"granted": True, field: name, "session": sid, **granted(state),
                "token": state["token"], "reentrant": False, "wait_id": wait_id}
    if st == "timeout":
        return {"error": "timeout", "status": 409, field: name, "wait_id": wait_id,
                "message": f"{field} {name!r} was not granted within wait_ms"}
    if st == "cancelled":
        return {"error": "cancelled", "status": 409, field: name, "wait_id": wait_id,
                "message": "the wait was cancelled by a release from its session"}
    return session_gone(sid, st.removeprefix("session_"))


def session_gone(sid: str, reason: str) -> dict[str, Any]:
    return {"error": "session_not_found", "status": 404, "session": sid, "reason": reason,
            "message": f"session {sid!r} is gone ({reason})"}


def path_int(request: web.Request, key: str, what: str) -> int:
    try:
        return int(request.match_info[key])
    except ValueError:
        raise ApiError(400, "invalid_request", f"{what} must be an integer") from None


async def continue_wait(request: web.Request, svc: Any, field: str, name: str,
                        answer: Callable[[State, int], dict[str, Any]]) -> dict[str, Any]:
    """`GET .../{name}/waits/{wait_id}` for a service with `wait_state(id)` whose states
    name their object in `field`: a wait on another object is 404, as if unknown."""
    wait_id = path_int(request, "wait_id", "wait id")
    state = svc.wait_state(wait_id)
    if state is not None and state[field] != name:
        state = None
    deadline = state["deadline_ms"] if state is not None and state.get("waiting") else 0
    node = request.app[NODE]
    res = answer(await await_resolved(node, lambda: svc.wait_state(wait_id),
                                      window_until(node, deadline, node.clock.monotonic())),
                 wait_id)
    if res.get(field, name) != name:
        res = answer(None, wait_id)
    return res
