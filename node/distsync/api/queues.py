"""HTTP routes of the distributed queue (see README "Queue"). Writes go through the log on the
leader (followers forward); reads pass a ReadIndex barrier unless `?consistency=stale`.

The handler stamps each command with the leader's clock (`now`, ms), so the state machine
stays a pure function of the log. A dequeue long-polls here on the leader: it proposes, and if
nothing was there it waits (Node.wait_until) until the consumer's partitions have a message,
then proposes again, until `wait_ms` runs out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from ..raft.core import NotLeader
from ..services.queue_model import (
    BOOL_OPTIONS,
    INFLIGHT,
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    MAX_WAIT_MS,
    OPTION_LIMITS,
)
from . import idempotency
from .appkeys import NODE
from .errors import ApiError
from .forward import forward, leader_only
from .idempotency import fingerprint, raw_request_id, request_id
from .jsonio import json_response, json_size
from .schemas import _Strict, parse_body

routes = web.RouteTableDef()

QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,123}$")
CONSUMER_RE = r"^[A-Za-z0-9_.:@\-]{1,128}$"
MESSAGE_ID_RE = r"^[A-Za-z0-9._\-/:@]{1,128}$"  # no "~": generated ids start with it
RECEIPT_RE = r"^[0-9]{1,20}:[A-Za-z0-9._\-/:@~]{1,200}$"

HeaderKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
HeaderValue = Annotated[str, StringConstraints(max_length=4096)]
Receipt = Annotated[str, StringConstraints(pattern=RECEIPT_RE)]


def _opt(name: str) -> Any:
    _, lo, hi = OPTION_LIMITS[name]
    return Field(default=None, ge=lo, le=hi)


class QueueOptions(_Strict):
    partitions: int | None = _opt("partitions")
    visibility_ms: int | None = _opt("visibility_ms")
    max_deliveries: int | None = _opt("max_deliveries")
    max_length: int | None = _opt("max_length")
    max_bytes: int | None = _opt("max_bytes")
    retention_ms: int | None = _opt("retention_ms")
    dedupe_window_ms: int | None = _opt("dedupe_window_ms")
    consumer_ttl_ms: int | None = _opt("consumer_ttl_ms")
    dead_letter: bool | None = None


assert set(QueueOptions.model_fields) == set(OPTION_LIMITS) | set(BOOL_OPTIONS)


class QueueMessage(_Strict):
    body: Any
    key: str | None = Field(default=None, min_length=1, max_length=512)
    id: str | None = Field(default=None, pattern=MESSAGE_ID_RE)
    headers: dict[HeaderKey, HeaderValue] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _body_not_null(self) -> QueueMessage:
        if self.body is None:
            raise ValueError("body must not be null")
        return self


class EnqueueBody(_Strict):
    """Either `{"messages": [...]}` (a batch) or one message's fields at the top level."""

    messages: list[QueueMessage] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)
    body: Any = None
    key: str | None = Field(default=None, min_length=1, max_length=512)
    id: str | None = Field(default=None, pattern=MESSAGE_ID_RE)
    headers: dict[HeaderKey, HeaderValue] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _one_shape(self) -> EnqueueBody:
        single = self.model_fields_set - {"messages"}
        if self.messages is not None and single:
            raise ValueError("give either `messages` or one message's fields, not both")
        if self.messages is None and self.body is None:
            raise ValueError("`body` (one message, not null) or `messages` (a batch) is "
                             "required")
        return self

    def batch(self) -> list[QueueMessage]:
        if self.messages is not None:
            return self.messages
        return [QueueMessage.model_construct(
            body=self.body, key=self.key, id=self.id, headers=self.headers)]


class DequeueBody(_Strict):
    consumer: str = Field(pattern=CONSUMER_RE)
    max: int = Field(default=1, ge=1, le=MAX_BATCH)
    visibility_ms: int | None = _opt("visibility_ms")
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS)
    # Receipts to ack first, in the same command (JetStream's AckNext): a consumer loop of
    # "ack the last batch, fetch the next" costs one request and one log entry.
    ack: list[Receipt] | None = Field(default=None, max_length=MAX_BATCH)


class _Receipts(_Strict):
    receipt: Receipt | None = None
    receipts: list[Receipt] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _exactly_one(self) -> _Receipts:
        if (self.receipt is None) == (self.receipts is None):
            raise ValueError("give exactly one of `receipt` or `receipts`")
        return self

    def all(self) -> list[str]:
        return [self.receipt] if self.receipt is not None else list(self.receipts or [])


class AckBody(_Receipts):
    pass


class NackBody(_Receipts):
    delay_ms: int = Field(default=0, ge=0, le=OPTION_LIMITS["visibility_ms"][2])
    error: str | None = Field(default=None, max_length=1024)


def now_ms(request: web.Request) -> int:
    """The leader's wall clock, read through the node's Clock (seams.py) like every other
    time the node proposes, so that a simulated node's commands carry its simulated time."""
    return request.app[NODE].clock.wall_ms()


def check_queue(name: str) -> str:
    if not QUEUE_RE.fullmatch(name):
        raise ApiError(
            400, "invalid_queue_name",
            "queue names are 1-124 characters of A-Z a-z 0-9 _ . - (not starting with . or -)",
        )
    return name


def check_consumer(cid: str) -> str:
    if not re.fullmatch(CONSUMER_RE, cid):
        raise ApiError(400, "invalid_consumer", "consumer ids are 1-128 of A-Z a-z 0-9 _ . : @ -")
    return cid


def _result(res: Any) -> web.Response:
    if isinstance(res, dict) and "error" in res:
        body = {k: v for k, v in res.items() if k != "status"}
        return json_response(body, status=res.get("status", 409))
    return json_response(res)


def _svc(request: web.Request) -> Any:
    return request.app[NODE].service("queues")


async def _propose(request: web.Request, op: str, args: dict[str, Any]) -> Any:
    return await idempotency.propose(request, "queues", op, args)


async def _refuse(request: web.Request, check: Callable[[], ApiError | None]) -> None:
    """Refuse, without a log entry, a request the state machine would refuse anyway: if
    `check` finds a reason against this node's state, confirm it after a ReadIndex barrier
    (so no write committed before this request is missing here), then raise it. The state
    machine still has the last word on what passes.

    A retry is never refused here: when the request's id is already in the id table, the
    proposal goes to the log, which answers with the first result (an ack retried after it
    took effect gets that ack's answer, not 404 `unknown_receipt`) or with 422 mismatch."""
    if check() is None:
        return
    node = request.app[NODE]
    await node.read_barrier()
    if idempotency.known(request):
        return
    err = check()
    if err is not None:
        raise err


def _no_queue(svc: Any, name: str) -> Callable[[], ApiError | None]:
    return lambda: None if svc.get(name) is not None else ApiError(
        404, "not_found", f"queue {name!r} does not exist")


def _no_receipt(svc: Any, name: str, receipts: list[str], in_flight: bool) -> Callable[
        [], ApiError | None]:
    def check() -> ApiError | None:
        q = svc.get(name)
        if q is None:
            return ApiError(404, "not_found", f"queue {name!r} does not exist")
        for r in receipts:
            m = svc.by_receipt(q, r)
            if m is not None and (m.state == INFLIGHT or not in_flight):
                return None
        return ApiError(404, "unknown_receipt", "no receipt matched a current delivery "
                        "(acked already, redelivered since, or never issued); nothing changed",
                        unknown=receipts)
    return check


# -- queues -------------------------------------------------------------------------------


@routes.put("/v1/queues/{q}")
@leader_only
async def create(request: web.Request) -> web.StreamResponse:
    """Create a queue with options, or change the options of an existing one (partitions
    cannot change). Idempotent."""
    name = check_queue(request.match_info["q"])
    body = await parse_body(request, QueueOptions, optional=True)
    opts = body.model_dump(exclude_none=True)
    svc = _svc(request)

    def immutable() -> ApiError | None:
        q = svc.get(name)
        if q is not None and opts.get("partitions", q.opts["partitions"]) != q.opts["partitions"]:
            return ApiError(409, "immutable_option", "partitions cannot change after creation "
                            f"(is {q.opts['partitions']})", option="partitions",
                            current=q.opts["partitions"])
        return None

    await _refuse(request, immutable)
    return _result(await _propose(request, "create", {"q": name, "opts": opts}))


@routes.delete("/v1/queues/{q}")
@leader_only
async def delete(request: web.Request) -> web.StreamResponse:
    name = check_queue(request.match_info["q"])
    await _refuse(request, _no_queue(_svc(request), name))
    return _result(await _propose(request, "delete", {"q": name}))


async def _list(request: web.Request) -> web.StreamResponse:
    svc = _svc(request)
    return json_response({"queues": [svc.summary(svc.get(n)) for n in svc.names()]})


async def _describe(request: web.Request) -> web.StreamResponse:
    name = check_queue(request.match_info["q"])
    svc = _svc(request)
    q = svc.get(name)
    if q is None:
        raise ApiError(404, "not_found", f"queue {name!r} does not exist")
    return json_response(svc.describe(q))


def _reader(handler: Any) -> Any:
    """Linearizable by default (ReadIndex on the leader); `?consistency=stale` answers from
    this node's state at once."""
    async def linearizable(request: web.Request) -> web.StreamResponse:
        await request.app[NODE].read_barrier()
        return await handler(request)

    on_leader = leader_only(linearizable)

    async def read(request: web.Request) -> web.StreamResponse:
        c = request.query.get("consistency", "linearizable")
        if c not in ("linearizable", "stale"):
            raise ApiError(400, "invalid_query", "consistency must be 'linearizable' or 'stale'")
        return await (handler(request) if c == "stale" else on_leader(request))

    return read


async def _peek(request: web.Request) -> web.StreamResponse:
    name = check_queue(request.match_info["q"])
    try:
        limit = int(request.query.get("limit", "10"))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit must be an integer") from None
    if not 1 <= limit <= PEEK_MAX:
        raise ApiError(400, "invalid_query", f"limit must be between 1 and {PEEK_MAX}")
    svc = _svc(request)
    q = svc.get(name)
    if q is None:
        raise ApiError(404, "not_found", f"queue {name!r} does not exist")
    return json_response({"queue": name, "messages": svc.peek(q, limit),
                          "total": len(q.messages)})


PEEK_MAX = 100  # messages of up to 256 KiB each: a peek stays a few MiB at most
routes.get("/v1/queues")(_reader(_list))
routes.get("/v1/queues/{q}")(_reader(_describe))
routes.get("/v1/queues/{q}/messages")(_reader(_peek))


# -- messages -----------------------------------------------------------------------------


@routes.post("/v1/queues/{q}/messages")
@leader_only
async def enqueue(request: web.Request) -> web.StreamResponse:
    """One message or a batch; all or nothing. A client `id` makes it idempotent within the
    queue's dedupe window."""
    name = check_queue(request.match_info["q"])
    body = await parse_body(request, EnqueueBody)
    msgs = body.batch()
    packed = []
    for i, m in enumerate(msgs):
        size = json_size(m.body)
        size += len(m.key.encode()) if m.key else 0
        if m.headers:
            size += sum(len(k.encode()) + len(v.encode()) for k, v in m.headers.items())
        if size > MAX_MESSAGE_BYTES:
            raise ApiError(
                413, "message_too_large",
                f"message {i} is {size} bytes; the limit is {MAX_MESSAGE_BYTES} "
                "(body as JSON + key + headers)", index=i, limit=MAX_MESSAGE_BYTES,
            )
        packed.append([m.body, m.key, m.id, m.headers, size])
    svc = _svc(request)

    def full() -> ApiError | None:
        q = svc.get(name)
        if q is None:
            return None
        fresh = [p for p in packed if p[2] is None or (p[2] not in q.messages
                                                      and p[2] not in q.dedupe)]
        n, nbytes = len(fresh), sum(p[4] for p in fresh)
        for limit, have, add in (("max_length", len(q.messages), n),
                                 ("max_bytes", q.bytes, nbytes)):
            if have + add > q.opts[limit]:
                return ApiError(429, "queue_full", f"queue {name} would exceed {limit} "
                                f"({q.opts[limit]}); nothing was enqueued", limit=limit,
                                current=have, adding=add)
        return None

    try:
        await _refuse(request, full)
    except ApiError as e:
        svc.obs.count(name, "rejected", len(packed))
        raise e from None
    res = await _propose(request, "enqueue", {"q": name, "m": packed, "now": now_ms(request)})
    if isinstance(res, dict) and "error" in res:
        return _result(res)
    ids = [m.id if m.id is not None else f"~{res['index']}.{i}" for i, m in enumerate(msgs)]
    dup = set(res["dup"])
    if body.messages is None:
        return json_response({"id": ids[0], "duplicate": 0 in dup})
    return json_response({"ids": ids, "duplicates": [ids[i] for i in sorted(dup)]})


@routes.post("/v1/queues/{q}/dequeue")
async def dequeue(request: web.Request) -> web.StreamResponse:
    """Lease up to `max` messages to `consumer` for `visibility_ms`, waiting up to `wait_ms`
    for one to arrive. A retry with the same Request-Id returns the same messages."""
    name = check_queue(request.match_info["q"])
    body = await parse_body(request, DequeueBody)
    node = request.app[NODE]
    if not node.is_leader():
        return await _forward(request, body.wait_ms)
    try:
        return await _dequeue_here(request, name, body)
    except NotLeader:
        return await _forward(request, body.wait_ms)


async def _dequeue_here(request: web.Request, name: str, body: DequeueBody) -> web.Response:
    node = request.app[NODE]
    svc = _svc(request)
    cid, rid, fp = body.consumer, request_id(request), await fingerprint(request)
    deadline = node.clock.monotonic() + body.wait_ms / 1000
    acks, acked = body.ack or None, None
    while True:
        # Skip the log when it cannot help: a registered, recently seen consumer whose
        # partitions have nothing for it now (and no acks to apply).
        if acks or not svc.consumer_fresh(name, cid, now_ms(request)) or svc.available(name, cid):
            args = {"q": name, "c": cid, "max": body.max, "vis": body.visibility_ms,
                    "now": now_ms(request), "rid": rid, "fp": fp}
            if acks:
                args["ack"] = acks
            # The queue answers a retried dequeue itself (the consumer's last lease); the id
            # table only binds the id to this request (422 for another one under it).
            res = await node.propose("queues", "dequeue", args, None, fingerprint=fp, bind=rid)
            if isinstance(res, dict) and "error" in res:
                return _result(res)
            if acks:  # applied once; later polls of this request only fetch
                acked = {"acked": res.get("acked", 0), "ack_unknown": res.get("ack_unknown", [])}
                acks = None
            if res["messages"]:
                return json_response({**res, **(acked or {})})
        left = deadline - node.clock.monotonic()
        if left <= 0:
            q = svc.get(name)
            parts = q.consumers[cid].partitions if q and cid in q.consumers else []
            return json_response({"messages": [], "partitions": parts, **(acked or {})})
        q = svc.get(name)
        ttl_s = (q.opts["consumer_ttl_ms"] if q else OPTION_LIMITS["consumer_ttl_ms"][0]) / 1000
        # Wake when a message is there for us, or when we must show we are alive.
        await node.wait_until(
            lambda: svc.available(name, cid) or not svc.consumer_fresh(name, cid, now_ms(request)),
            min(left, ttl_s / 4),
        )
        if not node.is_leader():
            raise NotLeader(node.leader_id)


@routes.post("/v1/queues/{q}/ack")
@leader_only
async def ack(request: web.Request) -> web.StreamResponse:
    name = check_queue(request.match_info["q"])
    body = await parse_body(request, AckBody)
    await _refuse(request, _no_receipt(_svc(request), name, body.all(), in_flight=False))
    return _result(await _propose(request, "ack", {"q": name, "r": body.all(), "now": now_ms(request)}))


@routes.post("/v1/queues/{q}/nack")
@leader_only
async def nack(request: web.Request) -> web.StreamResponse:
    name = check_queue(request.match_info["q"])
    body = await parse_body(request, NackBody)
    await _refuse(request, _no_receipt(_svc(request), name, body.all(), in_flight=True))
    args = {"q": name, "r": body.all(), "delay": body.delay_ms, "error": body.error,
            "now": now_ms(request)}
    return _result(await _propose(request, "nack", args))


# -- consumers ----------------------------------------------------------------------------


@routes.post("/v1/queues/{q}/consumers/{c}/heartbeat")
@leader_only
async def heartbeat(request: web.Request) -> web.StreamResponse:
    """Register or keep alive a consumer without dequeuing (e.g. during long processing)."""
    name = check_queue(request.match_info["q"])
    cid = check_consumer(request.match_info["c"])
    return _result(await _propose(request, "heartbeat", {"q": name, "c": cid, "now": now_ms(request)}))


@routes.delete("/v1/queues/{q}/consumers/{c}")
@leader_only
async def leave(request: web.Request) -> web.StreamResponse:
    """Unregister a consumer: its messages in flight go back at once, and its partitions go
    to the others."""
    name = check_queue(request.match_info["q"])
    cid = check_consumer(request.match_info["c"])
    svc = _svc(request)

    def unknown() -> ApiError | None:
        q = svc.get(name)
        if q is None or cid not in q.consumers:
            return ApiError(404, "not_found", f"consumer {cid!r} is not registered")
        return None

    await _refuse(request, unknown)
    return _result(await _propose(request, "leave", {"q": name, "c": cid, "now": now_ms(request)}))


# -- plumbing -----------------------------------------------------------------------------


async def _forward(request: web.Request, wait_ms: int) -> web.StreamResponse:
    """forward.forward with a timeout that covers the long poll."""
    raw_request_id(request)  # the retry on the leader must carry the same id
    node = request.app[NODE]
    return await forward(request, timeout=wait_ms / 1000 + node.cfg.request_timeout + 1)
