"""HTTP inside the whole-cluster simulation (sim.py): requests go through each node's real
aiohttp application (`api.app.create_app`: its routes, middlewares, handlers, request ids and
error mapping), with no socket anywhere.

Why: the API layer is where a request becomes a command (the `Request-Id` scope and the
fingerprint, the leader-only forwarding, the preconditions a handler checks before it
proposes, the 4xx it maps a result to). A past bug lived exactly there, a client reusing a
request id lost a write behind a 200, and a simulation that calls `node.propose` directly
cannot see such bugs. The virtual loop (simloop.py) has no real I/O, so a request is built
in memory (`_request`) and handed to the application's own dispatch (`Application._handle`,
what aiohttp's server calls for each parsed request), inside the serving node's process
(simproc.py), so a crash or a pause reaches the handler wherever it waits.

A follower's handler forwards leader-only requests with the session it finds in
`app[FORWARD_SESSION]` (api/forward.py). `InProcessSession` stands in for that aiohttp
`ClientSession`: the hop goes over the simulated network (its delays; a drop costs a TCP
retransmission, a cut link a timeout, a dead leader a broken connection) to the leader's
application, the same path a client's request takes.

A streamed answer (`GET /v1/watch`) goes through the same dispatch with a stand-in for the
connection's writer (`_StreamWriter`): what the handler writes reaches the client's
`SimStream` as it writes it, a client that closes its stream makes the handler's next write
fail as a closed socket would, and a crash of the node breaks the stream (ConnectionLost).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .simnet import SimNetwork
from .simproc import ConnectionLost, Process

# A node's process and its application, or None while the node is down.
Target = Callable[[str], tuple[Process, web.Application] | None]


@dataclass
class Answer:
    """What came back: the status, the headers and the body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (every answer of the API is JSON), or None if it is not."""
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None


class _Connection:
    """What a request asks of its connection (aiohttp's `RequestHandler`): the peer's and
    our own address, no TLS, and flow control that never has to pause (the whole body is
    in memory before the handler runs)."""

    ssl_context = None
    transport = None

    def __init__(self, remote: str, local: str) -> None:
        self.peername = (remote, 50_000)
        self.sockname = (local, 7001)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def _request(app: web.Application, method: str, path: str, headers: dict[str, str],
             body: bytes | None, remote: str,
             writer: AbstractStreamWriter | None = None) -> web.Request:
    loop = asyncio.get_running_loop()
    hdrs = CIMultiDict(headers)
    if body is not None:
        hdrs["Content-Length"] = str(len(body))
    proxy = CIMultiDictProxy(hdrs)
    raw = tuple((k.encode(), v.encode()) for k, v in proxy.items())
    message = RawRequestMessage(method, path, aiohttp.HttpVersion11, proxy, raw, False, None,
                                False, False, URL(path))
    conn = _Connection(remote, "127.0.0.1")
    payload: StreamReader = EMPTY_PAYLOAD
    if body is not None:
        payload = StreamReader(conn, 1 << 20, loop=loop)  # type: ignore[arg-type]
        payload.feed_data(body)
        payload.feed_eof()
    return web.Request(message, payload, conn, writer, asyncio.current_task(),  # type: ignore[arg-type]
                       loop, client_max_size=app._client_max_size)


async def serve(app: web.Application, method: str, path: str, headers: dict[str, str],
                body: bytes | None, remote: str) -> Answer:
    """One request through `app`'s routing, middlewares and handler, in the calling task
    (which SimHttp runs inside the serving node's process)."""
    app.freeze()  # (what starting the server does: middlewares and router fixed)
    request = _request(app, method, path, headers, body, remote)
    try:
        resp = await app._handle(request)
    except web.HTTPException as e:  # what the server answers for one the middlewares pass
        return Answer(e.status, dict(e.headers), (e.text or "").encode())
    if not isinstance(resp, web.Response):
        raise TypeError(f"{method} {path}: a streamed answer {resp!r}; the simulation reads "
                        "whole bodies only")
    data = resp.body
    if data is None:
        data = b""
    elif not isinstance(data, bytes):
        raise TypeError(f"{method} {path}: a body of type {type(data).__name__}")
    return Answer(resp.status, dict(resp.headers), data)


class SimStream:
    """A streamed answer (GET /v1/watch) as its client reads it: `status` and `headers`,
    then `read()` chunk by chunk until the handler ends (b""), the serving process dies
    (ConnectionLost), or the client closes it (`close()`: the handler's next write raises
    ConnectionResetError, as aiohttp's does once the peer has gone). An answer that is not
    streamed (an error) comes whole: `status`, `headers` and `body`."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""  # an answer that was not streamed
        self.closed = False
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._started = False
        self._wake = asyncio.Event()

    # -- the node's side (its handler, through _StreamWriter) --------------------------

    def _begin(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers, self._started = status, headers, True
        self._wake.set()

    def _feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._wake.set()

    def _end(self) -> None:
        self._eof = self._started = True
        self._wake.set()

    # -- the client's side -------------------------------------------------------------

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while not ready():
            if self.proc.dead:
                raise ConnectionLost(f"{self.proc.name} died")
            self._wake.clear()
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({woken, self.proc.died},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()

    async def started(self) -> None:
        await self._wait(lambda: self._started or self.closed)

    async def read(self) -> bytes:
        """The next chunk; b"" once the answer ended or the client closed it. Raises
        ConnectionLost."""
        await self._wait(lambda: bool(self._chunks) or self._eof or self.closed)
        return self._chunks.popleft() if self._chunks and not self.closed else b""

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def json(self) -> Any:
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None


class _StreamWriter(AbstractStreamWriter):
    """The connection's write side for a streamed answer: bytes go to the client's
    `SimStream` as written (no chunked framing: the client reads the payload)."""

    length: int | None = None

    def __init__(self, stream: SimStream) -> None:
        self.stream = stream

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.stream.closed:
            raise ConnectionResetError("the client closed the stream")
        self.stream._feed(bytes(chunk))
        self.output_size += len(chunk)

    async def write_eof(self, chunk: bytes = b"") -> None:
        if chunk:
            await self.write(chunk)
        self.stream._end()

    async def drain(self) -> None:
        pass

    def enable_compression(self, encoding: str = "deflate",
                           strategy: int | None = None) -> None:
        pass

    def enable_chunking(self) -> None:
        pass

    async def write_headers(self, status_line: str, headers: Any) -> None:
        self.stream._begin(int(status_line.split()[1]), dict(headers))


async def serve_stream(app: web.Application, method: str, path: str,
                       headers: dict[str, str], remote: str, stream: SimStream) -> None:
    """One request through `app` whose answer may be streamed (what aiohttp's server does:
    the handler writes as it goes, and its return ends the answer)."""
    app.freeze()
    try:
        request = _request(app, method, path, headers, None, remote, _StreamWriter(stream))
        try:
            resp = await app._handle(request)
        except web.HTTPException as e:
            stream.body = (e.text or "").encode()
            stream._begin(e.status, dict(e.headers))
            return
        if resp.prepared:
            await resp.write_eof()
            return
        body = resp.body if isinstance(resp.body, bytes) else b""
        stream.body = body
        stream._begin(resp.status, dict(resp.headers))
    except ConnectionError:
        pass  # the client went away
    finally:
        stream._end()


class SimHttp:
    """The simulation's HTTP: a client's request to one node, and a node's forward to
    another (`session`)."""

    def __init__(self, net: SimNetwork, target: Target, addresses: dict[str, str]) -> None:
        self.net = net
        self.target = target
        self.node_at = {addr: nid for nid, addr in addresses.items()}  # "host:port" -> id

    async def call(self, nid: str, method: str, path: str, *, body: Any = None,
                   headers: dict[str, str] | None = None, remote: str) -> Answer:
        """A client's request to node `nid` (a JSON `body`, if any). The client sits next
        to the node: no network faults, but if the node is down or dies before it answers
        the connection breaks (ConnectionLost: the request may or may not have taken
        effect)."""
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = orjson.dumps(body)
            hdrs["Content-Type"] = "application/json"
        got = self.target(nid)
        if got is None:
            raise ConnectionLost(f"{nid} is down")
        proc, app = got
        return await proc.call(serve(app, method, path, hdrs, data, remote))

    def open_stream(self, nid: str, method: str, path: str, *,
                    headers: dict[str, str] | None = None, remote: str) -> SimStream:
        """A client's request to node `nid` whose answer may be streamed: `await
        stream.started()` for the status, then `read()` the stream (or the whole `body` of
        an answer that was not streamed). Raises ConnectionLost if the node is down (and
        `started`/`read` do if it dies)."""
        got = self.target(nid)
        if got is None or got[0].dead:
            raise ConnectionLost(f"{nid} is down")
        proc, app = got
        stream = SimStream(proc)
        proc.spawn(serve_stream(app, method, path, dict(headers or {}), remote, stream))
        return stream

    def session(self, src: str, src_ip: str, timeout: float) -> InProcessSession:
        """What node `src` (at `src_ip`) forwards with, in place of its ClientSession."""
        return InProcessSession(self, src, src_ip, timeout)

    async def _exchange(self, src: str, src_ip: str, method: str, url: str,
                        headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(url)
        dst = self.node_at.get(parts.netloc)
        if dst is None:
            raise aiohttp.ClientConnectionError(f"no node at {parts.netloc}")
        self.net.counts["http.forwarded"] += 1
        there = self.net.stream_delay(src, dst)
        if there is None:
            await asyncio.Event().wait()  # lost: the caller's timeout ends it
        await asyncio.sleep(there or 0)
        got = self.target(dst)
        if got is None:
            raise aiohttp.ClientConnectionError(f"connection to {dst} refused")
        proc, app = got
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            ans = await proc.call(serve(app, method, path, headers, body or None, src_ip))
        except ConnectionLost:
            raise aiohttp.ServerDisconnectedError() from None
        back = self.net.stream_delay(dst, src)
        if back is None:
            await asyncio.Event().wait()
        await asyncio.sleep(back or 0)
        return ans


class _Reply:
    """The part of aiohttp's ClientResponse that forward.py reads."""

    def __init__(self, ans: Answer) -> None:
        self.status = ans.status
        self.content_type = ans.headers.get("Content-Type", "application/octet-stream") \
            .split(";")[0].strip()
        self._body = ans.body

    async def read(self) -> bytes:
        return self._body

    async def json(self, content_type: str | None = "application/json") -> Any:
        return orjson.loads(self._body)


class _Exchange:
    def __init__(self, run: Any, timeout: float) -> None:
        self._run = run
        self._timeout = timeout

    async def __aenter__(self) -> _Reply:
        return _Reply(await asyncio.wait_for(self._run, self._timeout))

    async def __aexit__(self, *exc: object) -> None:
        return None


class InProcessSession:
    """In-process stand-in for the aiohttp ClientSession of api/forward.py (and of a
    follower's linearizable watch start, api/watch.py): `request(...)` and `get(...)` as
    async context managers, over SimHttp. Errors are the ones a real session raises:
    aiohttp.ClientError or TimeoutError."""

    def __init__(self, http: SimHttp, src: str, src_ip: str, timeout: float) -> None:
        self.http = http
        self.src = src
        self.src_ip = src_ip
        self.timeout = timeout

    def request(self, method: str, url: str, *, data: bytes = b"",
                headers: dict[str, str] | None = None,
                timeout: aiohttp.ClientTimeout | None = None) -> _Exchange:
        total = timeout.total if timeout is not None and timeout.total else self.timeout
        run = self.http._exchange(self.src, self.src_ip, method, url, dict(headers or {}),
                                  data)
        return _Exchange(run, total)

    def get(self, url: str, *, headers: dict[str, str] | None = None,
            timeout: aiohttp.ClientTimeout | None = None) -> _Exchange:
        return self.request("GET", url, headers=headers, timeout=timeout)

    async def close(self) -> None:
        pass
