"""HTTP routes of leader election (services/elections.py; README "Leader election"): campaign,
proclaim, resign, leader, observe. Same conventions as the lock API (api/locks.py): parse and
check, propose through the log (writes) or pass a ReadIndex barrier (reads), map the result.

A campaign that has to wait is a long poll, as a waiting lock acquire is: the campaign command
queues the candidacy (its id is the campaign's log index), then the handler waits until the
candidacy is elected or ends, at most LONG_POLL_S. Still waiting then, the answer is 200
`{"elected": false, "waiting": true, "candidate": id}` and the client goes on with
`GET /v1/elections/{name}/candidates/{id}`. A retry of the campaign with the same Request-Id
is answered from the dedupe table (no second candidacy), and a session's second campaign in
the same election answers its existing candidacy anyway.

`GET /v1/elections/{name}/observe` streams the election's changes of leader (and of the
leader's value) as newline-delimited JSON, like GET /v1/watch: any node serves it from its
applied state; a resuming observer passes the last revision it saw.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import Field

from ..services.elections import ElectionService
from .appkeys import NODE
from .errors import ApiError
from .forward import leader_only
from .idempotency import propose
from .jsonio import dumps, json_response
from .locks import LOCK_RE, SESSION_RE, _barrier, _limit, _read_route, _result
from .longpoll import LONG_POLL_S, await_resolved, path_int
from .schemas import _Strict, check_value_size, parse_body

routes = web.RouteTableDef()

NAME_RE = LOCK_RE  # election names are spelled like lock names
NDJSON = "application/x-ndjson"
MAX_TOKEN = (1 << 63) - 1


class Campaign(_Strict):
    session: str = Field(pattern=SESSION_RE)
    value: Any = None
    # How long this request may wait to be elected before it answers `waiting` (0: at once).
    poll_ms: int = Field(default=int(LONG_POLL_S * 1000), ge=0, le=int(LONG_POLL_S * 1000))


class Proclaim(_Strict):
    session: str = Field(pattern=SESSION_RE)
    token: int = Field(ge=1, le=MAX_TOKEN)
    value: Any = None


class Resign(_Strict):
    session: str = Field(pattern=SESSION_RE)
    token: int | None = Field(default=None, ge=1, le=MAX_TOKEN)


def _svc(request: web.Request) -> ElectionService:
    return request.app[NODE].service("elections")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.fullmatch(name):
        raise ApiError(400, "invalid_election_name",
                       "election names are 1-256 characters of A-Z a-z 0-9 . _ - : @",
                       name=name)
    return name


def _value(request: web.Request, value: Any) -> None:
    check_value_size(value, request.app[NODE].cfg.max_value_bytes)


def _candidacy_answer(state: dict[str, Any] | None, cid: int) -> dict[str, Any]:
    """The HTTP answer for a candidacy's state (see ElectionService.candidacy)."""
    if state is None:
        return {"error": "not_found", "status": 404, "candidate": cid,
                "message": f"no candidacy {cid} (never queued, or ended long ago)"}
    if "state" not in state:  # leading or waiting
        return state
    st, name, sid = state["state"], state["election"], state["session"]
    if st == "elected":
        return {"error": "leadership_lost", "status": 409, "election": name, "candidate": cid,
                "token": state.get("token"), "session": sid,
                "message": f"candidacy {cid} was elected in {name!r} (token "
                           f"{state.get('token')}) and no longer leads"}
    if st in ("resigned", "withdrawn"):
        return {"error": "resigned", "status": 409, "election": name, "candidate": cid,
                "session": sid, "message": f"candidacy {cid} in {name!r} was {st}"}
    reason = st.removeprefix("session_")
    return {"error": "session_not_found", "status": 404, "session": sid, "reason": reason,
            "candidate": cid, "election": name,
            "message": f"session {sid!r} is gone ({reason}); its candidacy ended"}


async def _poll(request: web.Request, cid: int, started: float,
                poll_s: float = LONG_POLL_S) -> dict[str, Any]:
    """Long-poll a candidacy until it is elected or ends, within `poll_s` (at most
    LONG_POLL_S) of `started`."""
    node, svc = request.app[NODE], _svc(request)
    poll_s = min(poll_s, LONG_POLL_S)
    window = max(min(poll_s, 0.5), poll_s - (node.clock.monotonic() - started))
    return _candidacy_answer(await await_resolved(node, lambda: svc.candidacy(cid), window), cid)


# -- reads ---------------------------------------------------------------------------------


async def _list(request: web.Request) -> web.StreamResponse:
    """Elections with a leader or candidates, by name, a page at a time."""
    q = request.query
    limit = _limit(request)
    await _barrier(request)
    items, nxt = _svc(request).list_elections(q.get("prefix", ""), q.get("after", ""), limit)
    return json_response({"elections": items, "next": nxt})


async def _leader(request: web.Request) -> web.StreamResponse:
    """Who leads now (session, value, fencing token) and the waiting candidates."""
    name = _name(request)
    await _barrier(request)
    return json_response(_svc(request).info(name))


routes.get("/v1/elections")(_read_route(_list))
routes.get("/v1/elections/{name}")(_read_route(_leader))


# -- writes --------------------------------------------------------------------------------


@routes.post("/v1/elections/{name}/campaign")
@leader_only
async def campaign(request: web.Request) -> web.StreamResponse:
    """Join the election's candidates with `value`; answered once elected, or with `waiting`
    after the long-poll window (continue at /candidates/{candidate})."""
    name = _name(request)
    body = await parse_body(request, Campaign)
    _value(request, body.value)
    node = request.app[NODE]
    t0 = node.clock.monotonic()
    res = await propose(request, "elections", "campaign",
                        {"election": name, "session": body.session, "value": body.value})
    if isinstance(res, dict) and res.get("waiting"):
        res = await _poll(request, res["candidate"], t0, body.poll_ms / 1000)
    return _result(res)


@routes.get("/v1/elections/{name}/candidates/{candidate}")
@leader_only
async def candidacy(request: web.Request) -> web.StreamResponse:
    """Continue a campaign's long poll."""
    name = _name(request)
    cid = path_int(request, "candidate", "candidate")
    res = await _poll(request, cid, request.app[NODE].clock.monotonic())
    if res.get("election", name) != name:
        res = _candidacy_answer(None, cid)
    return _result(res)


@routes.post("/v1/elections/{name}/proclaim")
@leader_only
async def proclaim(request: web.Request) -> web.StreamResponse:
    """The leader sets a new value; 409 `not_leader` unless `session` leads with `token`."""
    name = _name(request)
    body = await parse_body(request, Proclaim)
    _value(request, body.value)
    return _result(await propose(request, "elections", "proclaim", {
        "election": name, "session": body.session, "token": body.token, "value": body.value}))


@routes.post("/v1/elections/{name}/resign")
@leader_only
async def resign(request: web.Request) -> web.StreamResponse:
    """The leader steps down (the next candidate is elected), or a candidate withdraws; 409
    `not_candidate` if the session does neither, `not_leader` for another token."""
    name = _name(request)
    body = await parse_body(request, Resign)
    args: dict[str, Any] = {"election": name, "session": body.session}
    if body.token is not None:
        args["token"] = body.token
    return _result(await propose(request, "elections", "resign", args))


# -- observe -------------------------------------------------------------------------------


def _int_query(request: web.Request, key: str, lo: int, hi: int, default: int | None
               ) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{key} must be an integer") from None
    if not lo <= n <= hi:
        raise ApiError(400, "invalid_query", f"{key} must be between {lo} and {hi}")
    return n


def _pending(svc: ElectionService, name: str, after: int) -> list[dict[str, Any]]:
    """The changes after revision `after` that this node knows, in order; when it cannot
    prove that none is missing before the first (history trimmed, or the node restarted
    from a later snapshot), that one is marked `resync`."""
    newer, complete = svc.changes_after(name, after)
    if newer and not complete:
        newer[0] = {**newer[0], "resync": True}
    return newer


@routes.get("/v1/elections/{name}/observe")
async def observe(request: web.Request) -> web.StreamResponse:
    """The leader now, then every change of leader or value, as NDJSON lines (any node)."""
    name = _name(request)
    after = _int_query(request, "after_revision", 0, MAX_TOKEN, None)
    progress_s = (_int_query(request, "progress_ms", 10, 3_600_000, 5000) or 5000) / 1000
    timeout_ms = _int_query(request, "timeout_ms", 1, 86_400_000, None)
    node, svc = request.app[NODE], _svc(request)
    loop = asyncio.get_running_loop()
    end = None if timeout_ms is None else loop.time() + timeout_ms / 1000
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = NDJSON
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        if after is None:  # a new observer: the state now
            first = svc.current_event(name)
            await resp.write(dumps(first) + b"\n")
            after = first["revision"] or node.applied_index
        last_write = loop.time()
        while end is None or loop.time() < end:
            lines = _pending(svc, name, after)
            if lines:
                after = max(after, *(ln["revision"] for ln in lines))
                await resp.write(b"".join(dumps(ln) + b"\n" for ln in lines))
                last_write = loop.time()
                continue
            now = loop.time()
            if now - last_write >= progress_s:
                await resp.write(dumps({"type": "progress", "election": name,
                                        "revision": max(after, node.applied_index)}) + b"\n")
                last_write = now
                continue
            wait = last_write + progress_s - now
            if end is not None:
                wait = min(wait, end - now)
            await node.wait_applied_change(max(0.01, wait))
    except ConnectionError:
        pass  # the observer went away
    return resp


# A name with a `/` cannot match the routes above; answer it as a bad name, not "no route".
async def _name_with_slash(request: web.Request) -> web.StreamResponse:
    raise ApiError(400, "invalid_election_name",
                   "election names are 1-256 characters of A-Z a-z 0-9 . _ - : @ (no '/')",
                   name=request.match_info.get("name", ""))


for _op in ("campaign", "proclaim", "resign"):
    routes.post(f"/v1/elections/{{name:.+}}/{_op}")(_name_with_slash)
routes.get("/v1/elections/{name:.+}/observe")(_name_with_slash)
routes.get("/v1/elections/{name:.+}")(_name_with_slash)
