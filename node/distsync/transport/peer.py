"""Peer-to-peer transport for Raft messages over WebSockets.

Why this shape:

* Peers share the client API's aiohttp server (one port, one TLS setup) and talk over a
  WebSocket at ``/v1/raft/stream``. Each binary frame is ``codec.encode_messages(batch)``.
* Every node keeps exactly ONE long-lived outbound connection per peer and only *sends* on it;
  it *receives* on the inbound connections other nodes opened to it. Per-sender FIFO order
  therefore follows from one TCP stream per direction, and no request/response pairing is
  needed: frames are pipelined, nothing ever waits for a reply (Raft has its own acks).
* ``send()`` is synchronous and never blocks: it appends to a bounded per-peer outbox that a
  per-peer writer task drains, batching whatever is queued into one frame. A dead or slow peer
  only grows (and then trims) its own outbox; other peers and the caller are unaffected.
  Raft tolerates message loss, so dropping the oldest messages is always safe.
* Peer addresses are ``host:port`` names resolved on every connect (no DNS cache), because in
  Kubernetes-style deployments a restarted peer keeps its name but gets a new IP.

The transport is not thread-safe: call it from the event loop thread that ran ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_mod
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ..raft.codec import decode_messages, encode_messages
from ..raft.types import Message
from ..starts import HEADER as START_HEADER

__all__ = [
    "ADDR_HEADER",
    "CLUSTER_HEADER",
    "CLUSTER_ID_HEADER",
    "NODE_HEADER",
    "START_HEADER",
    "STREAM_PATH",
    "TARGET_HEADER",
    "Authenticator",
    "Transport",
]

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/raft/stream"
NODE_HEADER = "X-Distsync-Node"
CLUSTER_HEADER = "X-Distsync-Cluster"
# Optional: the id the client believes it is dialling. Because addresses are re-resolved on
# every connect, a stale name could reach a *different* node; the server refuses (421) rather
# than silently accepting messages meant for someone else.
TARGET_HEADER = "X-Distsync-Target"
# Optional: the dialling node's own advertised address. A node that has just joined knows
# only its founding peers and the members in its (still empty) log, so without this it could
# not answer a leader that is not a founding member: its replies would be dropped as
# unroutable and it would never catch up. See ``learned_address``.
ADDR_HEADER = "X-Distsync-Addr"
# Start chains (starts.py, which names the dialling node's start header): a refusal's
# kind and reason.
REFUSED_HEADER = "X-Distsync-Refused"
REFUSED_DETAIL_HEADER = "X-Distsync-Refused-Detail"
# The dialling node's committed cluster id (hex; raft/core.py, `_noop`), or "-" for none: two
# members whose ids differ hold two clusters' data, and neither takes the other's stream. A
# node from before cluster ids sends nothing (core.py, `_maybe_name_cluster`).
CLUSTER_ID_HEADER = "X-Distsync-Cluster-Id"
NO_CLUSTER_ID = "-"


class Authenticator(Protocol):
    """Seam for peer authentication (e.g. HMAC over a shared cluster secret, a later issue).

    ``client_headers`` adds headers to the outbound handshake; ``verify`` inspects an inbound
    handshake after the cluster-name check and returns False to refuse it with HTTP 403.
    """

    def client_headers(self, peer_id: str) -> Mapping[str, str]: ...

    async def verify(self, request: web.Request) -> bool: ...


class StartChecks(Protocol):
    """Seam for start chains (starts.PeerStarts): what a node announces when it dials, the
    check of a peer that dials it (None to take it, else why not: answered with 409), and
    what to do when a peer refuses it so."""

    def header(self, peer: str | None = None) -> str: ...

    def check(self, peer: str, value: str | None) -> str | None: ...

    def refused(self, peer: str, detail: str, their_start: str | None) -> None: ...

    def refuse_foreign(self, peer: str, why: str) -> None: ...

    def refused_as_foreign(self, peer: str, detail: str) -> None: ...

    def connected(self, peer: str) -> None: ...


@dataclass(slots=True, eq=False)
class _Peer:
    """Outbound state for one peer; owned by its writer task."""

    id: str
    outbox: deque[Message] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None
    # The socket the writer task is parked on with an empty outbox, if it is: send() may
    # then write to it at once instead of waking the task (see _write_now).
    idle_ws: aiohttp.ClientWebSocketResponse | None = None
    connected: bool = False
    # True once a connect attempt failed or a connection broke, until the next success. While
    # down, the outbox keeps only the newest `max_queue_down` messages.
    down: bool = False
    address: str | None = None
    sent: int = 0
    frames: int = 0
    bytes: int = 0
    dropped: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    last_error: str | None = None
    connected_since: float | None = None

    def wrote(self, frame: bytes, n: int) -> None:
        """Count one frame of `n` messages as sent."""
        self.sent += n
        self.frames += 1
        self.bytes += len(frame)

    def lost(self, frames: list[tuple[bytes, int]], e: Exception) -> None:
        """Count `frames` as dropped by a failed write (the first may or may not have
        arrived; Raft retries either way)."""
        self.dropped += sum(n for _, n in frames)
        self.last_error = f"{type(e).__name__}: {e}"


@dataclass(slots=True)
class _Inbound:
    """Receive-side counters for one sending node (keyed by its X-Distsync-Node header)."""

    connections: int = 0
    received: int = 0
    frames: int = 0
    bytes: int = 0
    misrouted: int = 0


def _estimate_size(m: Message) -> int:
    """Cheap upper-ish bound of a message's encoded size, used to cap frames without encoding
    twice. Only the payload-bearing fields matter; the fixed overhead is generous."""
    n = 96 + len(m.context) + len(m.src) + len(m.dst)
    for e in m.entries:
        n += 24 + len(e.data)
    if m.snapshot is not None:
        conf = m.snapshot.meta.conf
        n += 64 + len(m.snapshot.data)
        n += sum(len(v) + 4 for v in conf.voters) + sum(len(v) + 4 for v in conf.learners)
        n += sum(len(a) + len(b) + 8 for a, b in conf.addrs)
    return n


def _stream_url(address: str, secure: bool) -> str:
    """Turn ``host:port`` (or a full ``http(s)://``/``ws(s)://`` base URL) into the stream URL."""
    if "://" in address:
        scheme, rest = address.split("://", 1)
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        return f"{scheme}://{rest.rstrip('/')}{STREAM_PATH}"
    return f"{'wss' if secure else 'ws'}://{address}{STREAM_PATH}"


class Transport:
    """Raft message transport: one outbound WebSocket per peer, inbound via ``add_routes``.

    Lifecycle: construct, ``add_routes(app)`` before the app starts, ``await start()``, then
    ``send()`` freely; ``await close()`` on shutdown.
    """

    def __init__(
        self,
        self_id: str,
        resolve: Callable[[str], str | None],
        on_message: Callable[[Message], None],
        cluster: str = "distsync",
        ssl: ssl_mod.SSLContext | None = None,
        *,
        authenticator: Authenticator | None = None,
        on_peer_state: Callable[[str, bool], None] | None = None,
        max_queue: int = 10_000,
        max_queue_down: int = 1_024,
        max_batch_msgs: int = 1_024,
        max_frame_bytes: int = 4 * 1024 * 1024,
        max_msg_size: int = 64 * 1024 * 1024,
        heartbeat: float = 5.0,
        connect_timeout: float = 3.0,
        close_timeout: float = 0.5,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        advertise: str | None = None,
        starts: StartChecks | None = None,
        cluster_id: Callable[[], bytes] | None = None,
        on_peer_id: Callable[[str, bytes | None], None] | None = None,
    ) -> None:
        """``resolve(peer_id)`` returns the peer's current ``host:port`` (or None if it is not a
        member any more); it is called on every send batch and every connect so membership and
        address changes are followed without telling the transport. ``on_message`` is called
        synchronously, in order, for every message received."""
        self.self_id = self_id
        self.cluster = cluster
        self._resolve = resolve
        self._on_message = on_message
        self._ssl = ssl
        self._auth = authenticator
        self._on_peer_state = on_peer_state
        self._max_queue = max_queue
        self._max_queue_down = min(max_queue_down, max_queue)
        self._max_batch_msgs = max_batch_msgs
        self._max_frame_bytes = max_frame_bytes
        self._max_msg_size = max_msg_size
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._advertise = advertise
        self._starts = starts
        self._cluster_id = cluster_id or (lambda: b"")
        self._on_peer_id = on_peer_id
        self._learned: dict[str, str] = {}  # peer id -> address it advertised when dialling

        self._peers: dict[str, _Peer] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        self._closed = False
        self._inbound: dict[web.WebSocketResponse, str] = {}
        self._inbound_stats: dict[str, _Inbound] = {}
        self._rejected = 0
        self._warned: set[tuple[str | None, str | None]] = set()
        self._dropped_unknown = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the HTTP client and start writers for peers already known (queued before
        start, or named via ``set_peers``)."""
        if self._started or self._closed:
            return
        # use_dns_cache=False: resolve names on every connect so a restarted peer at a new IP
        # is found. limit=0: upgraded WebSockets hold a connector slot each; don't cap peers.
        connector = aiohttp.TCPConnector(use_dns_cache=False, limit=0, ssl=self._ssl or True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Only bound the connect phase; an upgraded stream must be allowed to idle forever
            # (liveness is the WebSocket heartbeat's job).
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self._connect_timeout, sock_connect=self._connect_timeout
            ),
        )
        self._started = True
        for peer in self._peers.values():
            self._spawn(peer)

    async def close(self) -> None:
        """Stop everything: writer tasks, outbound sockets, the client session and inbound
        sockets. Bounded by a few ``close_timeout``s so that dead peers cannot hang shutdown."""
        if self._closed:
            return
        self._closed = True
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += list(self._retiring)
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2 * self._close_timeout)
            for t in pending:  # a close handshake still stuck: abort it
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self._close_timeout)
        for peer in self._peers.values():
            peer.outbox.clear()
        await self._close_inbound()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._session.close(), self._close_timeout)
            self._session = None

    # ------------------------------------------------------------------ sending

    def send(self, msgs: list[Message]) -> bool:
        """Queue messages for their ``dst`` peers and return immediately: True when every
        one was written to its socket already (see ``_write_now``), False when some wait
        for their writer task.

        Per-peer order is preserved. If a peer's outbox overflows, its oldest messages are
        dropped (counted in ``stats()``): Raft retransmits, so freshness beats completeness.
        Messages for peers that ``resolve`` does not know are dropped.
        """
        if self._closed or not msgs:
            return True
        now = True
        groups: dict[str, list[Message]] = {}
        for m in msgs:
            groups.setdefault(m.dst, []).append(m)
        for dst, group in groups.items():
            if dst == self.self_id or self._resolve(dst) is None:
                # The Raft core never addresses itself; an unknown dst is a departed member.
                self._dropped_unknown += len(group)
                peer = self._peers.get(dst)
                if peer is not None:
                    peer.dropped += len(group)
                continue
            peer = self._peer(dst)
            peer.outbox.extend(group)
            self._trim(peer)
            if peer.idle_ws is None or not self._write_now(peer, peer.idle_ws):
                peer.wake.set()
                now = False
        return now

    def _write_now(self, peer: _Peer, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Write the outbox to the socket now, from the caller, when the writer task is
        idle and the socket takes data without waiting. Why: waking the task costs a pass of
        the event loop on every message's way out, twice per write (the leader's append, a
        follower's acknowledgement), about 20-40 us each on this machine. Uses the writer's
        synchronous frame write (aiohttp >= 3.11); returns False, leaving the task to do it,
        when that is missing, the socket is closing, or earlier data is still buffered (the
        task then waits for the drain)."""
        writer = getattr(ws, "_writer", None)
        write = getattr(writer, "_write_websocket_frame", None)
        transport = getattr(writer, "transport", None)
        if (write is None or transport is None or ws.closed or transport.is_closing()
                or getattr(writer, "compress", 0) or transport.get_write_buffer_size()):
            return False
        while peer.outbox:
            frames = list(self._frames(peer, self._take_batch(peer)))
            for k, (frame, n) in enumerate(frames):
                try:
                    write(frame, aiohttp.WSMsgType.BINARY, 0)
                except Exception as e:
                    peer.lost(frames[k:], e)
                    peer.wake.set()  # the task notices the broken socket
                    return True
                peer.wrote(frame, n)
        return True

    def set_peers(self, peer_ids: Iterable[str]) -> None:
        """Make the peer set exactly ``peer_ids`` (minus self): connect eagerly to new peers so
        the first messages don't pay the connect latency, and close connections to the rest."""
        wanted = {p for p in peer_ids if p != self.self_id}
        for pid in list(self._peers):
            if pid not in wanted:
                self.remove_peer(pid)
        if not self._closed:
            for pid in wanted:
                self._peer(pid)

    def remove_peer(self, peer_id: str) -> None:
        """Forget a peer: drop its outbox and close its outbound connection (in the background;
        ``close()`` still waits for it). A later ``send`` to it would start afresh."""
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        peer.outbox.clear()
        if peer.task is not None and not peer.task.done():
            peer.task.cancel()
            self._retiring.add(peer.task)
            peer.task.add_done_callback(self._retiring.discard)

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(peer_id)
            if self._started:
                self._spawn(peer)
        return peer

    def _spawn(self, peer: _Peer) -> None:
        if peer.task is None:
            peer.task = asyncio.get_running_loop().create_task(
                self._run_peer(peer), name=f"distsync-transport-{self.self_id}->{peer.id}"
            )

    def _trim(self, peer: _Peer) -> None:
        limit = self._max_queue_down if peer.down else self._max_queue
        excess = len(peer.outbox) - limit
        if excess > 0:
            for _ in range(excess):
                peer.outbox.popleft()
            peer.dropped += excess

    # ------------------------------------------------------------------ writer

    async def _run_peer(self, peer: _Peer) -> None:
        """Connect / drain / reconnect loop for one peer; runs until cancelled."""
        backoff = self._backoff_initial
        while True:
            address = self._resolve(peer.id)
            peer.address = address
            if address is None:
                # Not a member (any more): nothing to dial. Wait for a send, which only
                # queues once resolve knows the peer again.
                peer.dropped += len(peer.outbox)
                peer.outbox.clear()
                peer.wake.clear()
                await peer.wake.wait()
                continue
            ws = await self._connect(peer, address)
            if ws is None:
                peer.down = True
                self._trim(peer)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._backoff_max)
                continue
            try:
                await self._pump(peer, ws)
            finally:
                lived = time.monotonic() - (peer.connected_since or 0.0)
                await self._disconnect(peer, ws)
            # A connection that lived long enough proves the peer healthy: retry fast. One that
            # broke right away (peer crash-looping, proxy closing) keeps backing off.
            if lived >= self._backoff_max:
                backoff = self._backoff_initial
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._backoff_max)

    async def _connect(self, peer: _Peer, address: str) -> aiohttp.ClientWebSocketResponse | None:
        assert self._session is not None
        headers = {
            NODE_HEADER: self.self_id,
            CLUSTER_HEADER: self.cluster,
            TARGET_HEADER: peer.id,
        }
        if self._advertise:
            headers[ADDR_HEADER] = self._advertise
        if self._auth is not None:
            headers.update(self._auth.client_headers(peer.id))
        if self._starts is not None:
            headers[START_HEADER] = self._starts.header(peer.id)
        headers[CLUSTER_ID_HEADER] = self._cluster_id().hex() or NO_CLUSTER_ID
        if peer.connects or peer.connect_failures:
            peer.reconnects += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    _stream_url(address, self._ssl is not None),
                    headers=headers,
                    heartbeat=self._heartbeat,
                    max_msg_size=self._max_msg_size,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self._close_timeout),
                    ssl=self._ssl or True,
                )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # refused, DNS failure, timeout, 403, ...
            peer.connect_failures += 1
            if (isinstance(e, aiohttp.WSServerHandshakeError) and e.status == 409
                    and e.headers is not None and self._starts is not None):
                kind = e.headers.get(REFUSED_HEADER)
                detail = e.headers.get(REFUSED_DETAIL_HEADER, "")
                if kind == "rolled_back":
                    self._starts.refused(peer.id, detail, e.headers.get(START_HEADER))
                elif kind == "foreign_cluster":
                    self._starts.refused_as_foreign(peer.id, (
                        f"as another cluster's member ({peer.id} holds cluster id "
                        f"{e.headers.get(CLUSTER_ID_HEADER)}, this node "
                        f"{self._cluster_id().hex()}): one of the two data directories is "
                        f"another cluster's with the same names"))
            err = f"{type(e).__name__}: {e}"
            if err != peer.last_error:
                lvl = logging.WARNING if isinstance(e, aiohttp.WSServerHandshakeError) else (
                    logging.DEBUG
                )
                log.log(lvl, "%s: connect to %s at %s failed: %s", self.self_id, peer.id,
                        address, err)
            peer.last_error = err
            return None
        peer.ws = ws
        peer.connected = True
        peer.down = False
        peer.connects += 1
        peer.last_error = None
        peer.connected_since = time.monotonic()
        if self._starts is not None:
            self._starts.connected(peer.id)
        log.debug("%s: connected to %s at %s", self.self_id, peer.id, address)
        self._notify(peer.id, True)
        return ws

    async def _pump(self, peer: _Peer, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Drain the outbox into ``ws`` until the connection breaks. A reader task runs
        alongside: it is what processes heartbeat PONGs and notices the server closing."""
        reader = asyncio.get_running_loop().create_task(self._read_outbound(peer, ws))
        try:
            while True:
                if not peer.outbox:
                    peer.wake.clear()
                    if ws.closed or reader.done():
                        return
                    peer.idle_ws = ws
                    try:
                        await peer.wake.wait()
                    finally:
                        peer.idle_ws = None
                    continue
                if ws.closed or reader.done():
                    return
                frames = list(self._frames(peer, self._take_batch(peer)))
                for k, (frame, n) in enumerate(frames):
                    try:
                        await ws.send_bytes(frame)
                    except Exception as e:
                        peer.lost(frames[k:], e)
                        return
                    peer.wrote(frame, n)
        finally:
            reader.cancel()
            # asyncio.wait, not `await reader`: it neither raises the reader's outcome nor
            # swallows a cancellation aimed at *this* task (which would keep it looping).
            await asyncio.wait([reader])

    def _take_batch(self, peer: _Peer) -> list[Message]:
        batch: list[Message] = []
        size = 0
        out = peer.outbox
        while out and len(batch) < self._max_batch_msgs:
            est = _estimate_size(out[0])
            if batch and size + est > self._max_frame_bytes:
                break
            batch.append(out.popleft())
            size += est
        return batch

    def _frames(self, peer: _Peer, batch: list[Message]) -> Iterable[tuple[bytes, int]]:
        """Encode ``batch``; if the estimate was off and the frame would exceed what the
        receiver accepts, split it. A single message too large to send at all is dropped."""
        frame = encode_messages(batch)
        if len(frame) <= self._max_msg_size:
            yield frame, len(batch)
        elif len(batch) == 1:
            peer.dropped += 1
            log.error("%s: dropping %s to %s: %d bytes exceeds max_msg_size %d", self.self_id,
                      batch[0].type.name, peer.id, len(frame), self._max_msg_size)
        else:
            mid = len(batch) // 2
            yield from self._frames(peer, batch[:mid])
            yield from self._frames(peer, batch[mid:])

    async def _read_outbound(self, peer: _Peer, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Keep the outbound socket's receive side running. Peers do not normally send on it,
        but if one does, its frames are delivered like inbound ones."""
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    if not self._deliver(peer.id, msg.data):
                        await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA)
                        return
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    peer.last_error = f"{type(ws.exception()).__name__}: {ws.exception()}"
        finally:
            peer.wake.set()  # let the writer notice the break even with an empty outbox

    async def _disconnect(self, peer: _Peer, ws: aiohttp.ClientWebSocketResponse) -> None:
        was_connected = peer.connected
        peer.connected = False
        peer.down = True
        peer.ws = None
        peer.connected_since = None
        self._trim(peer)
        if not ws.closed:
            # Bounded: a slow peer must not stall reconnection or shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self._close_timeout)
        if was_connected:
            log.debug("%s: disconnected from %s", self.self_id, peer.id)
            self._notify(peer.id, False)

    def _notify(self, peer_id: str, connected: bool) -> None:
        if self._on_peer_state is None:
            return
        try:
            self._on_peer_state(peer_id, connected)
        except Exception:
            log.exception("on_peer_state hook failed")

    # ------------------------------------------------------------------ receiving

    def add_routes(self, app: web.Application) -> None:
        """Register the stream endpoint on the shared API app, plus an ``on_shutdown`` hook that
        closes inbound streams (otherwise the server's graceful shutdown waits on them)."""
        app.router.add_get(STREAM_PATH, self._handle_stream)
        app.on_shutdown.append(self._on_app_shutdown)

    async def _on_app_shutdown(self, app: web.Application) -> None:
        await self._close_inbound()

    def _once(self, key: tuple[str | None, str | None], first: int = logging.WARNING) -> int:
        """`first` the first time `key` is refused, DEBUG after (a refused peer redials
        every few seconds); at most 1024 keys are remembered."""
        if key in self._warned:
            return logging.DEBUG
        if len(self._warned) < 1024:
            self._warned.add(key)
        return first

    def _refuse(self, node: str, kind: str, why: str, level: int,
                headers: dict[str, str]) -> web.Response:
        """A 409 whose headers carry the refusal's kind, its reason and `headers` for the
        dialling node to read: a response, not an HTTPException, which the API's error
        middleware would rewrite in its own shape without them. Logged at `level` once per
        (node, reason): a refused member dials again every few seconds as long as it runs."""
        self._rejected += 1
        log.log(self._once((node, why), level), "%s: refused stream from %s: %s",
                self.self_id, node, why)
        return web.json_response(
            {"error": kind, "message": why}, status=409,
            headers={REFUSED_HEADER: kind, REFUSED_DETAIL_HEADER: why, **headers})

    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        """Accept a peer's outbound stream: check the handshake, then deliver every frame."""
        if self._closed:
            raise web.HTTPServiceUnavailable(text="transport closed")
        cluster = request.headers.get(CLUSTER_HEADER)
        if cluster != self.cluster:
            self._rejected += 1
            # Warn once per (remote, cluster): a misconfigured peer retries every few seconds.
            lvl = self._once((request.remote, cluster))
            log.log(lvl, "%s: refused stream from %s (node %r): cluster %r != %r", self.self_id,
                    request.remote, request.headers.get(NODE_HEADER), cluster, self.cluster)
            raise web.HTTPForbidden(text="cluster name mismatch")
        node = request.headers.get(NODE_HEADER)
        if not node:
            self._rejected += 1
            raise web.HTTPBadRequest(text=f"missing {NODE_HEADER} header")
        target = request.headers.get(TARGET_HEADER)
        if target is not None and target != self.self_id:
            self._rejected += 1
            raise web.HTTPMisdirectedRequest(text=f"this is {self.self_id}, not {target}")
        if self._auth is not None and not await self._auth.verify(request):
            self._rejected += 1
            raise web.HTTPForbidden(text="authentication failed")
        ours = self._cluster_id().hex()
        said = request.headers.get(CLUSTER_ID_HEADER)
        theirs = "" if said is None or said == NO_CLUSTER_ID else said.lower()
        if ours and theirs and theirs != ours:
            # Two members with different committed ids hold two clusters' data: neither can
            # tell which is out of place, so each refuses the other and keeps its vote.
            why = (f"it holds another cluster's data (cluster id {theirs}; this node's is "
                   f"{ours}): a data directory from another cluster with the same names?")
            if self._starts is not None:
                self._starts.refuse_foreign(node, why)
            return self._refuse(node, "foreign_cluster", why, logging.ERROR,
                                {CLUSTER_ID_HEADER: ours})
        if self._starts is not None:
            why = self._starts.check(node, request.headers.get(START_HEADER))
            if why is not None:
                # Our own start goes with it: the refused node believes us only if it
                # continues the start of ours that it saw (starts.PeerStarts.refused).
                return self._refuse(node, "rolled_back", why, logging.WARNING,
                                    {START_HEADER: self._starts.header()})

        if self._on_peer_id is not None:
            try:
                got = None if said is None else b"" if not theirs else bytes.fromhex(theirs)
            except ValueError:
                got = None  # not ours to judge: it says nothing we can use
            self._on_peer_id(node, got)
        advertised = request.headers.get(ADDR_HEADER)
        if advertised:
            self._learned[node] = advertised
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat,
            max_msg_size=self._max_msg_size,
            timeout=self._close_timeout,
            compress=False,
        )
        await ws.prepare(request)
        stats = self._inbound_stats.setdefault(node, _Inbound())
        stats.connections += 1
        self._inbound[ws] = node
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    if not self._deliver(node, msg.data):
                        await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA)
                        break
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA)
                    break
        finally:
            self._inbound.pop(ws, None)
            stats.connections -= 1
        return ws

    def _deliver(self, node: str, data: bytes) -> bool:
        """Decode one frame and hand its messages to ``on_message``. Returns False if the frame
        is garbage (the connection is then closed: the peers disagree on the protocol)."""
        stats = self._inbound_stats.setdefault(node, _Inbound())
        try:
            msgs = decode_messages(data)
        except Exception:
            log.exception("%s: undecodable frame from %s", self.self_id, node)
            return False
        stats.frames += 1
        stats.bytes += len(data)
        for m in msgs:
            # A message not for us (stale address) or not from the authenticated sender is
            # dropped rather than fed to Raft.
            if m.dst != self.self_id or m.src != node:
                stats.misrouted += 1
                continue
            stats.received += 1
            try:
                self._on_message(m)
            except Exception:
                log.exception("%s: on_message failed for %s from %s", self.self_id,
                              m.type.name, node)
        return True

    async def _close_inbound(self) -> None:
        socks = list(self._inbound)
        if not socks:
            return

        async def close_one(ws: web.WebSocketResponse) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    ws.close(code=aiohttp.WSCloseCode.GOING_AWAY), self._close_timeout
                )

        await asyncio.gather(*(close_one(ws) for ws in socks))

    def learned_address(self, peer_id: str) -> str | None:
        """The address ``peer_id`` advertised when it last dialled us (after the cluster and
        authentication checks), or None. A fallback for ``resolve``, not a membership oracle."""
        return self._learned.get(peer_id)

    # ------------------------------------------------------------------ observability

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and debugging.

        ``peers[id]``: connected, address, queued, sent (messages), frames, bytes, dropped,
        connects, reconnects (attempts after the first), connect_failures, last_error.
        ``inbound[id]``: connections, received (messages), frames, bytes, misrouted.
        """
        return {
            "self": self.self_id,
            "cluster": self.cluster,
            "peers": {
                p.id: {
                    "connected": p.connected,
                    "address": p.address,
                    "queued": len(p.outbox),
                    "sent": p.sent,
                    "frames": p.frames,
                    "bytes": p.bytes,
                    "dropped": p.dropped,
                    "connects": p.connects,
                    "reconnects": p.reconnects,
                    "connect_failures": p.connect_failures,
                    "last_error": p.last_error,
                }
                for p in self._peers.values()
            },
            "inbound": {
                node: {
                    "connections": s.connections,
                    "received": s.received,
                    "frames": s.frames,
                    "bytes": s.bytes,
                    "misrouted": s.misrouted,
                }
                for node, s in self._inbound_stats.items()
            },
            "inbound_rejected": self._rejected,
            "dropped_unroutable": self._dropped_unknown,
        }
