"""Cache benchmark: the coherent near cache against plain redis-py on the same Redis, in one
run. Not a test; run by hand:

    python benchmarks/cache_bench.py            # ~1 minute; writes benchmarks/results/cache_bench.*
    python benchmarks/cache_bench.py --quick    # shorter phases

Phases (each `--duration` seconds, closed loop, one asyncio process, a real redis-server
started here on a free port):

- in-process (three CacheService objects wired by direct calls, each with its own redis-py
  client to the same Redis): local-hit GET, miss GET (the line is dropped before every read,
  so each read asks the home and loads from Redis or the owner), PUT (random keys through
  random nodes), and a Zipf workload (90 % GET / 10 % PUT, s = 1.1, 20k keys, near caches
  sized to a tenth of the key space) for its hit ratio.
- plain redis-py GET and SET on the same Redis, same concurrency.
- HTTP (3 real node processes): hit GET and PUT through the API, for the end-to-end cost.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from distsync.cache import CacheConfig, RedisBackend  # noqa: E402
from distsync.cache.inproc import InProcCluster  # noqa: E402
from distsync.cache.redis_proc import RedisServer  # noqa: E402
from distsync.local import LocalCluster  # noqa: E402

VALUE = b"x" * 200


async def closed_loop(op: Callable[[int, int], Awaitable[None]], duration: float,
                      conc: int) -> tuple[float, int]:
    """Run `op(worker, i)` in `conc` workers for `duration` s; returns (ops/s, ops)."""
    stop = time.perf_counter() + duration
    counts = [0] * conc

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            await op(w, i)
            i += 1
        counts[w] = i

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    n = sum(counts)
    return n / (time.perf_counter() - t0), n


def zipf_sampler(n: int, s: float, rng: random.Random):  # type: ignore[no-untyped-def]
    cum, total = [], 0.0
    for k in range(1, n + 1):
        total += 1 / k**s
        cum.append(total)
    return lambda: bisect.bisect_left(cum, rng.random() * total)


async def inproc_phases(url: str, d: float, out: dict) -> None:
    ids = ["n1", "n2", "n3"]
    cl = InProcCluster(ids, backend=RedisBackend(url), cfg=CacheConfig(lease_ms=60_000),
                       roundtrip=True)
    for nid in ids:  # each node its own redis-py client, as separate processes would have
        cl[nid].backend = RedisBackend(url)
    rng = random.Random(1)
    keys = [f"b:{i}" for i in range(1000)]
    for i, k in enumerate(keys):
        await cl[ids[i % 3]].put(k, VALUE)
    for k in keys:
        await cl["n1"].get(k)
    n1 = cl["n1"]

    async def hit(w: int, i: int) -> None:
        await n1.get(keys[i % 1000])

    out["inproc_hit_get_c1"] = (await closed_loop(hit, d, 1))[0]
    out["inproc_hit_get_c16"] = (await closed_loop(hit, d, 16))[0]

    async def miss(w: int, i: int) -> None:
        k = keys[(w * 7919 + i) % 1000]
        n1.near.drop(k)
        await n1.get(k)

    out["inproc_miss_get_c1"] = (await closed_loop(miss, d, 1))[0]
    out["inproc_miss_get_c16"] = (await closed_loop(miss, d, 16))[0]

    async def put(w: int, i: int) -> None:
        await cl[ids[(w + i) % 3]].put(f"p:{w}:{i % 500}", VALUE)

    out["inproc_put_c1"] = (await closed_loop(put, d, 1))[0]
    out["inproc_put_c16"] = (await closed_loop(put, d, 16))[0]

    # Zipf: near caches sized to ~10 % of the key space
    nkeys = 20_000
    zcfg = CacheConfig(lease_ms=60_000, max_bytes=nkeys // 10 * (200 + 110))
    zc = InProcCluster(ids, backend=RedisBackend(url), cfg=zcfg)
    for nid in ids:
        zc[nid].backend = RedisBackend(url)
    pipe = zc[ids[0]].backend.client.pipeline(transaction=False)
    for i in range(nkeys):  # preload through the backend format (version 1)
        pipe.set(f"dsc:{{z:{i}}}:v", b"1:" + VALUE)
        pipe.set(f"dsc:{{z:{i}}}:c", 1)
    await pipe.execute()
    sample = zipf_sampler(nkeys, 1.1, rng)

    async def zipf(w: int, i: int) -> None:
        node = zc[ids[(w + i) % 3]]
        k = f"z:{sample()}"
        if rng.random() < 0.1:
            await node.put(k, VALUE)
        else:
            await node.get(k)

    out["zipf_ops_c16"] = (await closed_loop(zipf, d, 16))[0]
    hits = sum(zc[n].metrics.n["hits"] for n in ids)
    misses = sum(zc[n].metrics.n["misses"] for n in ids)
    out["zipf_hit_ratio"] = hits / max(1, hits + misses)
    out["zipf_evictions"] = sum(zc[n].metrics.n["evictions"] for n in ids)
    out["hit_mean_us_in_node"] = n1.metrics.mean_us()["hit"]


async def redis_phases(url: str, d: float, out: dict) -> None:
    be = RedisBackend(url)
    r = be.client
    await r.set("plain:k", VALUE)

    async def get(w: int, i: int) -> None:
        await r.get("plain:k")

    async def set_(w: int, i: int) -> None:
        await r.set(f"plain:{w}:{i % 500}", VALUE)

    out["redis_get_c1"] = (await closed_loop(get, d, 1))[0]
    out["redis_get_c16"] = (await closed_loop(get, d, 16))[0]
    out["redis_set_c1"] = (await closed_loop(set_, d, 1))[0]
    out["redis_set_c16"] = (await closed_loop(set_, d, 16))[0]
    await be.close()


async def http_phases(url: str, d: float, out: dict) -> None:
    os.environ["DISTSYNC_CACHE_LEASE_MS"] = "60000"
    with LocalCluster(3, extra_args=["--redis-url", url]) as lc:
        lc.wait_ready(30)
        a = [nd.addr for nd in lc.nodes.values()]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64)
        ) as s:
            for i in range(100):
                async with s.put(f"http://{a[i % 3]}/v1/cache/h:{i}", data=VALUE) as resp:
                    assert resp.status == 200
                async with s.get(f"http://{a[0]}/v1/cache/h:{i}") as resp:
                    await resp.read()

            async def get(w: int, i: int) -> None:
                async with s.get(f"http://{a[0]}/v1/cache/h:{i % 100}") as resp:
                    await resp.read()

            async def put(w: int, i: int) -> None:
                async with s.put(f"http://{a[(w + i) % 3]}/v1/cache/hp:{w}:{i % 100}",
                                 data=VALUE) as resp:
                    await resp.read()

            out["http_hit_get_c16"] = (await closed_loop(get, d, 16))[0]
            out["http_put_c16"] = (await closed_loop(put, d, 16))[0]


def table(out: dict) -> str:
    f = {k: (f"{v:,.0f}" if isinstance(v, float) and v > 10 else v) for k, v in out.items()}
    rows = [
        ("GET, local hit (in-process), c=1", f["inproc_hit_get_c1"], f["redis_get_c1"]),
        ("GET, local hit (in-process), c=16", f["inproc_hit_get_c16"], f["redis_get_c16"]),
        ("GET, miss (home + Redis), c=1", f["inproc_miss_get_c1"], f["redis_get_c1"]),
        ("GET, miss (home + Redis), c=16", f["inproc_miss_get_c16"], f["redis_get_c16"]),
        ("PUT (coherent write-through), c=1", f["inproc_put_c1"], f["redis_set_c1"]),
        ("PUT (coherent write-through), c=16", f["inproc_put_c16"], f["redis_set_c16"]),
        ("GET hit over HTTP (3 processes), c=16", f["http_hit_get_c16"], f["redis_get_c16"]),
        ("PUT over HTTP (3 processes), c=16", f["http_put_c16"], f["redis_set_c16"]),
    ]
    lines = ["| operation | distsync cache ops/s | plain redis-py ops/s (GET or SET) |",
             "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append("")
    lines.append(f"Zipf (s=1.1, 20k keys, caches sized for ~10 % of the keys, 90/10 GET/PUT, "
                 f"3 nodes, c=16): hit ratio **{out['zipf_hit_ratio']:.1%}**, "
                 f"{f['zipf_ops_c16']} ops/s, "
                 f"{out['zipf_evictions']} evictions. Mean in-node hit latency "
                 f"{out['hit_mean_us_in_node']} us.")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    d = 1.5 if args.quick else args.duration
    out: dict = {"duration_s": d, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with RedisServer() as rs:
        await redis_phases(rs.url, d, out)
        await inproc_phases(rs.url, d, out)
        if not args.no_http:
            await http_phases(rs.url, d, out)
        else:
            out["http_hit_get_c16"] = out["http_put_c16"] = float("nan")
    md = table(out)
    print(md)
    if not args.no_write:
        res = Path(args.out)
        res.mkdir(parents=True, exist_ok=True)
        (res / "cache_bench.json").write_text(json.dumps(out, indent=1) + "\n")
        (res / "cache_bench.md").write_text(
            f"# cache_bench ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, shared "
            f"machine, {d:.1f} s per phase)\n\n{md}\n"
        )


if __name__ == "__main__":
    asyncio.run(main())
