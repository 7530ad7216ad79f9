"""Transport over real sockets: real aiohttp servers on 127.0.0.1, no mocks."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from distsync.raft.types import Entry, Message, MsgType
from distsync.transport import CLUSTER_HEADER, NODE_HEADER, STREAM_PATH, Transport


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll `cond` until true; fail the test (not hang) after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        await asyncio.sleep(0.005)


def free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msg(src: str, dst: str, i: int, payload: bytes = b"") -> Message:
    entries = [Entry(index=i, term=1, data=payload)] if payload else []
    return Message(MsgType.APPEND, src, dst, term=1, index=i, entries=entries)


class Node:
    """One transport plus the aiohttp server it receives on."""

    def __init__(
        self, node_id: str, addrs: dict[str, str], *, host: str = "127.0.0.1", **kw: Any
    ) -> None:
        self.id = node_id
        self.addrs = addrs
        self.host = host
        self.received: list[Message] = []
        self.peer_events: list[tuple[str, bool]] = []
        self.transport = Transport(
            node_id, addrs.get, self.received.append, on_peer_state=self._on_state, **kw
        )
        self.runner: web.AppRunner | None = None
        self.port = 0

    def _on_state(self, peer: str, connected: bool) -> None:
        self.peer_events.append((peer, connected))

    async def start(self, port: int = 0) -> Node:
        app = web.Application()
        self.transport.add_routes(app)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.addrs[self.id] = f"{self.host}:{self.port}"
        await self.transport.start()
        return self

    async def stop_server(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def stop(self) -> None:
        await self.transport.close()
        await self.stop_server()

    def from_(self, src: str) -> list[int]:
        return [m.index for m in self.received if m.src == src]

    def peer(self, peer_id: str) -> dict[str, Any]:
        return self.transport.stats()["peers"].get(peer_id, {})


@pytest.fixture
async def cluster() -> AsyncIterator[Callable[..., Any]]:
    """Factory for started nodes sharing one address book; everything is stopped at the end."""
    addrs: dict[str, str] = {}
    nodes: list[Node] = []

    async def make(node_id: str, port: int = 0, **kw: Any) -> Node:
        n = await Node(node_id, addrs, **kw).start(port)
        nodes.append(n)
        return n

    make.addrs = addrs  # type: ignore[attr-defined]
    make.nodes = nodes  # type: ignore[attr-defined]
    yield make
    for n in nodes:
        await n.stop()


async def test_three_nodes_both_directions_in_order(cluster: Any) -> None:
    ids = ["a", "b", "c"]
    nodes = {i: await cluster(i) for i in ids}
    per_pair = 300
    # Interleave many small sends so batching and ordering both get exercised.
    for k in range(0, per_pair, 7):
        for src in ids:
            nodes[src].transport.send(
                [msg(src, dst, i) for i in range(k, min(k + 7, per_pair)) for dst in ids
                 if dst != src]
            )
        await asyncio.sleep(0)
    expected = list(range(per_pair))
    await wait_until(
        lambda: all(len(nodes[d].received) == 2 * per_pair for d in ids), what="all delivered"
    )
    for dst in ids:
        for src in ids:
            if src != dst:
                assert nodes[dst].from_(src) == expected, (src, dst)
        assert all(m.dst == dst for m in nodes[dst].received)
    # One outbound connection per peer, reused: exactly one connect each.
    for src in ids:
        for dst in ids:
            if src != dst:
                st = nodes[src].peer(dst)
                assert st["connected"] and st["connects"] == 1 and st["sent"] == per_pair
                assert st["dropped"] == 0


async def test_batching_5000_messages_few_frames(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    n = 5000
    a.transport.send([msg("a", "b", i) for i in range(n)])
    await wait_until(lambda: len(b.received) == n, what="5000 delivered")
    assert b.from_("a") == list(range(n))
    st = a.peer("b")
    assert st["sent"] == n and st["dropped"] == 0
    # Capped at 1024 messages per frame, so at least 5 frames, and far fewer than messages.
    assert 5 <= st["frames"] <= 50, st
    assert b.transport.stats()["inbound"]["a"]["frames"] == st["frames"]


async def test_frame_byte_cap_splits_large_payloads(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    payload = b"x" * (1024 * 1024)
    a.transport.send([msg("a", "b", i, payload) for i in range(12)])
    await wait_until(lambda: len(b.received) == 12, what="large messages delivered")
    assert b.from_("a") == list(range(12))
    assert all(m.entries[0].data == payload for m in b.received)
    # 4 MiB cap per frame -> at least 3 frames for 12 MiB.
    assert a.peer("b")["frames"] >= 3


async def test_dead_and_hung_peers_do_not_delay_live_peer(cluster: Any) -> None:
    # "dead": nothing listening (connection refused). "hung": a socket that listens but never
    # answers the HTTP upgrade, so the connect attempt sits until connect_timeout.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        cluster.addrs["dead"] = f"127.0.0.1:{free_port()}"
        cluster.addrs["hung"] = f"127.0.0.1:{hung.getsockname()[1]}"
        a = await cluster("a", connect_timeout=30.0)
        b = await cluster("b")
        start = time.monotonic()
        for i in range(200):
            a.transport.send([msg("a", "dead", i), msg("a", "hung", i), msg("a", "b", i)])
            if i % 20 == 0:
                await asyncio.sleep(0)
        await wait_until(lambda: len(b.received) == 200, timeout=3.0, what="live peer")
        elapsed = time.monotonic() - start
        assert b.from_("a") == list(range(200))
        # Deliveries finished while both bad peers were still not connected.
        dead, hung_st = a.peer("dead"), a.peer("hung")
        assert not dead["connected"] and not hung_st["connected"]
        assert dead["connect_failures"] >= 1
        assert hung_st["connects"] == 0
        assert elapsed < 3.0
        # The dead peer keeps retrying in the background with back-off.
        failures = dead["connect_failures"]
        await wait_until(
            lambda: a.peer("dead")["connect_failures"] > failures, what="dead peer retried"
        )
        assert a.peer("dead")["queued"] <= 1024
    finally:
        hung.close()


async def test_peer_restart_delivery_resumes(cluster: Any) -> None:
    a = await cluster("a")
    b = await Node("b", cluster.addrs).start()
    port = b.port
    a.transport.send([msg("a", "b", i) for i in range(10)])
    await wait_until(lambda: len(b.received) == 10, what="before restart")

    await b.stop()
    await wait_until(lambda: not a.peer("b")["connected"], what="a notices b is gone")
    # While b is down only the newest 1024 messages are kept.
    a.transport.send([msg("a", "b", i) for i in range(100, 3100)])
    st = a.peer("b")
    assert st["queued"] <= 1024 and st["dropped"] >= 3000 - 1024

    b2 = await cluster("b", port=port)
    await wait_until(lambda: len(b2.received) == 1024, what="queued messages after restart")
    assert b2.from_("a") == list(range(3100 - 1024, 3100))
    # New traffic flows too, on the re-established connection.
    a.transport.send([msg("a", "b", 5000)])
    await wait_until(lambda: len(b2.received) == 1025, what="new message after restart")
    st = a.peer("b")
    assert st["connected"] and st["connects"] == 2 and st["reconnects"] >= 1
    assert ("b", True) in a.peer_events and ("b", False) in a.peer_events
    assert a.peer_events[-1] == ("b", True)


async def test_resolves_names_and_follows_a_moved_peer(cluster: Any) -> None:
    a = await cluster("a")
    b = await Node("b", cluster.addrs, host="localhost").start()
    assert cluster.addrs["b"].startswith("localhost:")
    a.transport.send([msg("a", "b", i) for i in range(5)])
    await wait_until(lambda: len(b.received) == 5, what="delivery via localhost name")
    assert a.peer("b")["address"] == f"localhost:{b.port}"

    # b restarts elsewhere: new port, and resolve() now says so.
    await b.stop()
    await wait_until(lambda: not a.peer("b")["connected"], what="old connection broken")
    b2 = await cluster("b", host="localhost")
    assert b2.port != b.port
    a.transport.send([msg("a", "b", i) for i in range(5, 10)])
    await wait_until(lambda: len(b2.received) == 5, what="delivery to moved peer")
    assert b2.from_("a") == list(range(5, 10))
    assert a.peer("b")["address"] == f"localhost:{b2.port}"


async def test_wrong_cluster_is_refused(cluster: Any) -> None:
    b = await cluster("b")
    a = await cluster("a", cluster="other-cluster")
    a.transport.send([msg("a", "b", 1)])
    await wait_until(lambda: a.peer("b").get("connect_failures", 0) >= 2, what="retries")
    st = a.peer("b")
    assert not st["connected"] and st["connects"] == 0
    assert "403" in (st["last_error"] or "")
    assert b.received == [] and b.transport.stats()["inbound_rejected"] >= 2

    # The raw handshake: 403 for a mismatch, accepted with the right name.
    url = f"http://127.0.0.1:{b.port}{STREAM_PATH}"
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as ei:
            await s.ws_connect(url, headers={NODE_HEADER: "x", CLUSTER_HEADER: "nope"})
        assert ei.value.status == 403
        ws = await s.ws_connect(url, headers={NODE_HEADER: "x", CLUSTER_HEADER: "distsync"})
        await ws.close()


async def test_misdirected_connection_is_refused(cluster: Any) -> None:
    # a believes "c" lives at b's address (stale name): b must not accept c's messages.
    b = await cluster("b")
    a = await cluster("a")
    cluster.addrs["c"] = cluster.addrs["b"]
    a.transport.send([msg("a", "c", 1)])
    await wait_until(lambda: a.peer("c").get("connect_failures", 0) >= 1, what="refusal")
    assert "421" in (a.peer("c")["last_error"] or "")
    assert b.received == []


async def test_unknown_peer_messages_are_dropped(cluster: Any) -> None:
    a = await cluster("a")
    b = await cluster("b")
    a.transport.send([msg("a", "nobody", 1), msg("a", "a", 2), msg("a", "b", 3)])
    await wait_until(lambda: len(b.received) == 1, what="known peer delivery")
    assert a.transport.stats()["dropped_unroutable"] == 2
    assert "nobody" not in a.transport.stats()["peers"]


async def test_remove_peer_closes_connection(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    a.transport.send([msg("a", "b", 1)])
    await wait_until(lambda: len(b.received) == 1, what="delivery")
    assert b.transport.stats()["inbound"]["a"]["connections"] == 1
    a.transport.remove_peer("b")
    await wait_until(
        lambda: b.transport.stats()["inbound"]["a"]["connections"] == 0, what="closed"
    )
    assert "b" not in a.transport.stats()["peers"]


async def test_set_peers_connects_eagerly(cluster: Any) -> None:
    a, b, c = await cluster("a"), await cluster("b"), await cluster("c")
    a.transport.set_peers(["a", "b", "c"])
    await wait_until(
        lambda: a.peer("b").get("connected") and a.peer("c").get("connected"), what="eager"
    )
    a.transport.set_peers(["a", "b"])
    await wait_until(
        lambda: c.transport.stats()["inbound"]["a"]["connections"] == 0, what="c dropped"
    )
    assert set(a.transport.stats()["peers"]) == {"b"}
    assert b.transport.stats()["inbound"]["a"]["connections"] == 1


async def test_close_is_fast_with_dead_peers(cluster: Any) -> None:
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        cluster.addrs["dead"] = f"127.0.0.1:{free_port()}"
        cluster.addrs["hung"] = f"127.0.0.1:{hung.getsockname()[1]}"
        a = await cluster("a", connect_timeout=30.0)
        b = await cluster("b")
        a.transport.send([msg("a", "dead", 1), msg("a", "hung", 1), msg("a", "b", 1)])
        b.transport.send([msg("b", "a", 1)])
        await wait_until(lambda: len(b.received) == 1 and len(a.received) == 1, what="live")
        await wait_until(lambda: a.peer("dead")["connect_failures"] >= 1, what="dead failing")
        start = time.monotonic()
        await asyncio.wait_for(a.transport.close(), 5.0)
        assert time.monotonic() - start < 1.0
        # b's inbound stream from a was closed by a; its own outbound to a gets closed too.
        start = time.monotonic()
        await asyncio.wait_for(b.transport.close(), 5.0)
        assert time.monotonic() - start < 1.0
        # Closed transports ignore sends.
        a.transport.send([msg("a", "b", 2)])
        assert a.transport.stats()["peers"]["b"]["queued"] == 0
    finally:
        hung.close()


async def test_server_shutdown_closes_inbound_streams_quickly(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    a.transport.send([msg("a", "b", 1)])
    await wait_until(lambda: len(b.received) == 1, what="delivery")
    start = time.monotonic()
    await b.stop_server()  # the app's on_shutdown hook closes inbound WebSockets
    assert time.monotonic() - start < 1.0
    await wait_until(lambda: not a.peer("b")["connected"], what="a notices")


class TokenAuth:
    """A toy authenticator exercising the seam HMAC auth will use."""

    def __init__(self, token: str) -> None:
        self.token = token

    def client_headers(self, peer_id: str) -> dict[str, str]:
        return {"X-Test-Token": self.token}

    async def verify(self, request: web.Request) -> bool:
        return request.headers.get("X-Test-Token") == self.token


async def test_authenticator_seam(cluster: Any) -> None:
    b = await cluster("b", authenticator=TokenAuth("s3cret"))
    good = await cluster("a", authenticator=TokenAuth("s3cret"))
    bad = await cluster("c", authenticator=TokenAuth("wrong"))
    good.transport.send([msg("a", "b", 1)])
    bad.transport.send([msg("c", "b", 1)])
    await wait_until(lambda: b.from_("a") == [1], what="authenticated delivery")
    await wait_until(lambda: bad.peer("b")["connect_failures"] >= 1, what="refusal")
    assert "403" in (bad.peer("b")["last_error"] or "")
    assert b.from_("c") == []


async def test_spoofed_source_is_not_delivered(cluster: Any) -> None:
    # Messages must come from the node named in the handshake.
    a, b = await cluster("a"), await cluster("b")
    spoof = Message(MsgType.VOTE, "c", "b", term=9)
    a.transport.send([spoof, msg("a", "b", 1)])
    await wait_until(lambda: len(b.received) == 1, what="genuine message")
    await wait_until(lambda: b.transport.stats()["inbound"]["a"]["misrouted"] == 1,
                     what="spoof counted")
    assert b.received[0].src == "a"


async def test_idle_writer_sends_from_the_caller_in_order(cluster: Any) -> None:
    """With the writer task idle on an open stream, send() puts the frame on the socket
    itself, before it returns (one event-loop pass less on every message's way out). Large
    frames may leave data buffered, which sends the next ones through the task; order holds
    across both paths."""
    a, b = await cluster("a"), await cluster("b")
    a.transport.send([msg("a", "b", 0)])
    await wait_until(lambda: b.from_("a") == [0], what="first delivery")
    await wait_until(lambda: a.transport._peers["b"].idle_ws is not None, what="writer idle")
    frames = a.peer("b")["frames"]
    a.transport.send([msg("a", "b", 1)])
    assert a.peer("b")["frames"] == frames + 1  # written before send() returned
    big = b"x" * 200_000
    for i in range(2, 40):
        a.transport.send([msg("a", "b", i, big if i % 3 == 0 else b"")])
    await wait_until(lambda: len(b.from_("a")) == 40, what="all delivered")
    assert b.from_("a") == list(range(40))
