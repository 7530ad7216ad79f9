"""Watches on a real 3-node cluster (README "Watches"): real processes, real sockets, one
cluster for the module (the leader kill comes last).

The nodes keep a small history (HISTORY events) and a small per-watcher buffer (BUFFER
events), so that compaction and a slow consumer take few writes, and a small per-client bound
(PER_CLIENT watchers per node).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import diag, ready, wait_until

from distsync.client import BlockingClient, Client, Compacted
from distsync.local import LocalCluster, http_json

HISTORY = 64
BUFFER = 20
PROGRESS_MS = 300
PER_CLIENT = 6


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    with LocalCluster(3, extra_args=[
        "--watch-history-events", str(HISTORY), "--watch-buffer-events", str(BUFFER),
        "--max-watchers-per-client", str(PER_CLIENT),
    ]) as c:
        ready(c)
        yield c


def _addr(lc: LocalCluster, nid: str) -> str:
    return lc.nodes[nid].addr


def _follower(lc: LocalCluster, leader: str) -> str:
    return next(n for n in lc.nodes if n != leader and lc.nodes[n].alive())


def _stream(lc: LocalCluster, nid: str, query: str) -> tuple[int, list[dict[str, Any]]]:
    """A bounded watch (timeout_ms in `query`) read whole: status and lines."""
    with urllib.request.urlopen(f"{lc.nodes[nid].url}/v1/watch?{query}", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        return r.status, [json.loads(line) for line in r.read().splitlines() if line]


def test_bad_parameters_are_400_with_a_json_error(lc: LocalCluster) -> None:
    for query, code in [
        ("", "invalid_query"), ("key=a&prefix=b", "invalid_query"),
        ("key=a%20b", "invalid_key"), ("prefix=a&start_revision=0", "invalid_query"),
        ("prefix=a&start_revision=x", "invalid_query"), ("prefix=a&progress_ms=1", "invalid_query"),
        ("prefix=a&linearizable=maybe", "invalid_query"), ("prefix=%0A", "invalid_query"),
    ]:
        status, body = http_json("GET", f"{lc.nodes['n1'].url}/v1/watch?{query}")
        assert (status, body.get("error")) == (400, code), (query, body)
        assert body["message"]


async def test_watchers_on_leader_and_follower_see_exactly_the_acknowledged_writes(
    lc: LocalCluster,
) -> None:
    leader = ready(lc)
    follower = _follower(lc, leader)
    async with Client(lc.addrs) as c:
        start = (await c.put("w1/start", 0))["revision"] + 1
        want: list[tuple[str, str, int]] = []
        got: dict[str, list[tuple[str, str, int]]] = {leader: [], follower: []}

        async def watcher(nid: str, n: int) -> None:
            async for ev in c.watch(prefix="w1/", start_revision=start,
                                    progress_ms=PROGRESS_MS, addr=_addr(lc, nid)):
                got[nid].append((ev["type"], ev["key"], ev["revision"]))
                if len(got[nid]) == n:
                    return

        n_writes = 24
        tasks = [asyncio.create_task(watcher(nid, n_writes)) for nid in got]
        for i in range(n_writes // 2):  # half before the watchers catch up, half live
            if i % 3 == 2:
                want.append(("delete", f"w1/{i - 1}",
                              (await c.delete(f"w1/{i - 1}"))["revision"]))
            else:
                want.append(("put", f"w1/{i}", (await c.put(f"w1/{i}", i))["revision"]))
            await c.put(f"other/{i}", i)  # outside the prefix: never seen
        await asyncio.sleep(0)
        for i in range(n_writes // 2, n_writes):
            want.append(("put", f"w1/{i}", (await c.put(f"w1/{i}", {"n": i}))["revision"]))
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert got[leader] == want, diag(lc, f"leader's watcher: {got[leader]} != {want}")
    assert got[follower] == want, diag(lc, f"follower's watcher: {got[follower]} != {want}")


def test_progress_lines_and_the_blocking_iterator(lc: LocalCluster) -> None:
    with BlockingClient(lc.addrs) as c:
        rev = c.put("w2/a", 1)["revision"]
        it = c.watch(key="w2/a", start_revision=rev, progress_ms=50, progress=True)
        first = next(it)
        assert first == {"type": "progress", "revision": rev - 1}
        ev = next(it)
        assert (ev["type"], ev["value"], ev["revision"]) == ("put", 1, rev)
        while (p := next(it))["type"] != "progress":
            pass
        assert p["revision"] >= rev  # nothing matches: the applied index comes through
        it.close()
    status, lines = _stream(lc, "n2", f"key=w2/a&start_revision={rev + 1}&timeout_ms=200"
                                       "&progress_ms=50")
    assert status == 200 and lines[0] == {"type": "progress", "revision": rev}
    assert all(ln["type"] == "progress" for ln in lines) and len(lines) >= 2
    # linearizable=true on a follower: the default start follows every acknowledged write.
    follower = _follower(lc, ready(lc))
    with BlockingClient(lc.addrs) as c:
        rev = c.put("w2/b", 1)["revision"]
    status, lines = _stream(lc, follower, "key=w2/b&linearizable=true&timeout_ms=50")
    assert status == 200 and lines[0]["type"] == "progress" and lines[0]["revision"] >= rev


async def test_a_compacted_start_is_410_and_the_client_raises_compacted(
    lc: LocalCluster,
) -> None:
    # On the leader, which applied every write it acknowledged (a follower may not have
    # applied, nor compacted, the last ones yet: it would serve them).
    leader = ready(lc)
    async with Client(lc.addrs) as c:
        first = (await c.put("w3/k", 0))["revision"]
        for i in range(HISTORY):
            await c.put("w3/k", i + 1)
        status, body = http_json("GET", f"{lc.nodes[leader].url}/v1/watch?key=w3/k"
                                        f"&start_revision={first}")
        assert status == 410 and body["error"] == "compacted", body
        assert body["oldest_revision"] == body["compact_revision"] + 1 > first
        with pytest.raises(Compacted) as e:
            async for _ in c.watch(key="w3/k", start_revision=first, addr=_addr(lc, leader)):
                pass
        assert e.value.oldest_revision > first
        # From the oldest revision on, the watch serves.
        status, lines = _stream(lc, leader, f"key=w3/k&start_revision={e.value.oldest_revision}"
                                          "&timeout_ms=100")
        assert status == 200 and lines[1]["type"] == "put"


async def test_watchers_past_the_per_client_bound_get_429_naming_the_limit(
    lc: LocalCluster,
) -> None:
    """`--max-watchers-per-client` per node: the client (here its Client-Id) past it gets 429
    `too_many_watchers` with `limit: max_watchers_per_client`; another client, and the same
    client on another node, are served; a slot comes back when a stream ends."""
    import aiohttp

    nid, other_nid = sorted(lc.nodes)[:2]
    url = f"{lc.nodes[nid].url}/v1/watch"
    q = {"prefix": "w6/", "progress_ms": "50"}
    mine = {"Client-Id": "limits-test"}
    async with aiohttp.ClientSession() as s:
        streams = []
        try:
            for _ in range(PER_CLIENT):
                r = await s.get(url, params=q, headers=mine)
                assert r.status == 200, await r.text()
                streams.append(r)
            over = await s.get(url, params=q, headers=mine)
            body = await over.json()
            assert over.status == 429, body
            assert body["error"] == "too_many_watchers", body
            assert body["limit"] == "max_watchers_per_client", body
            assert body["max_watchers_per_client"] == PER_CLIENT and body["message"], body
            for headers, where in (({"Client-Id": "someone-else"}, url),
                                   (mine, f"{lc.nodes[other_nid].url}/v1/watch")):
                async with s.get(where, params={**q, "timeout_ms": "50"},
                                 headers=headers) as ok:
                    assert ok.status == 200, (headers, where, await ok.text())
                    await ok.read()
            streams.pop().close()  # the node notices at its next progress line (50 ms)
            deadline = time.monotonic() + 10
            while True:
                async with s.get(url, params={**q, "timeout_ms": "50"}, headers=mine) as again:
                    if again.status == 200:
                        break
                    assert again.status == 429 and time.monotonic() < deadline, \
                        diag(lc, "the closed stream's slot did not come back")
                await asyncio.sleep(0.05)
        finally:
            for r in streams:
                r.close()


def _dechunk(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def _cancellations(lc: LocalCluster, nid: str) -> float:
    with urllib.request.urlopen(f"{lc.nodes[nid].url}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'distsync_watch_cancellations_total\{reason="slow_consumer"\} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def test_a_slow_consumer_is_cancelled_with_the_reason(lc: LocalCluster) -> None:
    leader = ready(lc)
    nid = _follower(lc, leader)
    host, port = _addr(lc, nid).rsplit(":", 1)
    before = _cancellations(lc, nid)
    with BlockingClient(lc.addrs) as c:
        start = c.put("w4/k", "x")["revision"]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a consumer that stalls
        s.connect((host, int(port)))
        s.sendall(f"GET /v1/watch?key=w4/k&start_revision={start} HTTP/1.1\r\n"
                  f"Host: {host}\r\nConnection: close\r\n\r\n".encode())
        big = "v" * (64 << 10)
        revs = [start]
        deadline = time.monotonic() + 30
        while _cancellations(lc, nid) == before:  # writes until the node gives up on it
            assert time.monotonic() < deadline, diag(lc, "the stalled watcher was not cancelled")
            revs.append(c.put("w4/k", big)["revision"])
    s.settimeout(10)
    raw = b""
    while chunk := s.recv(1 << 20):
        raw += chunk
    s.close()
    lines = [json.loads(x) for x in _dechunk(raw).splitlines() if x]
    assert lines[-1]["type"] == "canceled" and lines[-1]["reason"] == "slow_consumer", lines[-1]
    sent = [ln["revision"] for ln in lines if ln["type"] == "put"]
    assert sent == revs[:len(sent)] and len(sent) < len(revs)  # in order, then cut short
    assert lines[-1]["revision"] == sent[-1]


def test_a_stopping_node_ends_its_streams_and_exits_at_once(lc: LocalCluster) -> None:
    """SIGTERM with watch streams open, one of them abandoned by its client (the node learns
    that only when it next writes): every stream ends with `canceled` reason `shutdown` and
    the node exits at once, not after its streams' next progress lines or its HTTP server's
    shutdown timeout."""
    nid = _follower(lc, ready(lc))
    host, port = _addr(lc, nid).rsplit(":", 1)
    request = (f"GET /v1/watch?prefix=w7/&progress_ms=600000 HTTP/1.1\r\nHost: {host}\r\n"
               "Connection: close\r\n\r\n").encode()
    kept, abandoned = socket.create_connection((host, int(port))), \
        socket.create_connection((host, int(port)))
    for s in (kept, abandoned):
        s.sendall(request)
        s.settimeout(10)
        head = b""
        while b"progress" not in head:  # open: its first line came
            chunk = s.recv(1 << 16)
            assert chunk, head
            head += chunk
    abandoned.close()
    t0 = time.monotonic()
    lc.kill(nid, signal.SIGTERM)
    raw = b""
    while chunk := kept.recv(1 << 16):
        raw += chunk
    kept.close()
    proc = lc.nodes[nid].proc
    assert proc is not None
    proc.wait(timeout=15)
    took = time.monotonic() - t0
    assert b'"type":"canceled","reason":"shutdown"' in raw, raw[-300:]
    assert took < 8, f"the node took {took:.1f} s to exit with watch streams open"
    lc.start_node(nid)
    ready(lc)


async def test_leader_killed_mid_stream_every_watcher_resumes_without_gap_or_duplicate(
    lc: LocalCluster,
) -> None:
    leader = ready(lc)
    acked: list[int] = []
    async with Client(lc.addrs, timeout=20) as c:
        start = (await c.put("w5/start", 0))["revision"] + 1
        seen: dict[str, list[tuple[str, str, int]]] = {nid: [] for nid in lc.nodes}
        target: dict[str, int] = {}

        async def watcher(nid: str) -> None:
            # With progress lines: a watcher that saw the last write before the writer
            # finished learns from the next one that it is done.
            async for ev in c.watch(prefix="w5/", start_revision=start, progress=True,
                                    progress_ms=PROGRESS_MS, addr=_addr(lc, nid)):
                if ev["type"] != "progress":
                    seen[nid].append((ev["type"], ev["key"], ev["revision"]))
                if "last" in target and ev["revision"] >= target["last"]:
                    return

        tasks = [asyncio.create_task(watcher(nid)) for nid in lc.nodes]

        async def writer() -> None:
            for i in range(40):
                if i == 15:
                    lc.kill(leader, signal.SIGKILL)
                key = f"w5/{i % 7}"
                res = await (c.delete(key) if i % 5 == 4 else c.put(key, i))
                if res.get("deleted", True):  # deleting an absent key changes nothing
                    acked.append(res["revision"])

        await asyncio.wait_for(writer(), 30)
        target["last"] = max(acked)
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    survivor = next(n for n in lc.nodes if lc.nodes[n].alive())
    wait_until(lc, lambda: lc.status(survivor) is not None, 5, "a live node answers")
    # The kv history of a surviving node, from the same start: the truth to count against.
    status, lines = _stream(lc, survivor, f"prefix=w5/&start_revision={start}&timeout_ms=300")
    truth = [(ln["type"], ln["key"], ln["revision"]) for ln in lines if ln["type"] != "progress"]
    truth = [t for t in truth if t[2] <= target["last"]]
    assert set(acked) <= {t[2] for t in truth}, "an acknowledged write is not in the history"
    for nid, evs in seen.items():
        revs = [e[2] for e in evs]
        assert revs == sorted(set(revs)), f"{nid}'s watcher: duplicate or disorder {revs}"
        assert evs == truth, diag(lc, f"{nid}'s watcher (node killed: {leader}) saw {evs}, "
                                      f"the history has {truth}")
