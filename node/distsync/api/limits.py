"""Per-client limits that need more than a schema: open lock sessions per client.

A session costs replicated state on every node and a lease the leader tracks, so a client in a
loop that opens sessions without closing them could grow the state without bound. The leader
counts, per client address, the sessions it opened that are still open, and answers 429
`too_many_sessions` past `max_sessions_per_client` (`--max-sessions-per-client`, default 1000).

The client is the address the request came from; a follower that forwards a request names the
original client in `X-Distsync-Client-Addr` (forward.py), so clients behind a load balancer in
front of all nodes are told apart too. The count is the leader's own (not part of the log):
after a leader change the new leader starts counting afresh, so the cap is a guard against
runaway clients, not a hard quota; sessions still end by close or lease expiry as always.
"""

from __future__ import annotations

import weakref
from collections.abc import Container
from typing import Any

from aiohttp import web

from .errors import ApiError
from .forward import client_of


class SessionQuota:
    def __init__(self, limit: int):
        self.limit = limit
        self.by_client: dict[str, set[str]] = {}

    def check(self, client: str, live: Container[str]) -> None:
        mine = self.by_client.get(client)
        if mine is None:
            return
        mine = self.by_client[client] = {s for s in mine if s in live}
        if not mine:
            del self.by_client[client]
        elif len(mine) >= self.limit:
            raise ApiError(
                429, "too_many_sessions",
                f"client {client} has {len(mine)} open sessions; the limit is {self.limit}. "
                "Close sessions you no longer need (DELETE /v1/sessions/{id})",
                limit=self.limit,
            )

    def opened(self, client: str, session: str) -> None:
        self.by_client.setdefault(client, set()).add(session)


_QUOTAS: weakref.WeakKeyDictionary[Any, SessionQuota] = weakref.WeakKeyDictionary()


def _quota(node: Any) -> SessionQuota:
    q = _QUOTAS.get(node)
    if q is None:
        q = _QUOTAS[node] = SessionQuota(getattr(node.cfg, "max_sessions_per_client", 1000))
    return q


def check_session_quota(request: web.Request, live: Container[str]) -> str:
    """Before opening a session: 429 if this client is at its limit; returns the client for
    `session_opened`. `live` holds the ids of the sessions open now."""
    client = client_of(request)
    _quota(request.app["node"]).check(client, live)
    return client


def session_opened(request: web.Request, client: str, result: Any) -> None:
    if isinstance(result, dict) and isinstance(result.get("session"), str):
        _quota(request.app["node"]).opened(client, result["session"])
