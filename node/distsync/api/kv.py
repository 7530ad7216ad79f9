"""HTTP routes of the key-value register. The pattern for every service: parse and check,
propose through the log (writes) or pass a ReadIndex barrier (reads), map the result."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .appkeys import NODE
from .errors import ApiError
from .forward import leader_only
from .idempotency import propose
from .jsonio import json_response
from .schemas import (
    KEY_RE,
    PREFIX_RE,
    KVDelete,
    KVPut,
    check_key,
    check_value_size,
    parse_body,
)

routes = web.RouteTableDef()
# Any character, newlines too: a key the route cannot match would be a 404 "no route" where
# the answer is 400 invalid_key (check_key says which keys are valid).
KEY_ROUTE = r"/v1/kv/{key:[\s\S]+}"


def _result(res: Any) -> web.Response:
    if isinstance(res, dict) and "error" in res:
        body = {k: v for k, v in res.items() if k != "status"}
        return json_response(body, status=res.get("status", 409))
    return json_response(res)


@routes.put(KEY_ROUTE)
@leader_only
async def put(request: web.Request) -> web.StreamResponse:
    key = check_key(request.match_info["key"])
    body = await parse_body(request, KVPut)
    limit = request.app[NODE].cfg.max_value_bytes
    size = check_value_size(body.value, limit)
    check_value_size(body.expect_value, limit, "expect_value")
    # `sz`: the value's size, for the space quota's weighing (services/kv.py).
    args: dict[str, Any] = {"key": key, "value": body.value, "sz": size}
    if body.expect_revision is not None:
        args["expect_revision"] = body.expect_revision
    if "expect_value" in body.model_fields_set:
        args["has_expect_value"] = True
        args["expect_value"] = body.expect_value
    if body.session is not None:
        # An ephemeral key: deleted when the session ends; 404 session_not_found unless the
        # session is open when the put applies (services/kv.py).
        args["session"] = body.session
    res = await propose(request, "kv", "put", args)
    return _result(res)


@routes.delete(KEY_ROUTE)
@leader_only
async def delete(request: web.Request) -> web.StreamResponse:
    key = check_key(request.match_info["key"])
    body = await parse_body(request, KVDelete, optional=True)
    args: dict[str, Any] = {"key": key}
    if body.expect_revision is not None:
        args["expect_revision"] = body.expect_revision
    res = await propose(request, "kv", "delete", args)
    return _result(res)


async def _read(request: web.Request) -> web.StreamResponse:
    key = check_key(request.match_info["key"])
    node = request.app[NODE]
    if _consistency(request) == "linearizable":
        await node.read_barrier()
    got = node.kv.get(key)
    if got is None:
        raise ApiError(404, "not_found", f"key {key!r} does not exist")
    value, rev = got
    out: dict[str, Any] = {"key": key, "value": value, "revision": rev}
    sid = node.kv.owner_of(key)
    if sid is not None:
        out["session"] = sid  # an ephemeral key: the session it lives and dies with
    return json_response(out)


_read_linearizable = leader_only(_read)


@routes.get(KEY_ROUTE)
async def get(request: web.Request) -> web.StreamResponse:
    """Linearizable by default (ReadIndex on the leader, no log write); with
    `?consistency=stale` any node answers from its own state at once."""
    if _consistency(request) == "stale":
        return await _read(request)
    return await _read_linearizable(request)


async def _list(request: web.Request) -> web.StreamResponse:
    q = request.query
    prefix, after = q.get("prefix", ""), q.get("after", "")
    if not PREFIX_RE.fullmatch(prefix):
        raise ApiError(400, "invalid_query",
                       "prefix is 0-512 characters of A-Z a-z 0-9 . _ - / : @")
    if after and not KEY_RE.fullmatch(after):
        raise ApiError(400, "invalid_query", "after must be a key (the `next` of a page)")
    try:
        limit = int(q.get("limit", "1000"))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise ApiError(400, "invalid_query", "limit must be between 1 and 10000")
    node = request.app[NODE]
    if _consistency(request) == "linearizable":
        await node.read_barrier()
    # No await from here on: the page and its revision are one state of the applied log.
    # The services may be a few entries ahead of `applied_index` (the node applies before
    # its fsync and advances the index after); the kv is as of its last event then, and
    # no entry since changed it (as the watch's current revision, api/watch.py).
    keys, nxt = node.kv.page(prefix, after, limit)
    revision = max(node.applied_index, node.kv.history.last_revision)
    return json_response({"keys": keys, "next": nxt, "revision": revision})


_list_linearizable = leader_only(_list)


@routes.get("/v1/kv")
async def list_keys(request: web.Request) -> web.StreamResponse:
    """Keys under `prefix` with their values, revisions and sessions, in key order, a page
    at a time (`after` the previous page's `next`). Linearizable by default like a GET of a
    key; `?consistency=stale` answers from any node's own state. `revision`: the applied
    index the page was read at (watch from revision + 1 to follow it)."""
    if _consistency(request) == "stale":
        return await _list(request)
    return await _list_linearizable(request)


def _consistency(request: web.Request) -> str:
    c = request.query.get("consistency", "linearizable")
    if c not in ("linearizable", "stale"):
        raise ApiError(400, "invalid_query", "consistency must be 'linearizable' or 'stale'")
    return c
