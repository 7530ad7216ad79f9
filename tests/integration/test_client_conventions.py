"""One convention across the client (issue 20): seconds as floats, argument errors as
ValueErrors before any request, LockTimeout a TimeoutError, Unavailable a ConnectionError,
a dead address failing within the documented connect timeout."""

from __future__ import annotations

import socket
import time

import pytest

from distsync.client import BlockingClient, Client, InvalidArgument, Unavailable
from distsync.client.locks import LockTimeout
from distsync.local import LocalCluster


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dead_address_fails_within_connect_timeout() -> None:
    """Before: a wrong address was retried in silence for the whole call timeout."""
    addr = f"127.0.0.1:{_closed_port()}"
    async with Client([addr], timeout=30, connect_timeout=1.0) as c:
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as ei:
            await c.put("k", 1)
        took = time.monotonic() - t0
    assert isinstance(ei.value, ConnectionError)
    assert took < 10, f"{took:.1f} s for a dead address (connect_timeout=1, timeout=30)"
    assert "connect_timeout" in str(ei.value)


def test_argument_errors_are_value_errors_raised_before_any_request() -> None:
    """Nothing listens at this address: each refusal must come before any request."""
    addr = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ValueError):
        Client([addr], timeout=-1)
    with BlockingClient([addr], timeout=30) as c:
        t0 = time.monotonic()
        for bad in (lambda: c.lock("a/b"), lambda: c.lock("ok", mode="both"),
                    lambda: c.lock("ok", wait=-1), lambda: c.cache.set("k", 5),
                    lambda: c.queue("q").get("w", wait=-2),
                    lambda: c.queue("jobs/billing"), lambda: c.queue("q").get("bad id"),
                    lambda: c.queue("q").consume("bad id"),
                    lambda: c.cache.set("a/b", b"x"), lambda: c.cache.get("a b"),
                    lambda: c.cache.mset({"ok": b"1", "a/b": b"2"}),
                    lambda: c.queue("q").create(visibility=1, visibility_ms=1000),
                    lambda: c.queue("q").nack("1:x", delay=float("nan"))):
            with pytest.raises((ValueError, TypeError)) as ei:
                bad()
            assert isinstance(ei.value, TypeError | InvalidArgument), ei.value
        assert time.monotonic() - t0 < 5  # none of them waited on the dead address


def test_exception_hierarchy() -> None:
    assert issubclass(LockTimeout, TimeoutError)
    assert issubclass(Unavailable, ConnectionError)
    assert issubclass(InvalidArgument, ValueError)


def test_queue_options_in_seconds(shared_cluster: LocalCluster) -> None:
    import uuid

    with BlockingClient(shared_cluster.addrs) as c:
        q = c.queue(f"c20-secs-{uuid.uuid4().hex[:6]}")
        q.create(partitions=1, visibility=1.5, consumer_ttl=20, retention=3600.0)
        opts = q.info()["options"]
        assert (opts["visibility_ms"], opts["consumer_ttl_ms"], opts["retention_ms"]) == (
            1500, 20_000, 3_600_000)
