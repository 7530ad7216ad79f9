"""HTTP routes of counting semaphores (services/semaphores.py): acquire (try, or long-poll
wait), release, inspect and list. The same pattern as api/locks.py, whose helpers this
reuses: propose through the log, long-poll a queued wait with `node.wait_until`, answer
`{"granted": false, "waiting": true, "wait_id": ...}` when the poll window ends, and let
the client continue at `GET /v1/semaphores/{name}/waits/{wait_id}`.

Permits are bound to lock sessions (`POST /v1/sessions`): when the session ends its permits
are released."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from ..services.semaphores import MAX_PERMITS, MAX_WAIT_MS, SemaphoreService
from .appkeys import NODE
from .errors import ApiError
from .forward import leader_only
from .idempotency import propose
from .jsonio import json_response
from .locks import LOCK_RE, SESSION_RE, _barrier, _limit, _read_route, _result
from .longpoll import await_resolved, continue_wait, wait_answer, window_until
from .schemas import _Strict, parse_body

routes = web.RouteTableDef()

NAME_RULE = "semaphore names are 1-256 characters of A-Z a-z 0-9 . _ - : @"


class SemaphoreAcquire(_Strict):
    session: str = Field(pattern=SESSION_RE)
    permits: int = Field(ge=1, le=MAX_PERMITS, description="N: the semaphore's permit count "
                         "(every holder and waiter must give the same)")
    count: int = Field(default=1, ge=1, le=MAX_PERMITS, description="Permits to take (<= N)")
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS)


class SemaphoreRelease(_Strict):
    session: str = Field(pattern=SESSION_RE)


def _svc(request: web.Request) -> SemaphoreService:
    return request.app[NODE].service("semaphores")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not LOCK_RE.fullmatch(name):
        raise ApiError(400, "invalid_semaphore_name", NAME_RULE)
    return name


def _wait_answer(state: dict[str, Any] | None, wait_id: int) -> dict[str, Any]:
    return wait_answer(state, wait_id, "semaphore", lambda st: {"count": st["count"]})


async def _poll(request: web.Request, wait_id: int, deadline_ms: int,
                started: float) -> dict[str, Any]:
    node, svc = request.app[NODE], _svc(request)
    state = await await_resolved(node, lambda: svc.wait_state(wait_id),
                                 window_until(node, deadline_ms, started))
    return _wait_answer(state, wait_id)


async def _list(request: web.Request) -> web.StreamResponse:
    q = request.query
    limit = _limit(request)
    await _barrier(request)
    sems, nxt = _svc(request).list(q.get("prefix", ""), q.get("after", ""), limit)
    return json_response({"semaphores": sems, "next": nxt})


async def _get(request: web.Request) -> web.StreamResponse:
    name = _name(request)
    await _barrier(request)
    return json_response(_svc(request).info(name))


routes.get("/v1/semaphores")(_read_route(_list))
routes.get("/v1/semaphores/{name}")(_read_route(_get))


@routes.post("/v1/semaphores/{name}/acquire")
@leader_only
async def acquire(request: web.Request) -> web.StreamResponse:
    """Take `count` of the semaphore's `permits` for a session: at once (try-acquire with
    `wait_ms` 0), or queue FIFO and long-poll. 409 `permits_conflict` if N differs from the
    current holders', `deadlock` if waiting would close a wait-for cycle, `timeout`."""
    name = _name(request)
    body = await parse_body(request, SemaphoreAcquire)
    if body.count > body.permits:
        raise ApiError(400, "invalid_request", f"count ({body.count}) must be at most permits "
                                            f"({body.permits})")
    node = request.app[NODE]
    t0 = node.clock.monotonic()
    args = {"session": body.session, "semaphore": name, "permits": body.permits,
            "count": body.count, "wait_ms": body.wait_ms,
            "deadline_ms": node.clock.wall_ms() + body.wait_ms}
    res = await propose(request, "semaphores", "acquire", args)
    if isinstance(res, dict) and res.get("waiting"):
        res = await _poll(request, res["wait_id"], res["deadline_ms"], t0)
    return _result(res)


@routes.get("/v1/semaphores/{name}/waits/{wait_id}")
@leader_only
async def wait_status(request: web.Request) -> web.StreamResponse:
    """Continue the long poll of an acquire that answered `waiting`."""
    return _result(await continue_wait(request, _svc(request), "semaphore", _name(request),
                                       _wait_answer))


@routes.post("/v1/semaphores/{name}/release")
@leader_only
async def release(request: web.Request) -> web.StreamResponse:
    """Give the session's permits back, or cancel its wait. 409 `not_held` if neither."""
    name = _name(request)
    body = await parse_body(request, SemaphoreRelease)
    res = await propose(request, "semaphores", "release",
                        {"session": body.session, "semaphore": name})
    return _result(res)


async def _name_with_slash(request: web.Request) -> web.StreamResponse:
    raise ApiError(400, "invalid_semaphore_name", NAME_RULE + " (no '/')",
                   name=request.match_info.get("name", ""))


routes.post("/v1/semaphores/{name:.+}/acquire")(_name_with_slash)
routes.post("/v1/semaphores/{name:.+}/release")(_name_with_slash)
routes.get("/v1/semaphores/{name:.+}")(_name_with_slash)
