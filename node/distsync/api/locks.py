"""HTTP routes of the lock service: sessions (open, keepalive, close) and locks (acquire,
release, inspect, list, deadlock report). Same pattern as kv: parse and check, propose through
the log (writes) or pass a ReadIndex barrier (reads), map the result.

A waiting acquire is a long poll: the acquire command puts the session in the lock's
replicated FIFO queue, then the handler waits (node.wait_until, re-checked after every Ready)
until the wait is resolved (granted, timed out by the leader's replicated `timeout` command,
cancelled, or its session ended), at most LONG_POLL_S. If it is still pending then, the answer
is 200 `{"granted": false, "waiting": true, "wait_id": ...}` and the client polls
`GET /v1/locks/{name}/waits/{wait_id}`. A client whose request died with a leader retries the
acquire with the same Request-Id: the dedupe table answers with the original result (no second
wait is queued) and the new leader's handler goes on polling the same wait.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from ..raft.core import NotLeader
from ..services.base import CommandError
from ..services.locks import MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS, LockService, NotReady
from .appkeys import NODE
from .errors import ApiError
from .forward import leader_only
from .idempotency import propose, raw_request_id
from .jsonio import json_response
from .longpoll import await_resolved, continue_wait, session_gone, wait_answer, window_until
from .peer_trust import client_addr
from .schemas import SESSION_RE, _Strict, parse_body

routes = web.RouteTableDef()

LOCK_RE = re.compile(r"^[A-Za-z0-9._\-:@]{1,256}$")
RESERVED = {"deadlocks"}
DEFAULT_TTL_MS = 10_000


class SessionOpen(_Strict):
    ttl_ms: int = Field(default=DEFAULT_TTL_MS, ge=MIN_TTL_MS, le=MAX_TTL_MS)
    name: str = Field(default="", max_length=128)


class LockAcquire(_Strict):
    session: str = Field(pattern=SESSION_RE)
    mode: Literal["exclusive", "shared"] = "exclusive"
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS)
    upgrade: bool = False


class LockRelease(_Strict):
    session: str = Field(pattern=SESSION_RE)


# -- helpers -------------------------------------------------------------------------------


def _svc(request: web.Request) -> LockService:
    return request.app[NODE].service("locks")


def _result(res: Any) -> web.Response:
    if isinstance(res, dict) and "error" in res:
        body = {k: v for k, v in res.items() if k != "status"}
        return json_response(body, status=res.get("status", 409))
    return json_response(res)


def _lock_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not LOCK_RE.fullmatch(name) or name in RESERVED:
        raise ApiError(
            400, "invalid_lock_name",
            "lock names are 1-256 characters of A-Z a-z 0-9 . _ - : @ ('deadlocks' is "
            "reserved)",
        )
    return name


def _session_id(request: web.Request) -> str:
    sid = request.match_info["id"]
    if not re.fullmatch(SESSION_RE, sid):
        raise ApiError(400, "invalid_request", "bad session id")
    return sid


def _consistency(request: web.Request) -> str:
    c = request.query.get("consistency", "linearizable")
    if c not in ("linearizable", "stale"):
        raise ApiError(400, "invalid_query", "consistency must be 'linearizable' or 'stale'")
    return c


async def _barrier(request: web.Request) -> None:
    if _consistency(request) == "linearizable":
        node = request.app[NODE]
        if not node.is_leader():
            raise NotLeader(node.leader_id)
        await node.read_barrier()


def _wait_answer(state: dict[str, Any] | None, wait_id: int) -> dict[str, Any]:
    """The HTTP answer for a wait's state (see LockService.wait_state)."""
    return wait_answer(state, wait_id, "lock", lambda st: {
        "mode": st["mode"], "upgraded": st.get("upgraded", False)})


async def _poll(request: web.Request, wait_id: int, deadline_ms: int,
                started: float) -> dict[str, Any]:
    node, svc = request.app[NODE], _svc(request)
    state = await await_resolved(node, lambda: svc.wait_state(wait_id),
                                 window_until(node, deadline_ms, started))
    return _wait_answer(state, wait_id)


def _observe_acquire(request: web.Request, res: Any, t0: float) -> None:
    if isinstance(res, dict) and res.get("granted"):
        node = request.app[NODE]
        node.metrics.locks_acquire_latency.observe(node.clock.monotonic() - t0)


# -- sessions ------------------------------------------------------------------------------


@routes.post("/v1/sessions")
@leader_only
async def open_session(request: web.Request) -> web.StreamResponse:
    """Open a session with a lease of `ttl_ms` (default 10 s); keep it alive with
    keepalives well within the TTL (a third of it is the client's default)."""
    body = await parse_body(request, SessionOpen, optional=True)
    # The owner counts against max_sessions_per_client, in the state machine (quotas.py).
    args = {"ttl_ms": body.ttl_ms, "name": body.name, "owner": client_addr(request)}
    return _result(await propose(request, "locks", "open", args))


@routes.post("/v1/sessions/{id}/keepalive")
@leader_only
async def keepalive(request: web.Request) -> web.StreamResponse:
    """Renew the lease (no log write: the leader keeps deadlines in memory). Answered only
    after a ReadIndex round, so a deposed leader cannot renew anything."""
    sid = _session_id(request)
    raw_request_id(request)  # validated for uniformity; a keepalive is idempotent anyway
    node = request.app[NODE]
    await node.read_barrier()
    if not node.is_leader():
        raise NotLeader(node.leader_id)
    try:
        return json_response(_svc(request).keepalive(sid, node.term))
    except NotReady as e:
        raise ApiError(503, "unavailable", str(e)) from None
    except CommandError as e:
        return _result(e.to_result())


@routes.get("/v1/sessions")
@leader_only
async def list_sessions(request: web.Request) -> web.StreamResponse:
    """Open sessions with their locks and the leader's view of each lease (what an operator
    checks first when a lock is stuck: is its holder still keeping its session alive?)."""
    after, limit = request.query.get("after", ""), _limit(request)
    node = request.app[NODE]
    await node.read_barrier()
    svc = _svc(request)
    sessions, nxt = svc.list_sessions(after, limit)
    fresh = svc.lease.term == node.term
    for info in sessions:
        left = svc.lease.remaining_ms(info["session"]) if fresh else None
        info["lease_remaining_ms"] = None if left is None else int(left)
    return json_response({"sessions": sessions, "next": nxt})


@routes.get("/v1/sessions/{id}")
@leader_only
async def get_session(request: web.Request) -> web.StreamResponse:
    sid = _session_id(request)
    node = request.app[NODE]
    await node.read_barrier()
    svc = _svc(request)
    info = svc.session_info(sid)
    if info is None:
        return _result(session_gone(sid, "expired, closed or never opened"))
    left = svc.lease.remaining_ms(sid) if svc.lease.term == node.term else None
    info["lease_remaining_ms"] = None if left is None else int(left)
    return json_response(info)


@routes.delete("/v1/sessions/{id}")
@leader_only
async def close_session(request: web.Request) -> web.StreamResponse:
    """Close a session: releases every lock it holds and drops its waits."""
    sid = _session_id(request)
    res = await propose(request, "locks", "close", {"session": sid})
    return _result(res)


# -- locks ---------------------------------------------------------------------------------


def _limit(request: web.Request) -> int:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_query", "limit must be between 1 and 1000")
    return limit


async def _list(request: web.Request) -> web.StreamResponse:
    q = request.query
    limit = _limit(request)
    await _barrier(request)
    locks, nxt = _svc(request).list_locks(q.get("prefix", ""), q.get("after", ""), limit)
    return json_response({"locks": locks, "next": nxt})


async def _deadlocks(request: web.Request) -> web.StreamResponse:
    await _barrier(request)
    svc = _svc(request)
    return json_response({"cycles": svc.deadlocks(), "recent": svc.recent()})


async def _get_lock(request: web.Request) -> web.StreamResponse:
    name = _lock_name(request)
    await _barrier(request)
    return json_response(_svc(request).lock_info(name))


def _read_route(handler: Any) -> Any:
    """Linearizable by default (on the leader, after ReadIndex); `?consistency=stale`
    answers from any node's own state."""
    linear = leader_only(handler)

    async def route(request: web.Request) -> web.StreamResponse:
        if _consistency(request) == "stale":
            return await handler(request)
        return await linear(request)

    route.__doc__ = handler.__doc__
    return route


# Registered before /v1/locks/{name} so that they win the match.
routes.get("/v1/locks")(_read_route(_list))
routes.get("/v1/locks/deadlocks")(_read_route(_deadlocks))
routes.get("/v1/locks/{name}")(_read_route(_get_lock))


@routes.post("/v1/locks/{name}/acquire")
@leader_only
async def acquire(request: web.Request) -> web.StreamResponse:
    name = _lock_name(request)
    body = await parse_body(request, LockAcquire)
    node = request.app[NODE]
    t0 = node.clock.monotonic()
    args = {
        "session": body.session, "lock": name, "mode": body.mode, "wait_ms": body.wait_ms,
        "upgrade": body.upgrade, "deadline_ms": node.clock.wall_ms() + body.wait_ms,
    }
    res = await propose(request, "locks", "acquire", args)
    if isinstance(res, dict) and res.get("waiting"):
        res = await _poll(request, res["wait_id"], res["deadline_ms"], t0)
    _observe_acquire(request, res, t0)
    return _result(res)


@routes.get("/v1/locks/{name}/waits/{wait_id}")
@leader_only
async def wait_status(request: web.Request) -> web.StreamResponse:
    """Continue a long poll that an acquire answered with `waiting`."""
    return _result(await continue_wait(request, _svc(request), "lock", _lock_name(request),
                                       _wait_answer))


@routes.post("/v1/locks/{name}/release")
@leader_only
async def release(request: web.Request) -> web.StreamResponse:
    """Release the session's hold on the lock, or cancel its pending wait (both, for a
    pending upgrade). 409 `not_held` if it has neither."""
    name = _lock_name(request)
    body = await parse_body(request, LockRelease)
    res = await propose(request, "locks", "release", {"session": body.session, "lock": name})
    return _result(res)


# A name with a `/` (raw, or decoded from %2F) cannot match the routes above; without these
# it would get the router's bare 404 "no route". Registered last, so they only catch that.
async def _name_with_slash(request: web.Request) -> web.StreamResponse:
    raise ApiError(400, "invalid_lock_name",
                   "lock names are 1-256 characters of A-Z a-z 0-9 . _ - : @ (no '/')",
                   name=request.match_info.get("name", ""))


routes.post("/v1/locks/{name:.+}/acquire")(_name_with_slash)
routes.post("/v1/locks/{name:.+}/release")(_name_with_slash)
routes.get("/v1/locks/{name:.+}")(_name_with_slash)
