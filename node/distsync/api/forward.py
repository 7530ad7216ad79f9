"""Followers forward leader-only requests to the leader, so a client may talk to any node.

Forwarding (rather than a 307 redirect) keeps clients simple and works through a Kubernetes
Service that load-balances over all pods. A forwarded request is marked; a node that gets a
marked request and is not the leader answers 503 `not_leader` instead of forwarding again, so
requests never loop while leadership is moving. The mark and the client address it carries
are signed like a `/v1/internal/` call and believed only from a peer (peer_trust.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from ..raft.core import NotLeader
from .appkeys import FORWARD_SESSION, NODE
from .errors import ApiError
from .idempotency import CLIENT_ID_HEADER, raw_request_id
from .peer_trust import CLIENT_HEADER, FORWARDED_HEADER, client_addr, forwarded_by

LEADER_HEADER = "X-Distsync-Leader"
__all__ = ["CLIENT_HEADER", "FORWARDED_HEADER", "LEADER_HEADER", "forward", "leader_only"]
_PASS_HEADERS = ("Content-Type", "Request-Id", "Authorization", "Accept", CLIENT_ID_HEADER)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def forward(request: web.Request, timeout: float | None = None) -> web.StreamResponse:
    """Relay the request to the leader and its answer back. `timeout`: the whole exchange
    (default: the forwarding session's, request_timeout + 1 s); a long poll passes more."""
    node = request.app[NODE]
    leader = node.leader_id
    if forwarded_by(request):
        raise ApiError(
            503, "not_leader", "this node is not the leader; retry",
            leader=leader, leader_addr=node.addr_of(leader),
        )
    addr = node.addr_of(leader) if leader and leader != node.id else None
    if addr is None:
        raise ApiError(503, "no_leader", "no leader is known right now; retry shortly")
    body = await request.read()
    headers = {h: request.headers[h] for h in _PASS_HEADERS if h in request.headers}
    if "rid" in request:
        headers["Request-Id"] = raw_request_id(request)
    headers[FORWARDED_HEADER] = node.id
    headers[CLIENT_HEADER] = client_addr(request)
    if node.peer_auth is not None:
        headers.update(node.peer_auth.request_headers(leader))
    session: aiohttp.ClientSession = request.app[FORWARD_SESSION]
    url = f"{'https' if node.ssl_client else 'http'}://{addr}{request.path_qs}"
    kw = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
    try:
        async with session.request(request.method, url, data=body, headers=headers,
                                   **kw) as r:
            data = await r.read()
            resp = web.Response(status=r.status, body=data)
            resp.content_type = r.content_type
            resp.headers[LEADER_HEADER] = leader
            return resp
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ApiError(
            503, "leader_unreachable", f"could not reach leader {leader} at {addr}: {e}",
            leader=leader,
        ) from None


def client_of(request: web.Request) -> str:
    """The address of the client a request comes from, through one trusted forwarding hop."""
    return client_addr(request)


def leader_only(handler: Handler) -> Handler:
    """Run `handler` on the leader; anywhere else, forward the request to the leader."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not request.app[NODE].is_leader():
            return await forward(request)
        try:
            return await handler(request)
        except NotLeader:
            # Lost leadership mid-request: the new leader may still apply the command, so the
            # retry must carry the same Request-Id; forwarding does exactly that.
            return await forward(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped
