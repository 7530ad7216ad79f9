"""The HTTP listener's own limits and refusals: what happens before a request reaches a route.

aiohttp refuses some requests itself, in its protocol handler, before any middleware runs: a
request line over `max_line_size` (8190 bytes), a header over `max_field_size`, more than
`max_headers` headers, a malformed method or header (a control character), a broken body
framing. By default it answers those in plain text and logs an ERROR with a traceback, so
any client could fill the logs. `JsonRequestHandler` answers them in the API's error shape,
`{"error": code, "message": text}`, and logs them at INFO, at most `LOG_BURST` lines per
`LOG_WINDOW_S` (then one line saying how many were left out).

Connections (README "Connection limits"):

* **Header timeout**: once the first byte of a request has arrived, its whole header block
  must arrive within `header_timeout_s`, or the connection is closed (a slow-header client
  cannot hold a slot).
* **Idle timeout**: a connection with no request in progress is closed after
  `idle_timeout_s` (aiohttp's keep-alive timeout; also from the moment it is opened).
* **Body timeout** (api/body.py): a request body must arrive within `body_timeout_s`.
* **Connection caps**: at most `max_connections` open connections per node and
  `max_connections_per_client` per client address. A connection past a cap is answered at
  once with 503 `too_many_connections` (JSON, `Connection: close`) and closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from .jsonio import dumps, json_response

log = logging.getLogger("distsync.api.http")

LOG_BURST, LOG_WINDOW_S = 10, 60.0
# aiohttp's parser limits (its defaults, stated here so that the answers can name them).
MAX_LINE, MAX_FIELD, MAX_HEADERS = 8190, 8190, 128
# After refusing a request whose body was not read (413 from Content-Length), read and drop
# what the client still sends for this long, so that it sees the answer rather than a reset,
# then close (aiohttp's default is 10 s).
LINGER_S = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    max_connections: int = 4096
    max_connections_per_client: int = 512


class RateLimitedLog:
    """At most `burst` lines per `window` seconds; the first line after a quiet spell says how
    many were dropped. Refusals are the client's doing, so they must not flood the log."""

    def __init__(self, logger: logging.Logger, burst: int = LOG_BURST,
                 window: float = LOG_WINDOW_S):
        self.logger, self.burst, self.window = logger, burst, window
        self.start, self.count, self.dropped = 0.0, 0, 0

    def log(self, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.start >= self.window:
            if self.dropped:
                self.logger.log(level, "(%d similar lines left out in the last %.0f s)",
                                self.dropped, self.window)
            self.start, self.count, self.dropped = now, 0, 0
        if self.count >= self.burst:
            self.dropped += 1
            return
        self.count += 1
        self.logger.log(level, msg, *args)


REFUSALS = RateLimitedLog(log)


def classify(exc: BaseException | None, status: int, limits: ConnectionLimits | None = None,
             ) -> tuple[int, str, str]:
    """(status, error code, message) for a refusal by aiohttp's parser. The messages do not
    echo the client's bytes back."""
    text = getattr(exc, "message", None) or str(exc or "")
    text = text if isinstance(text, str) else repr(text)
    if isinstance(exc, LineTooLong):
        # The C parser gathers the URL in a bytearray and reports it so; the Python parser
        # says "Status line is too long".
        if "bytearray(" in text or "status line" in text.lower():
            return 414, "uri_too_long", f"the request line is longer than {MAX_LINE} bytes"
        return 431, "header_too_large", f"a header line is longer than {MAX_FIELD} bytes"
    if isinstance(exc, BadHttpMethod):
        return 400, "invalid_method", "the request method is not a valid HTTP token"
    if isinstance(exc, InvalidHeader):
        return 400, "invalid_header", ("a header name or value is not valid (control "
                                       "characters are not allowed)")
    if isinstance(exc, InvalidURLError):
        return 400, "invalid_url", "the request target is not a valid URL"
    if isinstance(exc, BadHttpMessage):
        if "header" in text.lower() and "char" in text.lower():
            return 400, "invalid_header", ("a header name or value is not valid (control "
                                           "characters are not allowed)")
        if "too many headers" in text.lower():
            return 431, "header_too_large", f"more than {MAX_HEADERS} headers"
        first = text.strip().splitlines()[0] if text.strip() else "malformed"
        return 400, "bad_request", f"malformed HTTP request: {first[:120]}"
    if status == 504:
        return 504, "timeout", "the request timed out"
    if status >= 500:
        return status, "internal", "internal error; see the node's log"
    return status, "bad_request", "malformed HTTP request"


def raw_json_response(status: int, reason: str, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response, for refusals made before aiohttp has a request."""
    data = dumps(body)
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data


class JsonRequestHandler(RequestHandler):
    """aiohttp's connection handler, with JSON refusals, a header timeout and the caps."""

    def __init__(self, manager: JsonServer, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._hdr_handle: asyncio.TimerHandle | None = None
        self._client_addr: str | None = None

    # -- refusals -------------------------------------------------------------------------

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) or status < 500:
            REFUSALS.log(logging.INFO, "refused a malformed request from %s: %s",
                         request.remote, exc or message)
        else:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; cannot send an error instead")
        code_status, code, text = classify(exc, status)
        resp = json_response({"error": code, "message": text}, status=code_status)
        resp.force_close()
        return resp

    # -- connection caps ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) else str(peer)
        manager: JsonServer = self._manager  # type: ignore[assignment]
        refusal = manager.admit(addr)
        if refusal is not None:
            REFUSALS.log(logging.INFO, "refused a connection from %s: %s", addr, refusal)
            body = {"error": "too_many_connections", "message": refusal}
            try:
                transport.write(raw_json_response(503, "Service Unavailable", body))  # type: ignore[attr-defined]
            finally:
                transport.close()
            self._manager = None  # connection_lost then does nothing
            return
        self._client_addr = addr
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._hdr_handle is not None:
            self._hdr_handle.cancel()
            self._hdr_handle = None
        if self._client_addr is not None:
            manager = self._manager
            if isinstance(manager, JsonServer):
                manager.release(self._client_addr)
            self._client_addr = None
        super().connection_lost(exc)

    # -- header timeout -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a whole header block arrived
            if self._hdr_handle is not None:
                self._hdr_handle.cancel()
                self._hdr_handle = None
        elif data and self._hdr_handle is None and self._awaiting_request():
            self._hdr_handle = self._loop.call_later(
                self._limits.header_timeout_s, self._header_timeout)

    def _awaiting_request(self) -> bool:
        """Whether bytes arriving now start a request's header block: no request yet on
        this connection, or the handler loop waits for the next one (rather than bytes of a
        body whose headers were parsed, or of an upgraded stream)."""
        if self._upgraded or self._payload_parser is not None or self._request_in_progress:
            return False
        waiter = self._waiter
        return self._request_count == 0 or (waiter is not None and not waiter.done())

    def _header_timeout(self) -> None:
        self._hdr_handle = None
        if not self._awaiting_request() or self.transport is None:
            return
        REFUSALS.log(logging.INFO, "closed a connection from %s: headers took over %.0f s",
                     self._client_addr, self._limits.header_timeout_s)
        self.force_close()


class JsonServer(Server):
    """aiohttp's Server that makes `JsonRequestHandler`s and counts connections."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.open_total = 0
        self.open_by_addr: dict[str, int] = {}

    def admit(self, addr: str) -> str | None:
        if self.open_total >= self.limits.max_connections:
            return (f"this node has {self.open_total} open connections, its limit; retry "
                    "later or through another node")
        have = self.open_by_addr.get(addr, 0)
        if have >= self.limits.max_connections_per_client:
            return (f"client {addr} has {have} open connections, the per-client limit; "
                    "reuse connections (keep-alive) or close idle ones")
        self.open_total += 1
        self.open_by_addr[addr] = have + 1
        return None

    def release(self, addr: str) -> None:
        self.open_total -= 1
        left = self.open_by_addr.get(addr, 1) - 1
        if left > 0:
            self.open_by_addr[addr] = left
        else:
            self.open_by_addr.pop(addr, None)

    def __call__(self) -> RequestHandler:
        return JsonRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonAppRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `JsonServer`."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> Server:
        base = await super()._make_server()
        return JsonServer(
            base.request_handler, request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation, loop=base._loop,
            limits=self._limits, keepalive_timeout=self._limits.idle_timeout_s,
            max_line_size=MAX_LINE, max_field_size=MAX_FIELD, max_headers=MAX_HEADERS,
            lingering_time=LINGER_S,
            **{k: v for k, v in base._kwargs.items()
               if k not in ("keepalive_timeout", "max_line_size", "max_field_size",
                            "max_headers", "lingering_time")},
        )
