"""Transport logic that needs no sockets: queueing, bounds, batching, URL building."""

from __future__ import annotations

import pytest

from distsync.raft.types import Entry, Message, MsgType
from distsync.transport import Transport
from distsync.transport.peer import _stream_url


def msg(dst: str, i: int, payload: bytes = b"") -> Message:
    entries = [Entry(index=i, term=1, data=payload)] if payload else []
    return Message(MsgType.APPEND, "a", dst, term=1, index=i, entries=entries)


def make(**kw: object) -> Transport:
    addrs = {"b": "127.0.0.1:1", "c": "127.0.0.1:2"}
    return Transport("a", addrs.get, lambda m: None, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("addr", "secure", "url"),
    [
        ("node-1.svc:7000", False, "ws://node-1.svc:7000/v1/raft/stream"),
        ("node-1.svc:7000", True, "wss://node-1.svc:7000/v1/raft/stream"),
        ("[::1]:7000", False, "ws://[::1]:7000/v1/raft/stream"),
        ("https://h:1/", False, "wss://h:1/v1/raft/stream"),
        ("http://h:1", True, "ws://h:1/v1/raft/stream"),
    ],
)
def test_stream_url(addr: str, secure: bool, url: str) -> None:
    assert _stream_url(addr, secure) == url


def test_send_before_start_queues_per_peer_in_order() -> None:
    t = make()
    t.send([msg("b", 1), msg("c", 1), msg("b", 2)])
    t.send([msg("b", 3)])
    peers = t.stats()["peers"]
    assert peers["b"]["queued"] == 3 and peers["c"]["queued"] == 1
    assert [m.index for m in t._peers["b"].outbox] == [1, 2, 3]
    assert not peers["b"]["connected"]


def test_overflow_drops_oldest_and_counts() -> None:
    t = make(max_queue=100)
    t.send([msg("b", i) for i in range(250)])
    st = t.stats()["peers"]["b"]
    assert st["queued"] == 100 and st["dropped"] == 150
    assert [m.index for m in t._peers["b"].outbox] == list(range(150, 250))


def test_smaller_bound_once_peer_is_known_down() -> None:
    t = make(max_queue=100, max_queue_down=10)
    t.send([msg("b", i) for i in range(50)])
    assert t.stats()["peers"]["b"]["queued"] == 50  # never tried yet: full bound
    t._peers["b"].down = True
    t.send([msg("b", 50)])
    st = t.stats()["peers"]["b"]
    assert st["queued"] == 10 and st["dropped"] == 41
    assert t._peers["b"].outbox[-1].index == 50


def test_unroutable_messages_are_dropped() -> None:
    t = make()
    t.send([msg("zzz", 1), msg("a", 2)])  # unknown member, and self
    st = t.stats()
    assert st["dropped_unroutable"] == 2 and st["peers"] == {}


def test_batch_capped_by_count_and_bytes() -> None:
    t = make(max_batch_msgs=1024, max_frame_bytes=4 * 1024 * 1024)
    t.send([msg("b", i) for i in range(3000)])
    p = t._peers["b"]
    assert [len(t._take_batch(p)) for _ in range(3)] == [1024, 1024, 952]

    t.send([msg("b", i, b"x" * (1024 * 1024)) for i in range(10)])
    sizes = []
    while p.outbox:
        sizes.append(len(t._take_batch(p)))
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) >= 3


def test_oversized_message_dropped_and_batch_split() -> None:
    t = make(max_msg_size=10_000)
    p = t._peer("b")
    big = msg("b", 1, b"x" * 20_000)
    small = [msg("b", i, b"y" * 3000) for i in range(2, 6)]
    frames = list(t._frames(p, [big, *small]))
    assert p.dropped == 1
    assert sum(n for _, n in frames) == 4
    assert all(len(f) <= 10_000 for f, _ in frames)


def test_set_peers_and_remove_peer_before_start() -> None:
    t = make()
    t.set_peers(["a", "b", "c"])
    assert set(t.stats()["peers"]) == {"b", "c"}
    t.send([msg("c", 1)])
    t.set_peers(["b"])
    assert set(t.stats()["peers"]) == {"b"}
    t.remove_peer("b")
    t.remove_peer("b")  # idempotent
    assert t.stats()["peers"] == {}


async def test_close_without_start_and_send_after_close() -> None:
    t = make()
    t.send([msg("b", 1)])
    await t.close()
    await t.close()
    t.send([msg("b", 2)])
    assert t.stats()["peers"]["b"]["queued"] == 0
    await t.start()  # no-op once closed
    assert t._session is None
