"""The lock client as users of redis-py and kazoo expect it (issue 20): a Lock object on one
shared, kept-alive session per client; each Lock object its own holder; a lost lease raises
LockLost when the `with` block ends; names checked before any request."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from distsync.client import BlockingClient, Client, InvalidArgument
from distsync.client.locks import InvalidLockName, LockLost, LockTimeout, NotHeld
from distsync.local import LocalCluster


@pytest.mark.parametrize("name", ["jobs/billing", "a b", "", "x" * 300, "deadlocks"])
async def test_bad_lock_name_is_a_value_error_before_any_request(
    shared_cluster: LocalCluster, name: str,
) -> None:
    """Bug 4: `lock("jobs/billing")` answered `NotFound 404: no route`."""
    async with Client(shared_cluster.addrs) as c:
        with pytest.raises(InvalidLockName) as ei:
            c.lock(name)
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, InvalidArgument)
        assert ei.value.code == "invalid_lock_name"
        with pytest.raises(InvalidLockName):
            async with c.session(ttl=5) as s:
                await s.acquire(name)
        assert c._lock_sessions == {}  # nothing opened for the refused lock


def test_server_answers_invalid_lock_name_for_a_slash(shared_cluster: LocalCluster) -> None:
    """Old clients (and curl) that put a `/` in the path get the lock API's own 400, not a
    routing 404."""
    from cluster_helpers import refusal_problem

    base = shared_cluster.nodes["n1"].url
    body = b'{"session": "s-1"}'
    hdr = {"Content-Type": "application/json"}
    for path, data in (("/v1/locks/jobs/billing/acquire", body),
                       ("/v1/locks/jobs/billing/release", body),
                       ("/v1/locks/jobs%2Fbilling/acquire", body)):
        assert refusal_problem("POST", base + path, data, hdr, status=400,
                               error="invalid_lock_name") is None
    assert refusal_problem("GET", base + "/v1/locks/jobs/billing", status=400,
                           error="invalid_lock_name") is None


async def test_two_tasks_on_one_session_do_not_share_an_exclusive_hold(
    shared_cluster: LocalCluster,
) -> None:
    """Bug 7: two tasks that took `s.lock(name)` on one session were both inside; when one
    left, the lock was released under the other."""
    async with Client(shared_cluster.addrs) as c, c.session(ttl=10) as s:
        inside: list[str] = []
        overlap: list[tuple[str, ...]] = []
        a_in = asyncio.Event()
        a_go = asyncio.Event()

        async def task(tag: str, first: bool) -> None:
            if not first:
                await a_in.wait()
            async with s.lock("c20-task-excl"):
                inside.append(tag)
                if len(inside) > 1:
                    overlap.append(tuple(inside))
                if first:
                    a_in.set()
                    await a_go.wait()
                inside.remove(tag)

        ta = asyncio.create_task(task("a", True))
        tb = asyncio.create_task(task("b", False))
        await a_in.wait()
        # b is blocked: a try with no wait from a third holder object fails at once
        with pytest.raises(LockTimeout):
            await s.lock("c20-task-excl").acquire(timeout=0.3)
        a_go.set()
        await asyncio.wait_for(asyncio.gather(ta, tb), 20)
        assert overlap == []

        # asking for it: reentrant holders on one client share the hold
        r1 = c.lock("c20-task-re", reentrant=True)
        r2 = c.lock("c20-task-re", reentrant=True)
        assert await r1.acquire(timeout=5) and await r2.acquire(timeout=5)
        assert r1.token == r2.token
        await r1.release()
        assert r2.owned() and await r2.locked()
        await r2.release()
        assert not await r2.locked()


async def test_lock_object_shape_and_session_reuse(shared_cluster: LocalCluster) -> None:
    """Bug 9 (first half): `c.lock()` opened and closed a session on every use. Now the
    client keeps one session alive and every Lock uses it."""
    async with Client(shared_cluster.addrs) as c:
        lk = c.lock("c20-shape", ttl=10)
        assert not lk.owned() and not await lk.locked()
        assert await lk.acquire(timeout=5) is True
        assert lk.owned() and await lk.locked() and lk.token is not None
        first_session, first_token = lk.session_id, lk.token
        left = await lk.extend()
        assert 5 < left <= 10
        assert await lk.refresh() > 5
        other = c.lock("c20-shape")
        assert await other.acquire(blocking=False) is False
        with pytest.raises(LockTimeout) as ei:
            await other.acquire(timeout=0.2)
        assert isinstance(ei.value, TimeoutError)
        await lk.release()
        assert not lk.owned()
        with pytest.raises(NotHeld):
            await lk.release()
        async with c.lock("c20-shape") as again:
            assert again.session_id == first_session
            assert again.token is not None and again.token > first_token
        with pytest.raises(ValueError):
            c.lock("c20-shape", mode="sole")
        with pytest.raises(ValueError):
            await c.lock("c20-shape").acquire(timeout=-1)


def test_blocking_lock_object(shared_cluster: LocalCluster) -> None:
    with BlockingClient(shared_cluster.addrs) as c:
        with c.lock("c20-blk") as lk:
            assert lk.owned() and lk.locked()
            sid = lk.session_id
            other = c.lock("c20-blk")
            assert other.acquire(blocking=False) is False
        lk2 = c.lock("c20-blk")
        assert lk2.acquire(timeout=5)
        assert lk2.session_id == sid
        lk2.release()
        assert not lk2.locked()


CHILD = textwrap.dedent("""
    import sys
    from distsync.client import BlockingClient
    from distsync.client.locks import LockLost

    seen = []
    with BlockingClient(sys.argv[1].split(",")) as c:
        lk = c.lock("c20-lost", ttl=1.5, on_lost=lambda lock: seen.append(lock.name))
        try:
            with lk:
                print("held", lk.token, flush=True)
                sys.stdin.readline()   # the test pauses us (SIGSTOP) here
                print("fenced-write-with", lk.token, "owned", lk.owned(), flush=True)
        except LockLost as e:
            print("LockLost", lk.lost, seen, e.code, flush=True)
        else:
            print("no-exception", flush=True)
""")


def test_lost_lock_raises_on_exit_and_is_observable(shared_cluster: LocalCluster) -> None:
    """Bug 8: a holder paused past its lease woke up and left its `with` block with no
    exception. Here the holder is a real process, stopped with SIGSTOP until another client
    has the lock."""
    lc = shared_cluster
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, ",".join(lc.addrs)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        line = child.stdout.readline()
        assert line.startswith("held"), (line, child.stderr.read() if child.poll() else "")
        token = int(line.split()[1])
        os.kill(child.pid, signal.SIGSTOP)
        with BlockingClient(lc.addrs) as c:
            lk = c.lock("c20-lost", ttl=5)
            assert lk.acquire(timeout=20), "the paused holder's lease never ran out"
            assert lk.token is not None and lk.token > token
            os.kill(child.pid, signal.SIGCONT)
            child.stdin.write("go\n")
            child.stdin.flush()
            out, err = child.communicate(timeout=30)
            lk.release()
        lines = out.splitlines()
        assert lines[-1].startswith("LockLost True ['c20-lost']"), (out, err)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()


async def test_lost_flag_and_event_while_holding(shared_cluster: LocalCluster) -> None:
    """The holder can watch its lock: `lost_event` is set (and `owned()` turns False) as soon
    as the client knows the lease is gone, not only at `with` exit."""
    async with Client(shared_cluster.addrs) as c:
        lk = c.lock("c20-watch", ttl=1.5)
        async with c.session(ttl=30) as other:
            with pytest.raises(LockLost):
                async with lk:
                    # the holder's session is closed behind its back (as the leader does
                    # when a lease runs out)
                    await c.request_or_raise("DELETE", f"/v1/sessions/{lk.session_id}",
                                             mutating=True)
                    t0 = time.monotonic()
                    await asyncio.wait_for(lk.lost_event.wait(), 10)
                    assert time.monotonic() - t0 < 10
                    assert lk.lost and not lk.owned()
                    assert (await other.acquire("c20-watch", wait=5)).token > (lk.token or 0)
        # the client opens a fresh session for the next lock
        async with c.lock("c20-watch-next") as nxt:
            assert nxt.session_id != lk.session_id
