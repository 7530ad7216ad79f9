"""Cache benchmark: the coherent near cache against plain redis-py on the same Redis, in one
run. Not a test; run by hand:

    python benchmarks/cache_bench.py            # ~1 minute; writes benchmarks/results/cache_bench.*
    python benchmarks/cache_bench.py --quick    # shorter phases

Phases (each `--duration` seconds, closed loop: `c` workers with one operation in flight
each, in one asyncio process, against a real redis-server started here on a free port):

- plain redis-py GET and SET on that Redis, at every concurrency the cache phases use, and
  SET at c=64 through the cache backend's own pipelining (the ceiling for a write-through
  PUT that costs one Redis command).
- in-process (three CacheService objects wired by direct calls, each with its own redis-py
  client to the same Redis): local-hit GET, miss GET (the line is dropped before every read,
  so each read asks the home and loads from Redis or the owner), PUT at c=1, 16 and 64 on
  keys that exist (each worker rewrites its own 200 keys through the three nodes in turn, so
  most PUTs go through a remote home and invalidate the previous writer's copy), PUT of keys
  never written before (their home first invalidates the key at every member), and a Zipf
  workload (90 % GET / 10 % PUT, s = 1.1, 20k keys, near caches sized to a tenth of the key
  space) for its hit ratio.
- HTTP (3 real node processes): hit GET, and PUT at c=1 and c=64, through the API.

Every phase records the CPU it cost per operation (this process; for HTTP also the nodes),
and the run records the load average, because this machine is shared: compare numbers within
one run, not across runs.
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

from raft_bench import _git_rev, _proc_cpu_seconds, _system_busy_seconds  # noqa: E402

from distsync.cache import CacheConfig, RedisBackend  # noqa: E402
from distsync.cache.batching import Batcher  # noqa: E402
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


async def phase(out: dict, name: str, op: Callable[[int, int], Awaitable[None]],
                duration: float, conc: int, pids: tuple[int, ...] = ()) -> float:
    """A closed-loop phase; records ops/s under `name` and what each operation cost in CPU
    (`name`_cpu_us: this process; `name`_nodes_cpu_us: the node processes `pids`)."""
    cpu0, nodes0 = time.process_time(), [_proc_cpu_seconds(p) or 0.0 for p in pids]
    rate, n = await closed_loop(op, duration, conc)
    out[name] = rate
    out[f"{name}_cpu_us"] = round((time.process_time() - cpu0) / max(1, n) * 1e6)
    if pids:
        nodes = sum(_proc_cpu_seconds(p) or 0.0 for p in pids) - sum(nodes0)
        out[f"{name}_nodes_cpu_us"] = round(nodes / max(1, n) * 1e6)
    print(f"  {name}: {rate:,.0f} ops/s", flush=True)
    return rate


def batch_sizes(backends: list[RedisBackend], svcs: list, since: tuple[int, int, int, int]
                ) -> tuple[float, float]:
    """Mean Redis commands per pipeline and keys per invalidation message since `since`."""
    now = counters(backends, svcs)
    return ((now[1] - since[1]) / max(1, now[0] - since[0]),
            (now[3] - since[3]) / max(1, now[2] - since[2]))


def counters(backends: list[RedisBackend], svcs: list) -> tuple[int, int, int, int]:
    return (sum(b._batch.batches for b in backends), sum(b._batch.items for b in backends),
            sum(s._invs.batches for s in svcs), sum(s._invs.items for s in svcs))


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
    backends, svcs = [cl[n].backend for n in ids], [cl[n] for n in ids]
    rng = random.Random(1)
    keys = [f"b:{i}" for i in range(1000)]
    for i, k in enumerate(keys):
        await cl[ids[i % 3]].put(k, VALUE)
    for k in keys:
        await cl["n1"].get(k)
    n1 = cl["n1"]

    async def hit(w: int, i: int) -> None:
        await n1.get(keys[i % 1000])

    await phase(out, "inproc_hit_get_c1", hit, d, 1)
    await phase(out, "inproc_hit_get_c16", hit, d, 16)

    async def miss(w: int, i: int) -> None:
        k = keys[(w * 7919 + i) % 1000]
        n1.near.drop(k)
        await n1.get(k)

    await phase(out, "inproc_miss_get_c1", miss, d, 1)
    await phase(out, "inproc_miss_get_c16", miss, d, 16)

    async def put(w: int, i: int) -> None:
        await cl[ids[(w + i) % 3]].put(f"p:{w}:{i % 200}", VALUE)

    for c in (1, 16, 64):
        await asyncio.gather(*(cl[ids[i % 3]].put(f"p:{w}:{i}", VALUE)  # the keys exist
                               for w in range(c) for i in range(200)))
        before = counters(backends, svcs)
        await phase(out, f"inproc_put_c{c}", put, d, c)
        out[f"inproc_put_c{c}_redis_batch"], out[f"inproc_put_c{c}_inv_batch"] = [
            round(x, 2) for x in batch_sizes(backends, svcs, before)]

    async def put_new(w: int, i: int) -> None:
        await cl[ids[(w + i) % 3]].put(f"new:{w}:{i}", VALUE)

    await phase(out, "inproc_put_new_c64", put_new, d, 64)

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

    await phase(out, "zipf_ops_c16", zipf, d, 16)
    hits = sum(zc[n].metrics.n["hits"] for n in ids)
    misses = sum(zc[n].metrics.n["misses"] for n in ids)
    out["zipf_hit_ratio"] = hits / max(1, hits + misses)
    out["zipf_evictions"] = sum(zc[n].metrics.n["evictions"] for n in ids)
    out["hit_mean_us_in_node"] = n1.metrics.mean_us()["hit"]
    for b in backends + [zc[n].backend for n in ids]:
        await b.close()


async def redis_phases(url: str, d: float, out: dict) -> None:
    be = RedisBackend(url)
    r = be.client
    await r.set("plain:k", VALUE)

    async def get(w: int, i: int) -> None:
        await r.get("plain:k")

    async def set_(w: int, i: int) -> None:
        await r.set(f"plain:{w}:{i % 500}", VALUE)

    for c in (1, 16):
        await phase(out, f"redis_get_c{c}", get, d, c)
    for c in (1, 16, 64):
        await phase(out, f"redis_set_c{c}", set_, d, c)

    async def send(_group: object, keys: list[str]) -> list[object]:
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, VALUE)
        return await pipe.execute()  # type: ignore[no-any-return]

    sets: Batcher[str] = Batcher(send, max_inflight=4)

    async def set_batched(w: int, i: int) -> None:  # batched per loop turn, as the cache is
        await sets.submit(f"plain:{w}:{i % 500}")

    await phase(out, "redis_set_batched_c64", set_batched, d, 64)
    await sets.close()
    await be.close()


async def http_phases(url: str, d: float, out: dict) -> None:
    os.environ["DISTSYNC_CACHE_LEASE_MS"] = "60000"
    with LocalCluster(3, extra_args=["--redis-url", url]) as lc:
        lc.wait_ready(30)
        a = [nd.addr for nd in lc.nodes.values()]
        pids = tuple(nd.proc.pid for nd in lc.nodes.values() if nd.proc is not None)
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
                    if resp.status != 200:
                        out["http_put_errors"] = out.get("http_put_errors", 0) + 1

            await phase(out, "http_hit_get_c16", get, d, 16, pids)
            for c in (1, 64):
                for i in range(100):  # the keys exist
                    await asyncio.gather(*(put(w, i) for w in range(c)))
                await phase(out, f"http_put_c{c}", put, d, c, pids)


def table(out: dict) -> str:
    def f(key: str) -> str:
        v = out.get(key)
        return "-" if v is None or v != v else f"{v:,.0f}"

    def cpu(key: str) -> str:
        own, nodes = out.get(f"{key}_cpu_us"), out.get(f"{key}_nodes_cpu_us")
        if own is None:
            return "-"
        return f"{own:,}" if nodes is None else f"{nodes:,} nodes + {own:,} client"

    rows = [
        ("GET, local hit (in-process), c=1", "inproc_hit_get_c1", "redis_get_c1"),
        ("GET, local hit (in-process), c=16", "inproc_hit_get_c16", "redis_get_c16"),
        ("GET, miss (home + Redis), c=1", "inproc_miss_get_c1", "redis_get_c1"),
        ("GET, miss (home + Redis), c=16", "inproc_miss_get_c16", "redis_get_c16"),
        ("PUT (coherent write-through), c=1", "inproc_put_c1", "redis_set_c1"),
        ("PUT (coherent write-through), c=16", "inproc_put_c16", "redis_set_c16"),
        ("PUT (coherent write-through), c=64", "inproc_put_c64", "redis_set_c64"),
        ("PUT of new keys (home broadcasts), c=64", "inproc_put_new_c64", "redis_set_c64"),
        ("PUT, c=64, vs SETs batched per loop turn into one pipeline", "inproc_put_c64", "redis_set_batched_c64"),
        ("GET hit over HTTP (3 processes), c=16", "http_hit_get_c16", "redis_get_c16"),
        ("PUT over HTTP (3 processes), c=1", "http_put_c1", "redis_set_c1"),
        ("PUT over HTTP (3 processes), c=64", "http_put_c64", "redis_set_c64"),
    ]
    lines = ["| operation | distsync cache ops/s | CPU us/op | plain redis-py ops/s (GET or "
             "SET, same c) | CPU us/op |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {label} | {f(ours)} | {cpu(ours)} | {f(redis)} | {cpu(redis)} |"
              for label, ours, redis in rows]
    lines.append("")
    batches = ", ".join(
        f"c={c}: {out.get(f'inproc_put_c{c}_redis_batch')} operations per Redis call, "
        f"{out.get(f'inproc_put_c{c}_inv_batch')} keys per invalidation message"
        for c in (1, 16, 64))
    lines.append(f"In-process PUT batching: {batches}.")
    lines.append("")
    lines.append(f"Zipf (s=1.1, 20k keys, caches sized for ~10 % of the keys, 90/10 GET/PUT, "
                 f"3 nodes, c=16): hit ratio **{out['zipf_hit_ratio']:.1%}**, "
                 f"{f('zipf_ops_c16')} ops/s, "
                 f"{out['zipf_evictions']} evictions. Mean in-node hit latency "
                 f"{out['hit_mean_us_in_node']} us.")
    if out.get("http_put_errors"):
        lines.append(f"HTTP PUT errors: {out['http_put_errors']}.")
    lines.append("")
    lines.append(f"Load average before/after the run: {out['loadavg_before']} / "
                 f"{out['loadavg_after']}; the whole machine was busy "
                 f"{out['machine_busy_cores']:.2f} of {out['cpus']} cores on average.")
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
    out: dict = {"duration_s": d, "cpus": os.cpu_count(), "python": sys.version.split()[0],
                 "git_rev": _git_rev(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    busy0, t0 = _system_busy_seconds() or 0.0, time.monotonic()
    with RedisServer() as rs:
        await redis_phases(rs.url, d, out)
        await inproc_phases(rs.url, d, out)
        if not args.no_http:
            await http_phases(rs.url, d, out)
    out["machine_busy_cores"] = ((_system_busy_seconds() or 0.0) - busy0) / (time.monotonic() - t0)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
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
