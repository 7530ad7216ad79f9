"""GET /v1/watch: a stream of a key's or a prefix's changes as newline-delimited JSON (README
"Watches"). Any node serves it from its own applied state; the watch hub (watch.py) decides
what each line is, this module parses the query, writes the lines and maps the refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from ..services.kv_history import Compacted
from ..watch import Watcher, WatchLimit
from .appkeys import FORWARD_SESSION, NODE, WATCH
from .errors import ApiError
from .idempotency import ANON_SCOPE, scope_of
from .jsonio import dumps, json_response
from .peer_trust import client_addr
from .schemas import PREFIX_RE, check_key

routes = web.RouteTableDef()

NDJSON = "application/x-ndjson"
READ_INDEX_PATH = "/v1/internal/watch/read-index"  # node to node (peer-authenticated)
# How long a cancelled stream may take to hand its last line to a consumer that stopped
# reading before the connection is left to close.
CANCEL_GRACE_S = 10.0
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def _int(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be an integer") from None
    if not lo <= n <= hi:
        raise ApiError(400, "invalid_query", f"{name} must be between {lo} and {hi}")
    return n


def _params(request: web.Request) -> dict[str, Any]:
    q = request.query
    key, prefix = q.get("key"), q.get("prefix")
    if (key is None) == (prefix is None):
        raise ApiError(400, "invalid_query", "give exactly one of key or prefix")
    if key is not None:
        check_key(key)
    elif not PREFIX_RE.fullmatch(prefix or ""):
        raise ApiError(400, "invalid_query",
                       "prefix is 0-512 characters of A-Z a-z 0-9 . _ - / : @")
    linear = q.get("linearizable", "false").lower()
    if linear not in _BOOL:
        raise ApiError(400, "invalid_query", "linearizable must be true or false")
    return {
        "key": key, "prefix": prefix, "linearizable": _BOOL[linear],
        "start": _int(request, "start_revision", 1, (1 << 63) - 1),
        "progress_ms": _int(request, "progress_ms", 10, 3_600_000) or 5000,
        "timeout_ms": _int(request, "timeout_ms", 1, 86_400_000),
    }


async def _read_barrier(request: web.Request) -> None:
    """A ReadIndex: on the leader itself; on a follower, asked of the leader (it confirms its
    leadership with a quorum and answers its applied index), then applied here (etcd's
    follower ReadIndex)."""
    node = request.app[NODE]
    if node.is_leader():
        await node.read_barrier()
        return
    leader = node.leader_id
    addr = node.addr_of(leader) if leader and leader != node.id else None
    if addr is None:
        raise ApiError(503, "no_leader", "no leader is known right now; retry shortly")
    headers = node.peer_auth.request_headers(leader) if node.peer_auth is not None else {}
    session = request.app[FORWARD_SESSION]
    url = f"{'https' if node.ssl_client else 'http'}://{addr}{READ_INDEX_PATH}"
    try:
        async with session.get(url, headers=headers) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise ApiError(503, "unavailable",
                               f"leader {leader} gave no read index: {body.get('error')}")
            index = int(body["index"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as e:
        raise ApiError(503, "leader_unreachable",
                       f"could not reach leader {leader} at {addr}: {e!r}") from None
    if not await node.wait_until(lambda: node.applied_index >= index,
                                 node.cfg.request_timeout):
        raise ApiError(503, "unavailable", f"this node has not applied up to {index} yet")


@routes.get(READ_INDEX_PATH)
async def read_index(request: web.Request) -> web.StreamResponse:
    """A follower's linearizable watch start: the leader's applied index after a ReadIndex."""
    node = request.app[NODE]
    if not node.is_leader():
        raise ApiError(503, "not_leader", "this node is not the leader")
    await node.read_barrier()
    return json_response({"index": node.applied_index})


def watch_client(request: web.Request) -> str:
    """Whose watcher this is, for `max_watchers_per_client`: the caller's scope as request ids
    have it (api/idempotency.py: the bearer token's digest and the `Client-Id` header), or,
    for a caller with neither (client auth off, no `Client-Id`), its address, as the session
    quota counts a client (so anonymous callers on other hosts do not share one budget)."""
    scope = scope_of(request)
    return f"addr:{client_addr(request)}" if scope == ANON_SCOPE else scope


def _line(obj: Any) -> bytes:
    return dumps(obj) + b"\n"


@routes.get("/v1/watch")
async def watch(request: web.Request) -> web.StreamResponse:
    """Events in revision order from `start_revision` (default: the next change), then live;
    progress lines while nothing matches; 410 `compacted` before any stream starts."""
    p = _params(request)
    client = watch_client(request)  # (a malformed Client-Id is a 400 before anything)
    hub = request.app[WATCH]
    if hub is None:
        raise ApiError(503, "watch_unavailable", "this node serves no watches")
    if hub.closing:
        raise ApiError(503, "unavailable", "this node is stopping; watch through another node")
    node = request.app[NODE]
    if p["linearizable"]:
        await _read_barrier(request)  # everything committed before now is applied here

    def now_revision() -> int:
        return max(node.applied_index, hub.history.last_revision)

    start = p["start"] or now_revision() + 1
    try:
        w = hub.open(start, key=p["key"], prefix=p["prefix"], client=client)
    except Compacted as e:
        raise ApiError(
            410, "compacted",
            f"revisions up to {e.compact_revision} are compacted on this node; start at "
            f"{e.oldest_revision} or later (re-read the state, then watch from its revision)",
            compact_revision=e.compact_revision, oldest_revision=e.oldest_revision,
            revision=now_revision(),
        ) from None
    except WatchLimit as e:
        raise ApiError(429, "too_many_watchers", str(e), limit=e.limit,
                       **{e.limit: e.value}) from None
    try:
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        resp.content_type = NDJSON
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        # First line: everything before `start` is settled (a resuming client knows where
        # it stands even if nothing else comes).
        await resp.write(_line({"type": "progress", "revision": start - 1}))
        await _stream(resp, hub, w, p, now_revision)
    except ConnectionError:
        pass  # the consumer went away
    finally:
        hub.close(w)
    return resp


async def _stream(resp: web.StreamResponse, hub: Any, w: Watcher, p: dict[str, Any],
                  now_revision: Any) -> None:
    loop = asyncio.get_running_loop()
    progress_s = p["progress_ms"] / 1000
    end = None if p["timeout_ms"] is None else loop.time() + p["timeout_ms"] / 1000
    last_write = loop.time()
    while True:
        events = hub.take(w)
        if w.canceled is not None:
            break
        if events:
            chunk = b"".join(_line(ev.to_json()) for ev in events)
            if not await _write_unless_canceled(resp, chunk, w):
                break
            hub.sent(len(events))
            last_write = loop.time()
            continue
        now = loop.time()
        if end is not None and now >= end:
            return
        wait = last_write + progress_s - now
        if end is not None:
            wait = min(wait, end - now)
        if wait <= 0:
            # Never below what this stream already settled (a node behind the start).
            rev = max(now_revision(), w.next_revision - 1)
            await resp.write(_line({"type": "progress", "revision": rev}))
            last_write = loop.time()
            continue
        w.wake.clear()
        try:
            await asyncio.wait_for(w.wake.wait(), wait)
        except TimeoutError:
            pass
    await _cancel(resp, w)


async def _write_unless_canceled(resp: web.StreamResponse, chunk: bytes, w: Watcher) -> bool:
    """Write `chunk`; while the consumer is not taking it, new events queue in the hub, and a
    full queue cancels the watcher: then stop waiting (False)."""
    write = asyncio.ensure_future(resp.write(chunk))
    while not write.done():
        w.wake.clear()
        woken = asyncio.ensure_future(w.wake.wait())
        await asyncio.wait({write, woken}, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        if w.canceled is not None and not write.done():
            write.add_done_callback(_ignore)
            return False
    write.result()
    return True


async def _cancel(resp: web.StreamResponse, w: Watcher) -> None:
    """The last line, queued behind whatever the consumer has not read."""
    line = _line({"type": "canceled", "reason": w.canceled,
                  "revision": w.next_revision - 1})
    try:
        await asyncio.wait_for(resp.write(line), CANCEL_GRACE_S)
    except TimeoutError:
        pass


def _ignore(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
