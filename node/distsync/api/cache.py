"""HTTP routes of the coherent cache (see distsync/cache/). Values are raw bytes (binary
safe): `PUT` takes the request body as the value, `GET` answers it with the version, the
hit/miss outcome and this node's line state in headers. Internal node-to-node messages are
msgpack on `POST /v1/internal/cache/{op}`."""

from __future__ import annotations

import math
import re

from aiohttp import web
from pydantic import Field

from ..cache import BackendUnavailable, CacheService, Contention, HomeUnavailable
from ..cache.fill import MAX_LEASE_MS as MAX_FILL_LEASE_MS
from ..cache.protocol import OPS, PeerUnreachable, decode, encode
from ..cache.transport import dispatch_safe
from .appkeys import CACHE
from .errors import ApiError
from .jsonio import json_response
from .schemas import _Strict, parse_body

routes = web.RouteTableDef()

CACHE_KEY_RE = re.compile(r"^[A-Za-z0-9._\-:@]{1,512}$")
MAX_TTL_S = 30 * 24 * 3600


def _svc(request: web.Request) -> CacheService:
    return request.app[CACHE]


def _key(request: web.Request) -> str:
    key = request.match_info.get("key", "")
    if not CACHE_KEY_RE.fullmatch(key):
        raise ApiError(400, "invalid_key",
                       "cache keys are 1-512 characters of A-Z a-z 0-9 . _ - : @")
    return key


def _ttl_ms(request: web.Request) -> int | None:
    raw = request.query.get("ttl")
    if raw is None:
        return None
    try:
        ttl = float(raw)
    except ValueError:
        ttl = math.nan
    if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL_S):
        raise ApiError(400, "invalid_ttl",
                       f"ttl must be a number of seconds in (0, {MAX_TTL_S}]")
    return max(1, round(ttl * 1000))


async def _guard(coro):  # type: ignore[no-untyped-def]
    try:
        return await coro
    except BackendUnavailable as e:
        raise ApiError(503, "backend_unavailable", str(e)) from None
    except HomeUnavailable as e:
        raise ApiError(503, "home_unavailable", str(e), home=e.home) from None
    except Contention as e:
        raise ApiError(503, "contention", str(e)) from None


# Statistics live at the bare collection path: no key is empty, so no key can shadow them.
# (Up to issue 20 they were at /v1/cache/stats, which hid a user's key "stats"; that path is
# now the key's, like any other.)
@routes.get("/v1/cache")
async def stats(request: web.Request) -> web.StreamResponse:
    return json_response(_svc(request).stats())


@routes.get("/v1/cache/{key:[^/]*}/state")
async def state(request: web.Request) -> web.StreamResponse:
    """This node's line (default), another member's (`node=<id>`), or every member's and the
    home's directory entry (`node=all`)."""
    svc, key = _svc(request), _key(request)
    which = request.query.get("node", svc.id)
    if which != "all" and which not in svc.members:
        raise ApiError(400, "invalid_query", f"node must be a member id or 'all', not {which!r}")
    targets = sorted(svc.members) if which == "all" else [which]
    out = {}
    for nid in targets:
        try:
            out[nid] = await svc.member_line_state(nid, key)
        except PeerUnreachable:
            out[nid] = {"node": nid, "state": "unreachable"}
    if which != "all":
        return json_response({"key": key, **out[which]})
    home = svc.home_of(key) if svc.ring else None
    directory = (out.get(home) or {}).get("directory") if home else None
    return json_response({
        "key": key, "home": home, "directory": directory,
        "nodes": {n: {k: v for k, v in s.items() if k != "directory"} for n, s in out.items()},
    })


class FillBody(_Strict):
    lease_ms: int = Field(default=10_000, ge=1, le=MAX_FILL_LEASE_MS)
    token: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,64}$")
    cancel: bool = False


@routes.post("/v1/cache/{key:[^/]*}/fill")
async def fill(request: web.Request) -> web.StreamResponse:
    """Single flight of a miss, decided at the key's home: the value if the backend has it
    (200, raw bytes), else 200 `{"fill": "granted", "token", "lease_ms"}` to one caller (it
    loads and PUTs) and `{"fill": "wait", "retry_ms"}` to the others while that lease lasts.
    `{"token", "cancel": true}` gives a lease back (the loader failed)."""
    key = _key(request)
    body = await parse_body(request, FillBody, optional=True)
    rep = await _guard(_svc(request).fill(key, body.lease_ms, body.token, body.cancel))
    if "value" in rep:
        return web.Response(body=rep["value"], content_type="application/octet-stream",
                            headers={"X-Cache-Version": str(rep["version"])})
    if rep.get("cancelled"):
        return json_response({"key": key, "fill": "cancelled"})
    if "token" in rep:
        return json_response({"key": key, "fill": "granted", "token": rep["token"],
                              "lease_ms": rep["lease_ms"]})
    return json_response({"key": key, "fill": "wait", "retry_ms": rep["wait_ms"]})


@routes.get("/v1/cache/{key:[^/]*}")
async def get(request: web.Request) -> web.StreamResponse:
    key = _key(request)
    got = await _guard(_svc(request).get(key))
    if got.value is None:
        raise ApiError(404, "not_found", f"cache key {key!r} does not exist")
    return web.Response(body=got.value, content_type="application/octet-stream", headers={
        "X-Cache-Version": str(got.version), "X-Cache": "hit" if got.hit else "miss",
        "X-Cache-State": got.state,
    })


@routes.put("/v1/cache/{key:[^/]*}")
async def put(request: web.Request) -> web.StreamResponse:
    svc, key = _svc(request), _key(request)
    ttl = _ttl_ms(request)
    body = await request.read()
    if len(body) > svc.cfg.max_value_bytes:
        raise ApiError(413, "value_too_large",
                       f"cache values are at most {svc.cfg.max_value_bytes} bytes")
    cond = _condition(request)
    res = await _guard(svc.put(key, body, ttl, cond))
    if res.get("cond_failed"):
        want = "absent" if cond and cond.get("nx") else f"at version {cond and cond.get('if_version')}"
        raise ApiError(409, "condition_failed",
                       f"the key is at version {res['version']} (0: absent), not {want}",
                       key=key, version=res["version"])
    return json_response({"key": key, "version": res["version"], "state": res["state"]})


def _condition(request: web.Request) -> dict[str, object] | None:
    """`?nx=1`: write only if the key is absent; `?if_version=N`: only if its version is N
    (0: absent). Checked where the write is ordered; 409 `condition_failed` otherwise."""
    nx, ifv = request.query.get("nx"), request.query.get("if_version")
    if nx is not None and ifv is not None:
        raise ApiError(400, "invalid_query", "give nx or if_version, not both")
    if nx is not None:
        if nx not in ("1", "true"):
            raise ApiError(400, "invalid_query", "nx must be 1 or true")
        return {"nx": True}
    if ifv is not None:
        if not ifv.isdigit() or len(ifv) > 18:
            raise ApiError(400, "invalid_query", "if_version must be an integer >= 0")
        return {"if_version": int(ifv)}
    return None


@routes.delete("/v1/cache/{key:[^/]*}")
async def delete(request: web.Request) -> web.StreamResponse:
    key = _key(request)
    res = await _guard(_svc(request).delete(key))
    return json_response({"key": key, "deleted": res["existed"], "version": res["version"]})


@routes.post("/v1/internal/cache/{op}")
async def internal(request: web.Request) -> web.StreamResponse:
    op = request.match_info["op"]
    if op not in OPS:
        raise ApiError(404, "not_found", f"unknown cache op {op!r}")
    try:
        msg = decode(await request.read())
    except ValueError as e:
        raise ApiError(400, "invalid_request", f"bad cache message: {e}") from None
    reply = await dispatch_safe(_svc(request).dispatch, op, msg)
    return web.Response(body=encode(reply), content_type="application/msgpack")


async def cache_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    """Startup/cleanup of the node's CacheService (app[CACHE], built by the composition
    root, server.py): it runs while the app serves."""
    svc: CacheService = app[CACHE]
    svc.start()
    yield
    await svc.close()


def setup(app: web.Application) -> None:
    """Called by create_app for every route module that has it."""
    app.cleanup_ctx.append(cache_ctx)
