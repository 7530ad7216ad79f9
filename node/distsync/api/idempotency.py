"""Request ids, Stripe-style: scoped to the caller, bound to the request (README "Request ids").

A mutating request may carry `Request-Id`. The id that goes into the log is the caller's
*scope* joined to it, so two callers that pick the same id never meet:

* the scope is the digest of the bearer token the request carries (when there is one), and
  the `Client-Id` header (when there is one): `<token digest>/<Client-Id>`. With client auth
  off and no `Client-Id`, every caller shares the anonymous scope, and the fingerprint below
  is what keeps a colliding id from returning someone else's answer.
* the peer address is deliberately not part of it: a retry that reaches another node through
  another load balancer or NAT port must still find its first result.

With the id goes a fingerprint of the request as the client sent it: method, path, query and
the body as canonical JSON (keys sorted, no spaces). The state machine (services/registry.py)
remembers both; the same id with another fingerprint is refused with 422
`request_id_mismatch`, nothing applied. A follower forwards `Request-Id`, `Client-Id` and
`Authorization` unchanged, so the leader computes the same scope and fingerprint.

A request without `Request-Id` gets one made here (`auto-<uuid>-<n>`: a random id per
process and a counter, unique without a uuid4 per request), so that a node that loses
leadership mid-request can forward it without risk of applying it twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from typing import Any

import orjson
from aiohttp import web

from .appkeys import NODE
from .errors import ApiError

CLIENT_ID_HEADER = "Client-Id"
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=\-]{1,128}$")
_SEP = "\x1f"  # in neither a scope nor an id (ids are printable, Client-Id has no controls)
_ANON = "-"
ANON_SCOPE = f"{_ANON}/{_ANON}"  # no bearer token, no Client-Id
_AUTO_PREFIX = f"auto-{uuid.uuid4().hex[:16]}-"  # 64 random bits per process
_auto_seq = itertools.count(1)


def raw_request_id(request: web.Request) -> str:
    """The id as the client sent it (checked), or one made for this request."""
    if "rid" not in request:
        rid = request.headers.get("Request-Id") or request.headers.get("X-Request-Id")
        if rid is not None and not (0 < len(rid) <= 128 and rid.isprintable()):
            raise ApiError(400, "invalid_request_id", "Request-Id must be 1-128 printable chars")
        request["rid"] = rid or f"{_AUTO_PREFIX}{next(_auto_seq)}"
    return request["rid"]


def client_supplied(request: web.Request) -> bool:
    return bool(request.headers.get("Request-Id") or request.headers.get("X-Request-Id"))


def scope_of(request: web.Request) -> str:
    """`<token digest or ->/<Client-Id or ->`: whose namespace the request's id lives in."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    tok = _ANON
    if scheme.lower() == "bearer" and token:
        tok = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    cid = request.headers.get(CLIENT_ID_HEADER)
    if cid is None:
        cid = _ANON
    elif not CLIENT_ID_RE.fullmatch(cid):
        raise ApiError(400, "invalid_client_id",
                       "Client-Id must be 1-128 characters of A-Z a-z 0-9 . _ : @ / + = -")
    return f"{tok}/{cid}"


def request_id(request: web.Request) -> str:
    """The scoped id that goes into the log."""
    if "scoped_rid" not in request:
        request["scoped_rid"] = f"{scope_of(request)}{_SEP}{raw_request_id(request)}"
    return request["scoped_rid"]


def canonical_body(raw: bytes) -> bytes:
    """The body as canonical JSON, so that a retry that re-serialises the same object (other
    key order, other spacing) is the same request; bytes that are not JSON as they are."""
    if not raw.strip():
        return b""
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, TypeError):
        pass
    try:
        obj = json.loads(raw)
        return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return raw


async def fingerprint(request: web.Request) -> bytes:
    """16 bytes of SHA-256 over method, path, sorted query and canonical body."""
    if "fingerprint" not in request:
        h = hashlib.sha256()
        query = sorted(request.query.items()) if request.query_string else []
        h.update(f"{request.method}\0{request.path}\0{query!r}\0".encode(
            "utf-8", "surrogateescape"))
        h.update(canonical_body(await request.read()))
        request["fingerprint"] = h.digest()[:16]
    return request["fingerprint"]


async def propose(request: web.Request, service: str, op: str, args: dict[str, Any]) -> Any:
    """Propose one command under the request's scoped id and fingerprint."""
    node = request.app[NODE]
    return await node.propose(service, op, args, request_id(request),
                              fingerprint=await fingerprint(request))


def known(request: web.Request) -> bool:
    """Whether this node has applied a command under the request's id: a retry, whose first
    result (or 422 mismatch) the log will answer, so no precondition check may refuse it."""
    if not client_supplied(request):
        return False
    return request_id(request) in request.app[NODE].registry.dedupe
