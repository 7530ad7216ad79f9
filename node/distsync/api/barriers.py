"""HTTP routes of barriers and double barriers (services/barriers.py).

Barrier: `PUT /v1/barriers/{name}` raises it (optionally bound to a session), `DELETE`
lowers it, `GET /v1/barriers/{name}/wait` long-polls until the barrier found at the start
(its `generation`) is gone: on the leader, after a ReadIndex round, so a barrier raised
before the wait began is seen. If the poll window (LONG_POLL_S) ends first the answer is
`{"released": false, "generation": g}` and the client asks again with `?generation=g`.

Double barrier: `POST .../enter` and `POST .../leave` are commands (with Request-Id, like a
lock acquire); if the answer is not yet released, the handler long-polls the state, and
the client continues with `GET .../enter?session=` or `GET .../leave?round=`. A wait's
timeout is the client's: it stops polling (and withdraws an enter with a leave).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import Field

from ..raft.core import NotLeader
from ..services.barriers import MAX_PARTICIPANTS, BarrierService
from .appkeys import NODE
from .errors import ApiError
from .forward import leader_only
from .idempotency import propose
from .jsonio import json_response
from .locks import LOCK_RE, SESSION_RE, _barrier, _limit, _read_route, _result
from .longpoll import LONG_POLL_S
from .schemas import _Strict, parse_body

routes = web.RouteTableDef()

NAME_RULE = "barrier names are 1-256 characters of A-Z a-z 0-9 . _ - : @"
MAX_WAIT_MS = 3_600_000


class BarrierSet(_Strict):
    session: str | None = Field(default=None, pattern=SESSION_RE,
                                description="Remove the barrier when this session ends")


class DoubleEnter(_Strict):
    session: str = Field(pattern=SESSION_RE)
    n: int = Field(ge=1, le=MAX_PARTICIPANTS, description="Participants of a round (all "
                   "must give the same)")
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS,
                         description="How long to long-poll for the round to fill")


class DoubleLeave(_Strict):
    session: str = Field(pattern=SESSION_RE)
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS,
                         description="How long to long-poll for everyone to leave")


def _svc(request: web.Request) -> BarrierService:
    return request.app[NODE].service("barriers")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not LOCK_RE.fullmatch(name):
        raise ApiError(400, "invalid_barrier_name", NAME_RULE)
    return name


def _int_query(request: web.Request, key: str, default: int | None, hi: int) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{key} must be an integer") from None
    if not 0 <= v <= hi:
        raise ApiError(400, "invalid_query", f"{key} must be between 0 and {hi}")
    return v


async def _wait_for(request: web.Request, pred: Any, wait_ms: int) -> None:
    node = request.app[NODE]
    await node.wait_until(lambda: not node.is_leader() or pred(),
                          min(LONG_POLL_S, wait_ms / 1000))
    if not node.is_leader():
        raise NotLeader(node.leader_id)


# -- barriers --------------------------------------------------------------------------


async def _list(request: web.Request) -> web.StreamResponse:
    q = request.query
    limit = _limit(request)
    await _barrier(request)
    items, nxt = _svc(request).list("barrier", q.get("prefix", ""), q.get("after", ""), limit)
    return json_response({"barriers": items, "next": nxt})


async def _get(request: web.Request) -> web.StreamResponse:
    name = _name(request)
    await _barrier(request)
    return json_response(_svc(request).barrier_info(name))


routes.get("/v1/barriers")(_read_route(_list))


@routes.get("/v1/barriers/{name}/wait")
@leader_only
async def wait(request: web.Request) -> web.StreamResponse:
    """Wait until the barrier is removed (at once if it is not raised). `generation`: the
    one an earlier poll answered with; `wait_ms`: how long this poll may take."""
    name = _name(request)
    gen = _int_query(request, "generation", None, (1 << 63) - 1)
    wait_ms = _int_query(request, "wait_ms", int(LONG_POLL_S * 1000), MAX_WAIT_MS)
    assert wait_ms is not None
    node, svc = request.app[NODE], _svc(request)
    await node.read_barrier()
    if gen is None:
        gen = svc.generation(name)
        if gen is None:
            return json_response({"barrier": name, "released": True, "generation": None})
    await _wait_for(request, lambda: svc.generation(name) != gen, wait_ms)
    return json_response({"barrier": name, "released": svc.generation(name) != gen,
                          "generation": gen})


routes.get("/v1/barriers/{name}")(_read_route(_get))


@routes.put("/v1/barriers/{name}")
@leader_only
async def set_barrier(request: web.Request) -> web.StreamResponse:
    """Raise the barrier (no change if it is raised: `created: false`)."""
    name = _name(request)
    body = await parse_body(request, BarrierSet, optional=True)
    args: dict[str, Any] = {"barrier": name}
    if body.session:
        args["session"] = body.session
    return _result(await propose(request, "barriers", "set", args))


@routes.delete("/v1/barriers/{name}")
@leader_only
async def remove_barrier(request: web.Request) -> web.StreamResponse:
    """Lower the barrier: every waiter is released (`removed: false` if it was not up)."""
    name = _name(request)
    return _result(await propose(request, "barriers", "remove", {"barrier": name}))


# -- double barriers -------------------------------------------------------------------


async def _dlist(request: web.Request) -> web.StreamResponse:
    q = request.query
    limit = _limit(request)
    await _barrier(request)
    items, nxt = _svc(request).list("double", q.get("prefix", ""), q.get("after", ""), limit)
    return json_response({"barriers": items, "next": nxt})


async def _dget(request: web.Request) -> web.StreamResponse:
    name = _name(request)
    await _barrier(request)
    return json_response(_svc(request).double_info(name))


routes.get("/v1/double-barriers")(_read_route(_dlist))


def _enter_answer(state: dict[str, Any], sid: str) -> dict[str, Any]:
    if not state.get("entered"):
        return {"error": "not_entered", "status": 409, "barrier": state["barrier"],
                "session": sid, "message": f"session {sid} is not in double barrier "
                f"{state['barrier']!r} (it left, or its session ended)"}
    return state


async def _poll_enter(request: web.Request, name: str, sid: str,
                      wait_ms: int) -> dict[str, Any]:
    svc = _svc(request)

    def settled() -> bool:
        st = svc.enter_state(name, sid)
        return bool(st["ready"] or not st["entered"])

    await _wait_for(request, settled, wait_ms)
    return _enter_answer(svc.enter_state(name, sid), sid)


@routes.post("/v1/double-barriers/{name}/enter")
@leader_only
async def enter(request: web.Request) -> web.StreamResponse:
    """Enter for a session; released (`ready: true`) once `n` have entered. 409
    `n_conflict` if `n` differs from the other participants'."""
    name = _name(request)
    body = await parse_body(request, DoubleEnter)
    res = await propose(request, "barriers", "enter",
                        {"barrier": name, "session": body.session, "n": body.n})
    if isinstance(res, dict) and "error" not in res and not res.get("ready") \
            and body.wait_ms:
        res = await _poll_enter(request, name, body.session, body.wait_ms)
    return _result(res)


@routes.get("/v1/double-barriers/{name}/enter")
@leader_only
async def enter_status(request: web.Request) -> web.StreamResponse:
    """Continue waiting for an enter (`session`): `ready` once its round is full."""
    name = _name(request)
    sid = request.query.get("session", "")
    if not re.fullmatch(SESSION_RE, sid):
        raise ApiError(400, "invalid_query", "session must be a session id")
    wait_ms = _int_query(request, "wait_ms", int(LONG_POLL_S * 1000), MAX_WAIT_MS)
    assert wait_ms is not None
    await request.app[NODE].read_barrier()
    return _result(await _poll_enter(request, name, sid, wait_ms))


@routes.post("/v1/double-barriers/{name}/leave")
@leader_only
async def leave(request: web.Request) -> web.StreamResponse:
    """Leave for a session; released (`done: true`) once every participant of its round
    has left. Before the round is full this withdraws the enter (done at once)."""
    name = _name(request)
    body = await parse_body(request, DoubleLeave)
    res = await propose(request, "barriers", "leave", {"barrier": name, "session": body.session})
    if isinstance(res, dict) and "error" not in res and not res.get("done") and body.wait_ms:
        svc, r = _svc(request), res["round"]
        await _wait_for(request, lambda: svc.leave_state(name, r)["done"], body.wait_ms)
        res = svc.leave_state(name, r)
    return _result(res)


@routes.get("/v1/double-barriers/{name}/leave")
@leader_only
async def leave_status(request: web.Request) -> web.StreamResponse:
    """Continue waiting for a leave: `done` once round `round` is over."""
    name = _name(request)
    r = _int_query(request, "round", None, (1 << 63) - 1)
    if r is None:
        raise ApiError(400, "invalid_query", "round is required (from the leave's answer)")
    wait_ms = _int_query(request, "wait_ms", int(LONG_POLL_S * 1000), MAX_WAIT_MS)
    assert wait_ms is not None
    node, svc = request.app[NODE], _svc(request)
    await node.read_barrier()
    await _wait_for(request, lambda: svc.leave_state(name, r)["done"], wait_ms)
    return json_response(svc.leave_state(name, r))


routes.get("/v1/double-barriers/{name}")(_read_route(_dget))


async def _name_with_slash(request: web.Request) -> web.StreamResponse:
    raise ApiError(400, "invalid_barrier_name", NAME_RULE + " (no '/')",
                   name=request.match_info.get("name", ""))


for _path in ("/v1/barriers/{name:.+}", "/v1/double-barriers/{name:.+}"):
    routes.get(_path)(_name_with_slash)
for _path in ("/v1/double-barriers/{name:.+}/enter", "/v1/double-barriers/{name:.+}/leave"):
    routes.post(_path)(_name_with_slash)
routes.put("/v1/barriers/{name:.+}")(_name_with_slash)
routes.delete("/v1/barriers/{name:.+}")(_name_with_slash)
