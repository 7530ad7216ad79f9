"""`distsync demo locks`: the lock service on a local cluster of real node processes.

1. Owner A acquires `resource-1` exclusively (its fencing token is printed).
2. Owner B asks for it too and waits in the replicated FIFO queue (the queue is shown).
3. A releases; the lock goes to B, the first waiter, with a higher token.
4. A and B each hold one lock and A waits for B's: B asking for A's lock would close the cycle
   and is refused at once with 409 `deadlock` naming it; nothing changes.
5. Statistics, measured here: `--writes` uncontended acquire/release pairs, then 8 sessions
   contending on 2 locks, with average and p99 latencies and the server's own counters.

Exit status 0 means every check held (FIFO order, increasing tokens, the deadlock refused).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request
from typing import Any

import click

from ..client import Client
from ..client.locks import Deadlock, Session
from ..local import LocalCluster
from .run import run_scenario


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))] if s else 0.0


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    return (f"avg {statistics.fmean(xs) * 1000:.2f} ms, p50 {_pct(xs, 0.5) * 1000:.2f} ms, "
            f"p99 {_pct(xs, 0.99) * 1000:.2f} ms")


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, what: str) -> None:
        click.echo(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failed.append(what)


async def _queue(c: Client, lock: str) -> list[str]:
    info = await c.request_or_raise("GET", f"/v1/locks/{lock}")
    return [f"{w['session']} ({w['mode']})" for w in info["waiters"]]


async def _until_waiting(c: Client, lock: str, n: int) -> None:
    for _ in range(200):
        if len(await _queue(c, lock)) >= n:
            return
        await asyncio.sleep(0.02)


async def _scenario(c: Client, check: Checks) -> None:
    a, b = c.session(ttl=10, name="owner-A"), c.session(ttl=10, name="owner-B")
    await a.open()
    await b.open()
    try:
        click.echo(f"sessions: A={a.id}, B={b.id} (TTL 10 s, kept alive in the background)")
        ga = await a.acquire("resource-1", mode="exclusive")
        click.echo(f"A acquired resource-1 exclusively, fencing token {ga.token}")
        waiting = asyncio.create_task(b.acquire("resource-1", wait=30))
        await _until_waiting(c, "resource-1", 1)
        q = await _queue(c, "resource-1")
        click.echo(f"B asks for resource-1 and waits; queue: {q}")
        check(q == [f"{b.id} (exclusive)"] and not waiting.done(), "B waits in the FIFO queue")
        await a.release("resource-1")
        gb = await asyncio.wait_for(waiting, 30)
        click.echo(f"A released; B got resource-1 with token {gb.token}")
        check(gb.token > ga.token, "the lock went to the waiter with a higher token")

        click.echo("\ndeadlock: A holds resource-2, B holds resource-1; A waits for resource-1")
        await a.acquire("resource-2")
        a_waits = asyncio.create_task(a.acquire("resource-1", wait=30))
        await _until_waiting(c, "resource-1", 1)
        try:
            await b.acquire("resource-2", wait=30)
            check(False, "B's request for resource-2 is refused as a deadlock")
        except Deadlock as e:
            click.echo(f"B asks for resource-2 -> {e.status} {e.code}: cycle {e.cycle} "
                       f"(waiting on {e.locks})")
            check(e.cycle == [b.id, a.id], "deadlock detected, the cycle names B and A")
        report = await c.request_or_raise("GET", "/v1/locks/deadlocks")
        check(report["cycles"] == [], "no cycle in the wait-for graph (the refused acquire left none)")
        await b.release("resource-1")
        await asyncio.wait_for(a_waits, 30)
        await a.release("resource-1")
        await a.release("resource-2")
    finally:
        await a.close()
        await b.close()


async def _stats(c: Client, rounds: int) -> dict[str, Any]:
    acq: list[float] = []
    rel: list[float] = []
    async with c.session(ttl=10, name="stats") as s:
        for i in range(rounds):
            t0 = time.perf_counter()
            await s.acquire(f"demo-{i % 8}")
            t1 = time.perf_counter()
            await s.release(f"demo-{i % 8}")
            acq.append(t1 - t0)
            rel.append(time.perf_counter() - t1)
    sessions = [Session(c, ttl=10, name=f"contender-{i}") for i in range(8)]
    for s in sessions:
        await s.open()
    contended: list[float] = []
    tokens: dict[str, list[int]] = {"hot-0": [], "hot-1": []}
    per = max(5, rounds // 8)

    async def worker(s: Session, k: int) -> None:
        for j in range(per):
            lock = f"hot-{(k + j) % 2}"
            t0 = time.perf_counter()
            g = await s.acquire(lock, wait=30)
            contended.append(time.perf_counter() - t0)
            tokens[lock].append(g.token)
            await s.release(lock)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(s, k) for k, s in enumerate(sessions)))
    elapsed = time.perf_counter() - t0
    for s in sessions:
        await s.close()
    return {"acquire": acq, "release": rel, "contended": contended, "tokens": tokens,
            "elapsed": elapsed}


def _counters(lc: LocalCluster) -> dict[str, float]:
    """The leader's lock counters, from its /metrics."""
    url = lc.nodes[lc.leader()].url + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("distsync_locks_") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _demo(lc: LocalCluster, rounds: int) -> int:
    check = Checks()
    async with Client(lc.addrs) as c:
        await c.find_leader()
        await _scenario(c, check)
        click.echo(f"\nstatistics ({rounds} uncontended acquire/release pairs, then 8 sessions "
                   "contending on 2 locks)")
        st = await _stats(c, rounds)
        n_cont = len(st["contended"])
        click.echo(f"  acquired {len(st['acquire']) + n_cont}, released "
                   f"{len(st['release']) + n_cont}")
        click.echo(f"  uncontended acquire: {_ms(st['acquire'])}")
        click.echo(f"  uncontended release: {_ms(st['release'])}")
        click.echo(f"  contended acquire (waiting included): {_ms(st['contended'])}; "
                   f"{n_cont / st['elapsed']:.0f} grants/s")
        for lock, toks in st["tokens"].items():
            check(toks == sorted(toks) and len(set(toks)) == len(toks),
                  f"{lock}: {len(toks)} exclusive grants, tokens unique and increasing")
        counters = await asyncio.to_thread(_counters, lc)
        click.echo("  leader's counters: " + ", ".join(
            f"{k.removeprefix('distsync_locks_')}={v:.0f}" for k, v in sorted(counters.items())
            if k.endswith("_total")))
        check(counters.get("distsync_locks_deadlocks_total", 0) >= 1,
              "the deadlock was counted")
    return 1 if check.failed else 0


def run_locks_demo(nodes: int = 3, writes: int = 200, **_: object) -> int:
    return run_scenario(nodes, lambda lc: _demo(lc, max(1, writes)), "locks behaved")
