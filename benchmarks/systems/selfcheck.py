"""A two-second smoke run of one adapter, for `python -m benchmarks.systems.<peer>`: start,
closed-loop puts at c=1 and c=16, print ops/s and p50, stop.

It exists to see that an adapter works and is in the right order of magnitude without
running the whole side-by-side harness; the numbers it prints are not the benchmark.
"""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp

from benchmarks.harness import pct
from benchmarks.systems.base import System


async def _closed_loop(
    system: System, session: aiohttp.ClientSession, workers: int, seconds: float, tag: str
) -> tuple[int, list[float], int]:
    """`workers` tasks, one request in flight each, for `seconds`; returns (ops, latencies, errors)."""
    op = system.op("put")
    lat: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        for i in range(1 << 62):
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                await op(session, w, f"selfcheck/{tag}/w{w}/{i}")
            except Exception:  # counted, not fatal: the smoke run reports it
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return len(lat), lat, errors


async def run(system: System, seconds: float = 2.0, concurrencies: tuple[int, ...] = (1, 16)) -> None:
    print(f"{system.name}: load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    try:
        ready = await system.start()
        print(f"{system.name}: {system.nodes} nodes ready in {ready:.2f} s; "
              f"leader {await system.leader()}; durability: {system.durability}")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for c in concurrencies:
                await system.prepare("put", session, c)
                n, lat, errors = await _closed_loop(system, session, c, seconds, f"c{c}")
                print(f"  put c={c:<3} {n / seconds:8.0f} ops/s   p50 {pct(lat, 50) * 1e3:6.2f} ms"
                      f"   errors {errors}")
    finally:
        await system.stop()


def main(system: System) -> None:
    asyncio.run(run(system))
