"""`distsync demo`: a local cluster doing real work, including losing its leader.

Starts N node processes on loopback, writes keys concurrently, reads them back
linearizably, SIGKILLs the leader, keeps writing through the failover, restarts the dead node
and checks that every acknowledged write is on every node. Exit status 0 means it all held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import click

from ..client import Client
from ..local import LocalCluster
from .locks import run_locks_demo as _locks_demo
from .run import run_scenario


async def _write_all(client: Client, prefix: str, n: int, concurrency: int = 16) -> list[str]:
    sem = asyncio.Semaphore(concurrency)
    done: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            key = f"{prefix}/{i:05d}"
            await client.put(key, {"i": i, "at": time.time()})
            done.append(key)

    await asyncio.gather(*(one(i) for i in range(n)))
    return done


async def _demo(lc: LocalCluster, writes: int) -> int:
    async with Client(lc.addrs) as c:
        t0 = time.perf_counter()
        keys = await _write_all(c, "demo/before", writes)
        dt = time.perf_counter() - t0
        click.echo(f"wrote {len(keys)} keys in {dt:.2f}s ({len(keys) / dt:.0f} writes/s, 16 clients)")
        missing = [k for k in keys if await c.get_value(k) is None]
        click.echo(f"linearizable reads: {len(keys) - len(missing)}/{len(keys)} found")

        leader = lc.leader()
        click.echo(f"\nSIGKILL leader {leader} while writing ...")
        writer = asyncio.create_task(_write_all(c, "demo/during", writes))
        await asyncio.sleep(0.05)
        t_kill = time.perf_counter()
        lc.kill(leader)
        more = await writer
        new_leader = await asyncio.to_thread(
            lc.leader, 15.0, [n for n in lc.nodes if n != leader]
        )
        click.echo(f"new leader {new_leader}; {len(more)} writes acknowledged across the "
                   f"failover ({time.perf_counter() - t_kill:.2f}s)")
        click.echo(f"restarting {leader} from its data directory ...")
        lc.start_node(leader)
        await asyncio.to_thread(lc.wait_ready, 30.0)
        want = {k for k in keys + more}
        for nid in lc.nodes:
            st = await c.status(addr=lc.nodes[nid].addr)
            click.echo(f"  {nid}: applied {st['applied']} of commit {st['commit']}")
        lost = [k for k in sorted(want) if await c.get_value(k) is None]
        click.echo(f"\nacknowledged writes present after failover: {len(want) - len(lost)}/"
                   f"{len(want)}")
        return 1 if (missing or lost) else 0


def run_demo(nodes: int = 3, writes: int = 200, **_: object) -> int:
    return run_scenario(nodes, lambda lc: _demo(lc, writes), "every acknowledged write survived")


# Scenario name -> function(nodes=..., writes=...) returning an exit status. Each service adds
# its own scenario (one line), implemented in its own module; SUMMARIES is what `--help` lists.
SCENARIOS: dict[str, Callable[..., int]] = {"kv": run_demo}
SCENARIOS["locks"] = _locks_demo
SUMMARIES = {
    "kv": "writes, linearizable reads, SIGKILL of the leader under load, restart, and a check "
          "that every acknowledged write survived (the default)",
    "locks": "an exclusive lock with fencing tokens, a FIFO waiter, a deadlock refused with "
             "the cycle named, and measured acquire/release latencies",
    "queue": "FIFO enqueue/dequeue/ack, a redelivery after the visibility timeout, and a "
             "message dead-lettered after max_deliveries",
    "cache": "near caches on every node kept coherent (MESI) in front of redis-server, or "
             "the embedded store when redis-server is not installed",
}


def _cache_demo(**kw: object) -> int:
    from .cache import run_cache_demo

    return run_cache_demo(**kw)


SCENARIOS["cache"] = _cache_demo


def _queue_demo(**kw: object) -> int:
    from .queue import run_queue_demo

    return run_queue_demo(**kw)  # type: ignore[arg-type]


SCENARIOS["queue"] = _queue_demo
