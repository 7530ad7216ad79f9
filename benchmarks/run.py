#!/usr/bin/env python3
"""distsync beside its peers, in one run on one machine: `python benchmarks/run.py [--quick]`
(also `distsync bench`). Not a test; see benchmarks/README.md, "Side by side (run.py)".

It starts every system itself on loopback (distsync through `LocalCluster`, etcd and
PySyncObj through their adapters in `systems/`, Redis as the non-replicated baseline), runs
each workload for a fixed time at each concurrency with the same closed-loop harness and the
same aiohttp session, and prints one table per workload with the ratio distsync/peer measured
in the same run. Results go to `results/run.{json,md}` and `results/*.png`.

A peer that is missing is installed by `setup_peers.py` first; one that still cannot run,
or fails mid-run, gets its error printed in the table in place of numbers. Ctrl-C or SIGTERM
stops every process the run started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

from raft_bench import _git_rev  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    Result,
    _clean,
    closed_loop,
    comparison_rows,
    describe,
    describe_machine,
    machine_summary,
    ratio,
    render,
    rounds_rows,
    rss_of,
)
from benchmarks.interp import describe_python  # noqa: E402
from benchmarks.peers import PEERS, make_peer, setup_peers  # noqa: E402
from benchmarks.report import (  # noqa: E402
    FAILOVER_NOTE,
    failover_rows,
    resources_rows,
    scaling_rows,
    write_results,
)
from benchmarks.systems.base import Unsupported  # noqa: E402
from benchmarks.systems.distsync import Distsync  # noqa: E402
from benchmarks.systems.redis import Redis  # noqa: E402

SECTIONS = ("put", "get", "lock", "queue", "cache", "resources", "failover", "scaling")
ALL_SYSTEMS = ("distsync", "etcd", "pysyncobj", "floor", "redis")
QUEUE_PARTITIONS = 16

QUEUE_NOTE = (
    "Redis is one node with no replica: a baseline, not a peer with the same guarantees. "
    "Dequeue + ack: a dequeue request, then an ack request (Redis: LMOVE to a processing "
    "list, then LREM), on a pre-filled queue with max(16, c) partitions in distsync; "
    "each worker is one consumer.")

TITLES = {
    "put": ("Replicated PUT (100-byte value, unique keys)", "ops/s"),
    "get": ("Linearizable GET", "ops/s"),
    "lock": ("Lock acquire + release (uncontended, one lock per worker)", "pairs/s"),
    "queue_enqueue_1": ("Queue enqueue, 1 message per request", "msgs/s"),
    "queue_enqueue_100": ("Queue enqueue, 100 messages per request", "msgs/s"),
    "queue_dequeue_ack_1": ("Queue dequeue + ack, 1 message per request", "msgs/s"),
    "queue_dequeue_ack_100": ("Queue dequeue + ack, 100 messages per request", "msgs/s"),
    "cache_get": ("Cache GET, hit (distsync over HTTP; redis-py GET)", "ops/s"),
    "cache_put": ("Cache PUT (distsync coherent write-through over HTTP; redis-py SET)",
                  "ops/s"),
}


class Bench:
    """What every section needs: the options, the started systems, the shared aiohttp
    session, and the report being filled in."""

    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.systems: dict[str, Any] = {}  # name -> started system
        self.down: dict[str, str] = {}  # name -> why it is not running
        self.session: aiohttp.ClientSession | None = None
        self.run_id = f"{int(time.time())}-{os.getpid()}"
        self.report: dict[str, Any] = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": _git_rev(),
            "config": {k: (str(v) if isinstance(v, Path) else v)
                       for k, v in vars(args).items()},
            "systems": {}, "workloads": {}, "errors": [],
        }

    def wanted(self, name: str) -> bool:
        return name in self.args.systems

    def say(self, text: str) -> None:
        print(text, flush=True)


# ------------------------------------------------------------------------------ peers


async def start_system(b: Bench, name: str, system: Any) -> None:
    b.say(f"starting {name} ...")
    try:
        ready = await system.start()
    except Exception as e:  # noqa: BLE001 - the tables say so
        b.down[name] = f"did not start: {describe(e)}"
        b.report["systems"][name] = {"error": b.down[name]}
        b.systems[name] = system  # still stopped at the end: it may have left processes
        b.say(f"  {name}: {b.down[name]}")
        return
    b.systems[name] = system
    await asyncio.sleep(0.5)  # let the just-started servers settle before measuring RSS
    b.report["systems"][name] = {
        "name": system.name, "nodes": system.nodes, "durability": system.durability,
        "start_to_ready_s": round(ready, 3), "rss_idle_mb": rss_of(system.pids()),
    }
    b.say(f"  {system.name}: {system.nodes} node(s) ready in {ready:.2f} s")


async def start_all(b: Bench) -> None:
    a = b.args
    peers = [n for n in PEERS if b.wanted(n) and set(a.only) & {"put", "get", "lock",
                                                                  "failover", "resources"}]
    needs_redis = bool(set(a.only) & {"queue", "cache"})
    setup_peers(b, peers, needs_redis)
    if needs_redis:  # the cache's backend for distsync, and the baseline when wanted
        await start_system(b, "redis", Redis("everysec", b.work / "redis-everysec"))
    if b.wanted("distsync"):
        redis = b.systems.get("redis")
        url = redis.url if redis is not None and "redis" not in b.down else None
        await start_system(b, "distsync", Distsync(a.nodes, b.work / "distsync", url,
                                                   python=a.node_python))
    for n in peers:
        if n not in b.down:
            try:
                peer = make_peer(n, a.nodes, b.work,
                                 str(a.node_python) if a.node_python else None)
            except Exception as e:  # noqa: BLE001
                b.down[n] = f"adapter failed: {describe(e)}"
                continue
            await start_system(b, n, peer)
    if needs_redis and b.wanted("redis") and "queue" in a.only:
        await start_system(b, "redis-always", Redis("always", b.work / "redis-always"))


async def stop_all(b: Bench) -> None:
    for name, system in list(b.systems.items()):
        try:
            await system.stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the others
            print(f"stopping {name}: {describe(e)}", file=sys.stderr)
    b.systems.clear()


# --------------------------------------------------------------------------- sections


async def measure(b: Bench, name: str, workload: str, c: int, keep_cdf: bool = False,
                  system: Any = None) -> Result:
    """One closed-loop phase of `workload` on one system, or the reason it cannot run."""
    system = system or b.systems.get(name)
    label = getattr(system, "name", name)
    if name in b.down:
        return Result.failed(label, workload, c, b.down[name])
    assert b.session is not None
    try:
        op = system.op(workload)
        await system.prepare(workload, b.session, c)
    except Unsupported as e:
        return Result.failed(label, workload, c, f"not supported: {e}")
    except Exception as e:  # noqa: BLE001 - a peer that broke
        return Result.failed(label, workload, c, describe(e))
    prefix = f"bench/{b.run_id}/{workload}/{label}/c{c}"
    session = b.session

    async def step(w: int, i: int) -> None:
        await op(session, w, f"{prefix}/w{w}/{i}")

    r = await closed_loop(step, c, b.args.duration, b.args.warmup, system.pids(), keep_cdf)
    r.system, r.workload = label, workload
    return r


def add_section(b: Bench, key: str, results: list[Result], note: str = "",
                extra: dict[int, tuple[str, float | None]] | None = None) -> None:
    title, unit = TITLES[key]
    b.report["workloads"][key] = {"title": title, "unit": unit, "note": note,
                                  "results": results,
                                  "table": comparison_rows(results, unit, extra_ratio=extra)}
    b.say(f"\n== {title}" + (f"\n{note}" if note else ""))
    b.say(render(b.report["workloads"][key]["table"]))


async def kv_section(b: Bench, workload: str, names: list[str], note: str) -> None:
    """Interleaved per concurrency, so load from other tenants hits every system alike.
    With --rounds N the whole interleaving runs N times: the main table is round 1 (no
    choosing), and a second table gives every round's ratio and their median."""
    rounds: list[list[Result]] = []
    for i in range(b.args.rounds):
        results = []
        for c in b.args.concurrency:
            for n in names:
                tag = f" (round {i + 1}/{b.args.rounds})" if b.args.rounds > 1 else ""
                b.say(f"  {workload} c={c} {n}{tag} ...")
                results.append(await measure(b, n, workload, c,
                                             keep_cdf=workload == "put" and i == 0))
        rounds.append(results)
    add_section(b, workload, rounds[0], note)
    if len(rounds) > 1:
        sec = b.report["workloads"][workload]
        sec["rounds"] = rounds
        sec["rounds_table"] = rounds_rows(rounds, sec["unit"])
        b.say(f"-- {workload}: {len(rounds)} rounds, interleaved\n"
              + render(sec["rounds_table"]))


async def queue_section(b: Bench) -> None:
    """queue_bench's adapters (distsync's Client; a Redis list with LMOVE + LREM as ack)
    at every concurrency, one fresh queue per phase."""
    import queue_bench as qb

    from distsync.client import Client

    adapters: dict[str, Any] = {}
    client = None
    if "distsync" in b.systems and "distsync" not in b.down:
        ds = b.systems["distsync"]
        client = Client(ds.lc.addrs, timeout=60, request_timeout=30)
        await client.__aenter__()
        await client.find_leader()
        adapters["distsync"] = qb.Distsync(client, list(ds.pids().values()))
    for n in ("redis-always", "redis"):
        if b.wanted("redis") and n in b.systems and n not in b.down:
            adapters[n] = b.systems[n].queue()
    names = ["distsync", *(n for n in ("redis-always", "redis") if b.wanted("redis"))]
    a = b.args
    try:
        for kind in ("enqueue", "dequeue_ack"):
            for batch in (1, 100):
                key = f"queue_{kind}_{batch}"
                results = []
                for c in a.concurrency:
                    for n in names:
                        b.say(f"  {key} c={c} {n} ...")
                        results.append(await queue_phase(b, n, adapters.get(n), kind, batch, c,
                                                         qb))
                add_section(b, key, results, QUEUE_NOTE)
    finally:
        if client is not None:
            await client.__aexit__(None, None, None)


async def queue_phase(b: Bench, name: str, ad: Any, kind: str, batch: int, c: int,
                      qb: Any) -> Result:
    label = b.systems[name].name if name in b.systems else name
    if ad is None:
        return Result.failed(label, f"queue_{kind}", c, b.down.get(name, "not running"))
    a = b.args
    # distsync balances consumers over partitions: at least one partition per consumer.
    parts = max(QUEUE_PARTITIONS, c)
    try:
        q = ad.fresh(parts)
        await ad.setup(q, parts)
        if kind == "dequeue_ack":  # consumers known before the fill, so placement settles
            for w in range(c):
                await ad.register(q, f"w{w}")
            rate = a.queue_fill_rate if batch > 1 else a.queue_fill_rate / 5
            await fill_queue(ad, q, int(rate * (a.duration + a.warmup)), qb.BODY)
    except Exception as e:  # noqa: BLE001
        return Result.failed(label, f"queue_{kind}", c, describe(e))
    short = [0]

    async def step(w: int, i: int) -> int:
        if kind == "enqueue":
            if batch == 1:
                await ad.put(q, qb.BODY)
            else:
                await ad.put_many(q, [qb.BODY] * batch)
            return batch
        got, _ = await ad.take(q, f"w{w}", batch)
        if len(got) < batch:
            short[0] += 1
        return len(got)

    r = await closed_loop(step, c, a.duration, a.warmup, b.systems[name].pids())
    r.system, r.workload = label, f"queue_{kind}_{batch}"
    if short[0]:
        r.notes.append(f"{short[0]} dequeues returned fewer than {batch} messages (the "
                       "consumer held no partition with messages, or the queue ran low)")
    try:
        await ad.cleanup(q)
    except Exception as e:  # noqa: BLE001
        r.notes.append(f"cleanup failed: {describe(e)}")
    return r


async def fill_queue(ad: Any, q: str, n: int, body: Any, chunk: int = 500) -> None:
    """`n` messages in batches of `chunk`, 16 requests in flight."""
    sem = asyncio.Semaphore(16)

    async def one(k: int) -> None:
        async with sem:
            await ad.put_many(q, [body] * k)

    await asyncio.gather(*(one(min(chunk, n - i)) for i in range(0, n, chunk)))


async def cache_section(b: Bench) -> None:
    names = ["distsync"] + (["redis"] if b.wanted("redis") else [])
    get_res, put_res = [], []
    for c in b.args.concurrency:
        for n in names:
            b.say(f"  cache c={c} {n} ...")
            get_res.append(await measure(b, n, "cache_get", c))
            put_res.append(await measure(b, n, "cache_put", c))
    etcd_get = {r.concurrency: r for r in b.report["workloads"].get("get", {}).get("results", [])
                if r.system == "etcd" and r.error is None}
    ours = {r.concurrency: r for r in get_res if r.system == "distsync" and r.error is None}
    extra = {c: ("distsync hit GET / etcd linearizable GET",
                 ratio(ours[c].per_s, etcd_get[c].per_s) if c in ours and c in etcd_get
                 else None) for c in b.args.concurrency}
    add_section(b, "cache_get", get_res, "Plain redis-py GET/SET on the same Redis that backs "
                "distsync's cache (appendfsync everysec).", extra)
    add_section(b, "cache_put", put_res)
    b.report["cache_in_node"] = await cache_in_node(b)


async def cache_in_node(b: Bench) -> dict[str, Any]:
    """A hit inside the node, without HTTP: the node's own mean (from /v1/cache/stats, over
    the hit phase above) and cache_bench's in-process cluster on the same Redis."""
    out: dict[str, Any] = {}
    ds = b.systems.get("distsync")
    if ds is not None and "distsync" not in b.down and b.session is not None:
        try:
            async with b.session.get(ds.cache_stats_url()) as r:
                out["node_mean_hit_us"] = (await r.json())["mean_latency_us"]["hit"]
        except Exception as e:  # noqa: BLE001
            out["node_error"] = describe(e)
    redis = b.systems.get("redis")
    if redis is not None and "redis" not in b.down:
        import cache_bench

        inproc: dict[str, Any] = {}
        try:
            await cache_bench.inproc_phases(redis.url, b.args.inproc_duration, inproc)
            out["inproc"] = inproc
            out["inproc_mean_hit_us"] = inproc.get("hit_mean_us_in_node")
        except Exception as e:  # noqa: BLE001
            out["inproc_error"] = describe(e)
    b.say(f"\n== Cache hit inside the node: node mean {out.get('node_mean_hit_us')} us, "
          f"in-process mean {out.get('inproc_mean_hit_us')} us")
    return out


async def failover_once(system: Any, session: aiohttp.ClientSession, key: str,
                        settle: float) -> float:
    """SIGKILL the leader, then time until a write is acknowledged; bring the node back and
    wait for an agreed leader before the next round."""
    leader = await system.leader()
    t0 = time.perf_counter()
    system.kill(leader)
    deadline = t0 + 60
    while True:
        try:
            await system.write_once(session, key)
            break
        except Exception:  # noqa: BLE001 - expected until a new leader takes writes
            if time.perf_counter() > deadline:
                raise TimeoutError("no acknowledged write within 60 s of the kill") from None
            await asyncio.sleep(0.005)
    took = time.perf_counter() - t0
    await asyncio.to_thread(system.restart, leader)
    await asyncio.sleep(settle)  # the restarted node catches up before the next kill
    await system.leader()
    return took


async def failover_section(b: Bench) -> None:
    out: dict[str, Any] = {}
    assert b.session is not None
    for n in ("distsync", "etcd", "pysyncobj"):
        if not b.wanted(n):
            continue
        if n in b.down:
            out[n] = {"error": b.down[n]}
            continue
        samples: list[float] = []
        try:
            for i in range(b.args.failover_reps):
                samples.append(await failover_once(b.systems[n], b.session,
                                                   f"bench/{b.run_id}/failover/{i}",
                                                   b.args.failover_settle))
                b.say(f"  failover {n} #{i + 1}: {samples[-1] * 1e3:.0f} ms")
            out[n] = {"samples_s": samples, "median_s": statistics.median(samples)}
        except Exception as e:  # noqa: BLE001
            out[n] = {"samples_s": samples, "error": describe(e)}
        out[n]["durability"] = b.systems[n].durability
    b.report["failover"] = out
    b.say(f"\n== Failover (SIGKILL leader -> first acknowledged write)\n{FAILOVER_NOTE}\n"
          + render(failover_rows(out)))


async def resources_section(b: Bench) -> None:
    b.report["resources"] = resources_rows(b)
    b.say("\n== Resources\n" + render(b.report["resources"]))


async def scaling_section(b: Bench) -> None:
    """distsync PUT and GET at 3, 5 and 7 nodes; the main cluster's numbers are reused for
    its own size. The other systems are stopped first so the bigger clusters get the CPU."""
    results: list[dict[str, Any]] = []
    for r in (*b.report["workloads"].get("put", {}).get("results", []),
              *b.report["workloads"].get("get", {}).get("results", [])):
        if r.system == "distsync":
            results.append({**_clean(r), "nodes": b.args.nodes})
    await stop_all(b)
    for n in b.args.scaling_nodes:
        if n == b.args.nodes and results:
            continue
        ds = Distsync(n, b.work / f"distsync-{n}", python=b.args.node_python)
        b.systems[f"distsync-{n}"] = ds
        try:
            b.say(f"  scaling: starting {n} nodes ...")
            await ds.start()
            for wl in ("put", "get"):
                for c in b.args.scaling_concurrency:
                    r = await measure(b, f"distsync-{n}", wl, c, system=ds)
                    results.append({**_clean(r), "nodes": n})
        except Exception as e:  # noqa: BLE001
            results.append({"system": "distsync", "workload": "start", "nodes": n,
                            "concurrency": 0, "error": describe(e)})
        finally:
            await ds.stop()
            b.systems.pop(f"distsync-{n}", None)
    b.report["scaling"] = {"results": results}
    b.say("\n== Scaling (distsync)\n" + render(scaling_rows(results)))


# -------------------------------------------------------------------------------- main


async def run(b: Bench) -> None:
    a = b.args
    b.report["machine"] = describe_machine(b.work)
    if b.wanted("distsync"):
        b.report["machine"]["node_python"] = describe_python(a.node_python or sys.executable)
    b.say(machine_summary(b.report["machine"]))
    await start_all(b)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        b.session = session
        kv = [n for n in ("distsync", "etcd", "pysyncobj", "floor") if b.wanted(n)]
        notes = {
            "put": "distsync and etcd acknowledge after an fsync on a majority; PySyncObj "
                   "writes its journal without fsync (see Systems), tuned with "
                   "appendEntriesPeriod=0.002 since its default 0.1 s caps it at about 10 "
                   "commits/s per request in flight.",
            "get": "Linearizable: distsync ReadIndex on the leader; etcd's default "
                   "(non-serializable) range.",
            "lock": "distsync: acquire + release on an open session; etcd: /v3/lock/lock + "
                    "unlock on a lease.",
        }
        sections = {
            **{wl: (lambda wl=wl: kv_section(b, wl, kv, notes[wl]))
               for wl in ("put", "get", "lock")},
            "queue": lambda: queue_section(b), "cache": lambda: cache_section(b),
            "resources": lambda: resources_section(b),
            "failover": lambda: failover_section(b), "scaling": lambda: scaling_section(b),
        }
        timing = b.report["section_seconds"] = {}
        for name in SECTIONS:  # this order: failover disturbs, scaling stops the others
            if name in a.only:
                t0 = time.monotonic()
                await sections[name]()
                timing[name] = round(time.monotonic() - t0, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=os.environ.get("DISTSYNC_PROG"),
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short phases and fewer repetitions (under 5 minutes)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                   help=f"comma-separated systems: {','.join(ALL_SYSTEMS)}")
    p.add_argument("--nodes", type=int, default=3, help="cluster size of the main run")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the put/get/lock phases this many times, interleaved, and "
                        "report each round's ratio and their median (default 1)")
    p.add_argument("--duration", type=float, help="measured seconds per phase (10; quick 1)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds first (2; quick 0.4)")
    p.add_argument("--failover-reps", type=int, help="kills per system (5; quick 3)")
    p.add_argument("--scaling-nodes", default="3,5,7")
    p.add_argument("--node-python", type=Path, metavar="PATH",
                   help="the interpreter distsync's nodes run on (default: this one); it "
                        "must import distsync (benchmarks/README.md, 'The interpreter')")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    p.add_argument("--no-setup", action="store_true",
                   help="do not run setup_peers.py for missing peers (report them instead)")
    a = p.parse_args(argv)
    a.only = [s for s in a.only.split(",") if s]
    a.systems = [s for s in a.systems.split(",") if s]
    for bad in (set(a.only) - set(SECTIONS), set(a.systems) - set(ALL_SYSTEMS)):
        if bad:
            p.error(f"unknown: {', '.join(sorted(bad))}")
    a.concurrency = [int(x) for x in a.concurrency.split(",")]
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    a.scaling_nodes = [int(x) for x in a.scaling_nodes.split(",")]
    a.duration = a.duration if a.duration is not None else (1.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.4 if a.quick else 2.0)
    a.failover_reps = a.failover_reps or (3 if a.quick else 5)
    a.inproc_duration = 0.3 if a.quick else 2.0
    a.failover_settle = 1.0 if a.quick else 2.0  # after the restart, before the next kill
    # msgs/s a dequeue phase is filled for (queue_bench's 30k; the queue running low is
    # reported per row)
    a.queue_fill_rate = 15_000 if a.quick else 30_000
    conc = sorted(a.concurrency)  # quick: the ends only, to stay under 5 minutes
    a.scaling_concurrency = sorted({conc[0], conc[-1]}) if a.quick else conc
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="distsync-run-"))
    b = Bench(args, work)
    rc = 0

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await run(b)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
            await asyncio.shield(stop_all(b))

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process stopped", file=sys.stderr)
        rc = 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rc == 0 and not args.no_write:
        write_results(b)
    return rc


if __name__ == "__main__":
    sys.exit(main())
