"""Client authentication and roles: bearer tokens, one set per role, read < write < admin.

Which role a request needs comes from ``RULES``, a declarative table of (methods, path prefix,
role), first match wins, so every service's routes are covered by their prefix without each
handler remembering to check. A test asserts that every route the app registers matches a
rule of its own rather than the fail-closed fallback (reads: ``read``; anything else:
``admin``), so a new route family cannot slip through unnoticed.

* ``/healthz``, ``/readyz`` and ``/metrics`` stay open: Kubernetes probes and Prometheus carry
  no token, and they reveal nothing a client could not learn from a failed request.
  ``/v1/openapi.json`` is open too: it describes the API, not its data; so are the operator
  console's static files under ``/ui`` (the page reads its data with the operator's token)
  and ``/v1/auth/whoami`` (the role of the presented token, or null: what a 401 would say).
* ``/v1/raft/stream`` is the peer protocol; the transport authenticates it (cluster secret
  and/or mutual TLS), never a client token. So are node-to-node calls under
  ``/v1/internal/`` (e.g. cache coherence): callers sign them with
  ``node.peer_auth.request_headers(target)``, checked here by the same authenticator.
* Everything else needs a token: reads (GET/HEAD, including ``/v1/status``) ``read``;
  mutations of kv, locks, sessions, queues and cache ``write``; mutations under
  ``/v1/cluster/`` (membership, leader transfer) ``admin``.

A missing or unknown token gets 401 with ``WWW-Authenticate: Bearer``; a valid token with too
low a role gets 403; either way before the handler runs, so nothing changes. A follower
forwards ``Authorization`` to the leader, which checks again. Tokens are compared in constant
time (HMAC digests of equal length). With no token configured at all, client auth is off and
the node logs that loudly at start-up: meant for the local dev cluster only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiohttp import web

from ..transport import STREAM_PATH
from .appkeys import NODE
from .errors import json_error

log = logging.getLogger("distsync.api.auth")


class Role(IntEnum):
    OPEN = 0  # no token needed
    READ = 1
    WRITE = 2
    ADMIN = 3
    PEER = 9  # not a client route: authenticated by the peer transport


READS = frozenset({"GET", "HEAD"})
MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    prefix: str  # matches the path itself and everything below it ("/v1/kv" and "/v1/kv/x")
    role: Role

    def matches(self, method: str, path: str) -> bool:
        p = self.prefix
        return method in self.methods and (
            path == p or path.startswith(p if p.endswith("/") else p + "/")
        )


def _rules(methods: frozenset[str], role: Role, *prefixes: str) -> list[Rule]:
    return [Rule(methods, p, role) for p in prefixes]


# First match wins: specific before general.
RULES: tuple[Rule, ...] = (
    *_rules(READS, Role.OPEN, "/healthz", "/readyz", "/metrics", "/v1/openapi.json",
            "/v1/auth/whoami", "/ui"),
    *_rules(frozenset({"GET"}), Role.PEER, STREAM_PATH),
    *_rules(READS | MUTATIONS, Role.PEER, "/v1/internal"),
    *_rules(MUTATIONS, Role.ADMIN, "/v1/cluster"),
    *_rules(
        MUTATIONS, Role.WRITE,
        "/v1/kv", "/v1/locks", "/v1/sessions", "/v1/queues", "/v1/cache", "/v1/elections",
        "/v1/semaphores", "/v1/barriers", "/v1/double-barriers",
    ),
    *_rules(READS, Role.READ, "/v1"),
)
# When no rule matches: fail closed.
FALLBACK = {m: Role.READ for m in READS}
FALLBACK_OTHER = Role.ADMIN


def resolve(method: str, path: str) -> tuple[Role, Rule | None]:
    """The role ``method path`` needs and the rule that says so (None: the fallback)."""
    for rule in RULES:
        if rule.matches(method, path):
            return rule.role, rule
    return FALLBACK.get(method, FALLBACK_OTHER), None


def required_role(method: str, path: str) -> Role:
    return resolve(method, path)[0]


def parse_tokens(value: str) -> list[str]:
    """A role's tokens: comma-separated, so a new token can be rolled out before the old one
    is withdrawn."""
    return [t.strip() for t in value.split(",") if t.strip()]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenAuth:
    """Maps a presented bearer token to the highest role it was configured for."""

    def __init__(self, tokens: dict[Role, Iterable[str]]):
        self._tokens = [(role, _digest(t)) for role, ts in tokens.items() for t in ts]
        if not self._tokens:
            raise ValueError("TokenAuth needs at least one token")
        for role, ts in tokens.items():
            for t in ts:
                if len(t) < 16:
                    raise ValueError(f"the {role.name.lower()} token is shorter than 16 chars")

    @classmethod
    def from_config(cls, cfg: Any) -> TokenAuth | None:
        tokens = {
            Role.READ: parse_tokens(cfg.read_token),
            Role.WRITE: parse_tokens(cfg.write_token),
            Role.ADMIN: parse_tokens(cfg.admin_token),
        }
        if not any(tokens.values()):
            return None
        return cls(tokens)

    def role_of(self, token: str) -> Role | None:
        got = _digest(token)
        best: Role | None = None
        for role, want in self._tokens:  # no early exit: the time does not depend on a match
            if hmac.compare_digest(got, want) and (best is None or role > best):
                best = role
        return best


TOKEN_AUTH = web.AppKey("token_auth", TokenAuth)
_REALM = 'Bearer realm="distsync"'


def _unauthorized(message: str, error: str | None) -> web.Response:
    resp = json_error(401, "unauthorized", message)
    resp.headers["WWW-Authenticate"] = _REALM + (f', error="{error}"' if error else "")
    return resp


# True when neither client tokens nor peer authentication are configured (set by install).
AUTH_OFF = web.AppKey("auth_off", bool)


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.app.get(AUTH_OFF):
        return await handler(request)  # nothing to check: every route is open
    need = required_role(request.method, request.path)
    if need == Role.PEER:
        peer_auth = request.app[NODE].peer_auth
        if request.path == STREAM_PATH or peer_auth is None:
            return await handler(request)  # the transport checks the stream itself
        if not await peer_auth.verify_http(request):
            return json_error(403, "forbidden", "peer authentication failed")
        return await handler(request)
    auth = request.app.get(TOKEN_AUTH)
    if auth is None or need == Role.OPEN:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return _unauthorized("this route needs a bearer token (Authorization: Bearer ...)",
                             None)
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("Authorization must be 'Bearer <token>'", "invalid_request")
    have = auth.role_of(token)
    if have is None:
        return _unauthorized("the bearer token is not valid", "invalid_token")
    if have < need:
        resp = json_error(
            403, "forbidden",
            f"{request.method} {request.path} needs the {need.name.lower()} role; "
            f"this token has {have.name.lower()}",
            required_role=need.name.lower(), role=have.name.lower(),
        )
        resp.headers["WWW-Authenticate"] = (
            f'{_REALM}, error="insufficient_scope", scope="{need.name.lower()}"'
        )
        return resp
    return await handler(request)


def install(app: web.Application, cfg: Any) -> None:
    """Turn client auth on for ``app`` if ``cfg`` names any token; say so either way."""
    auth = TokenAuth.from_config(cfg)
    app[AUTH_OFF] = auth is None and app[NODE].peer_auth is None
    if auth is None:
        log.warning(
            "CLIENT AUTHENTICATION IS OFF: no API token configured (DISTSYNC_READ_TOKEN, "
            "DISTSYNC_WRITE_TOKEN, DISTSYNC_ADMIN_TOKEN or their *_FILE forms); anyone who "
            "can reach %s can read and change everything. Use this only for local development.",
            cfg.listen,
        )
        return
    app[TOKEN_AUTH] = auth
    roles = [r for r in ("read", "write", "admin") if getattr(cfg, f"{r}_token")]
    log.info("client authentication on; tokens configured for roles: %s", ", ".join(roles))
