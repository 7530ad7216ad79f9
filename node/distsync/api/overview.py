"""Read-only views the operator console (`/ui`) needs and the per-node API cannot give it.

* `GET /v1/auth/whoami`: the role of the presented token, so the console shows admin
  buttons only to an admin. Open (no token needed): it answers `role: null` for a missing or
  unknown token instead of 401, which tells the caller no more than a 401 would.
* `GET /v1/cluster/nodes`: every member's own `/v1/status` and `/v1/cache`, fetched by
  this node with the caller's `Authorization`. A browser page can only talk to the node that
  served it (same origin), yet the questions an operator asks first (is every member caught
  up, what does each node's cache hold) are about every node. A member that does not answer
  within a second is listed with its error and when it last answered this node.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from .appkeys import FORWARD_SESSION, NODE
from .auth import TOKEN_AUTH
from .jsonio import json_response

routes = web.RouteTableDef()

FANOUT_TIMEOUT_S = 1.0
# node id -> wall time (ms) it last answered this node's fan-out
_LAST_SEEN = web.AppKey("overview_last_seen", dict)


@routes.get("/v1/auth/whoami")
async def whoami(request: web.Request) -> web.StreamResponse:
    auth = request.app.get(TOKEN_AUTH)
    if auth is None:  # client auth off (local development): everyone may do everything
        return json_response({"auth": False, "role": "admin"})
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    role = auth.role_of(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    return json_response({"auth": True, "role": role.name.lower() if role else None})


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with session.get(url, headers=headers) as r:
        body = await r.json(content_type=None)
        if r.status != 200:
            msg = body.get("error", "") if isinstance(body, dict) else ""
            raise RuntimeError(f"HTTP {r.status} {msg}".strip())
        return body


async def _one(request: web.Request, member: dict[str, Any]) -> dict[str, Any]:
    node = request.app[NODE]
    scheme = "https" if node.ssl_client else "http"
    headers = {h: request.headers[h] for h in ("Authorization",) if h in request.headers}
    session: aiohttp.ClientSession = request.app[FORWARD_SESSION]
    base = f"{scheme}://{member['addr']}"
    out: dict[str, Any] = {"id": member["id"], "addr": member["addr"],
                           "voter": member["voter"]}
    try:
        async with asyncio.timeout(FANOUT_TIMEOUT_S):
            status, cache = await asyncio.gather(
                _get(session, f"{base}/v1/status", headers),
                _get(session, f"{base}/v1/cache", headers),
            )
    except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as e:
        out.update(reachable=False, error=str(e) or type(e).__name__)
    else:
        request.app[_LAST_SEEN][member["id"]] = int(time.time() * 1000)
        out.update(reachable=True, status=status, cache=cache)
    out["last_seen_ms"] = request.app[_LAST_SEEN].get(member["id"])
    return out


@routes.get("/v1/cluster/nodes")
async def nodes(request: web.Request) -> web.StreamResponse:
    """Each member's own view, asked in parallel; this node's membership decides who."""
    st = request.app[NODE].status()
    got = await asyncio.gather(*(_one(request, m) for m in st["members"]))
    return json_response({"via": st["id"], "leader": st["leader"], "term": st["term"],
                          "now_ms": int(time.time() * 1000), "nodes": list(got)})


def setup(app: web.Application) -> None:
    app[_LAST_SEEN] = {}
