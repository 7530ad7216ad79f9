#!/usr/bin/env python3
"""Throughput and latency of distsync's queue on a real 3-node cluster, beside a Redis list.

Not a test: a measurement you run by hand (see benchmarks/README.md, "Queue").

Phases, each on a fresh queue (16 partitions unless stated), `--duration` seconds measured
after a 1 s warm-up, closed loops driven by one asyncio `distsync.client.Client` pointed at
the leader:

1. enqueue, unbatched: 64 workers, `put(body)` one message per request.
2. enqueue, batched: 16 workers, `put_many` of `--batch` messages per request.
3. dequeue + ack, batched: the queue pre-filled; 8 consumers, each `get(max=batch)` then
   `ack_many` of what it got (two requests per batch); and again with each dequeue carrying
   the ack of the previous batch (`get(max=batch, ack=previous)`, one request per batch).
4. end-to-end latency at a fixed offered load (`--e2e-rate` msgs/s in batches of 10, paced,
   open loop) with 4 long-polling consumers: enqueue call -> message in a consumer's hands,
   and -> its ack acknowledged. Also with one message at a time (rate 50/s).
5. consumer spread: 3, 5 and 10 consumers registered, then `--spread-messages` messages
   enqueued (random keys, or no key = round-robin), then drained; max/min messages per
   consumer, with 60 partitions and with 16.

With `--profile SECONDS`, one more dequeue + ack phase (8 consumers, get then ack_many; NOT
part of the tables) runs while `py-spy record` samples the leader, and the raw collapsed
stacks (`leader-profile-queue-dequeue.txt`) plus a top-N summary go next to the results.

If `redis-server` is on PATH, the same phases run against a Redis list on loopback with
redis-py (RPUSH; the reliable-queue pattern LMOVE to a processing list + LREM as the ack;
BLMOVE for the long-polling consumers), once with `appendfsync always` (every write fsynced
on the one node) and once with `everysec`.

Every acknowledged enqueue in distsync is fsynced on a majority (2 of 3 nodes) before the
answer. All processes (3 nodes, Redis, the client) share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from raft_bench import (
    PROFILE_RATE_HZ,
    _git_rev,
    _pct,
    _proc_cpu_seconds,
    _system_busy_seconds,
    machine_info,
    machine_text,
    probe_fsync,
    profile_text,
    snapshots_taken,
    start_profiler,
    summarize_profile,
)

from distsync.client import Client
from distsync.local import LocalCluster, free_ports

HERE = Path(__file__).resolve().parent
BODY = "x" * 100


def _lat(vals: list[float]) -> dict[str, float]:
    v = sorted(vals)
    return {"p50_ms": _pct(v, 50) * 1e3, "p99_ms": _pct(v, 99) * 1e3} if v else {}


class CpuWindow:
    """CPU used by the cluster (and Redis), this client, and everything else, in % of one
    core, over a measured window."""

    def __init__(self, pids: list[int]):
        self.pids = pids

    def __enter__(self) -> CpuWindow:
        self.t0 = time.monotonic()
        self.sys0 = _system_busy_seconds() or 0.0
        self.p0 = sum(_proc_cpu_seconds(p) or 0.0 for p in self.pids)
        self.me0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.monotonic() - self.t0
        servers = sum(_proc_cpu_seconds(p) or 0.0 for p in self.pids) - self.p0
        me = time.process_time() - self.me0
        other = (_system_busy_seconds() or 0.0) - self.sys0 - servers - me
        self.result = {"server_cpu_pct": round(100 * servers / dt),
                       "client_cpu_pct": round(100 * me / dt),
                       "other_cpu_pct": max(0, round(100 * other / dt))}


async def closed_loop(workers: int, duration: float, warmup: float, step: Any,
                      pids: list[int]) -> dict[str, Any]:
    """Run `step(worker) -> messages done` in `workers` loops; count what finishes inside
    the measured window."""
    t_start = time.monotonic()
    t_meas, t_end = t_start + warmup, t_start + warmup + duration
    msgs, reqs, errors, lat = 0, 0, 0, []

    async def loop(w: int) -> None:
        nonlocal msgs, reqs, errors
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            try:
                n = await step(w)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
                continue
            t1 = time.monotonic()
            if t0 >= t_meas and t1 <= t_end:
                msgs += n
                reqs += 1
                lat.append(t1 - t0)

    await asyncio.sleep(0)
    with CpuWindow(pids) as cpu:
        await asyncio.gather(*(loop(w) for w in range(workers)))
    return {"msgs_per_s": round(msgs / duration), "requests": reqs, "errors": errors,
            **_lat(lat), **cpu.result}


# -------------------------------------------------------------------------------- distsync


class Distsync:
    name = "distsync"

    def __init__(self, c: Client, pids: list[int]):
        self.c, self.pids = c, pids
        self.n = 0

    def fresh(self, partitions: int = 16) -> str:
        self.n += 1
        return f"bench{self.n}-p{partitions}"

    async def setup(self, q: str, partitions: int = 16) -> None:
        await self.c.queue(q).create(partitions=partitions, max_length=5_000_000,
                                     max_bytes=2 << 30, visibility_ms=60_000)

    async def put(self, q: str, body: Any) -> None:
        await self.c.queue(q).put(body)

    async def put_many(self, q: str, bodies: list[Any], keys: list[str] | None = None) -> None:
        msgs = [{"body": b} for b in bodies]
        if keys:
            for m, k in zip(msgs, keys, strict=True):
                m["key"] = k
        await self.c.queue(q).put_many(msgs)

    async def take(self, q: str, consumer: str, n: int,
                   wait_ms: int = 0) -> tuple[list[Any], float]:
        """Dequeue up to n, ack them; returns the bodies and when they were in hand."""
        got = await self.c.queue(q).get(consumer, max=n, wait_ms=wait_ms)
        t_got = time.monotonic()
        if got:
            await self.c.queue(q).ack_many(got)
        return [m.body for m in got], t_got

    async def take_next(self, q: str, consumer: str, n: int, prev: list[Any]) -> list[Any]:
        """Ack the previous batch and fetch the next in one request (dequeue with `ack`)."""
        return await self.c.queue(q).get(consumer, max=n, ack=prev)

    async def register(self, q: str, consumer: str) -> None:
        await self.c.queue(q).heartbeat(consumer)

    async def cleanup(self, q: str) -> None:
        await self.c.queue(q).delete()


# -------------------------------------------------------------------------------- Redis


class Redis:
    def __init__(self, r: Any, pid: int, fsync: str):
        self.r, self.pids, self.n = r, [pid], 0
        self.name = f"redis (appendfsync {fsync})"

    def fresh(self, partitions: int = 16) -> str:
        self.n += 1
        return f"bench{self.n}"

    async def setup(self, q: str, partitions: int = 16) -> None:
        await self.r.delete(q, q + ":processing")

    async def put(self, q: str, body: Any) -> None:
        await self.r.rpush(q, json.dumps(body))

    async def put_many(self, q: str, bodies: list[Any], keys: list[str] | None = None) -> None:
        await self.r.rpush(q, *[json.dumps(b) for b in bodies])

    async def take(self, q: str, consumer: str, n: int,
                   wait_ms: int = 0) -> tuple[list[Any], float]:
        proc = q + ":processing"
        if wait_ms:
            first = await self.r.blmove(q, proc, wait_ms / 1000, "LEFT", "RIGHT")
            if first is None:
                return [], time.monotonic()
            items = [first]
            if n > 1:
                async with self.r.pipeline(transaction=False) as p:
                    for _ in range(n - 1):
                        p.lmove(q, proc, "LEFT", "RIGHT")
                    items += [x for x in await p.execute() if x is not None]
        else:
            async with self.r.pipeline(transaction=False) as p:
                for _ in range(n):
                    p.lmove(q, proc, "LEFT", "RIGHT")
                items = [x for x in await p.execute() if x is not None]
        t_got = time.monotonic()
        if items:
            async with self.r.pipeline(transaction=False) as p:
                for it in items:
                    p.lrem(proc, 1, it)
                await p.execute()
        return [json.loads(x) for x in items], t_got

    async def take_next(self, q: str, consumer: str, n: int, prev: list[Any]) -> list[Any]:
        """LREM the previous batch and LMOVE the next in one pipeline (one round trip)."""
        proc = q + ":processing"
        async with self.r.pipeline(transaction=False) as p:
            for it in prev:
                p.lrem(proc, 1, it)
            for _ in range(n):
                p.lmove(q, proc, "LEFT", "RIGHT")
            res = await p.execute()
        return [x for x in res[len(prev):] if x is not None]

    async def register(self, q: str, consumer: str) -> None:
        return None

    async def cleanup(self, q: str) -> None:
        await self.r.delete(q, q + ":processing")


def start_redis(work: Path, fsync: str) -> tuple[subprocess.Popen, int] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = free_ports(1)[0]
    d = work / f"redis-{fsync}"
    d.mkdir()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
         "--appendonly", "yes", "--appendfsync", fsync, "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


# -------------------------------------------------------------------------------- phases


async def phases(sys_: Any, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    d, w, b = args.duration, args.warmup, args.batch
    print(f"== {sys_.name}", flush=True)

    q = sys_.fresh()
    await sys_.setup(q)

    async def put1(_: int) -> int:
        await sys_.put(q, BODY)
        return 1

    out["enqueue_unbatched"] = await closed_loop(64, d, w, put1, sys_.pids)
    print(f"  enqueue, 1 per request, c=64: {out['enqueue_unbatched']}", flush=True)
    await sys_.cleanup(q)

    q = sys_.fresh()
    await sys_.setup(q)

    async def putb(_: int) -> int:
        await sys_.put_many(q, [BODY] * b)
        return b

    out["enqueue_batched"] = await closed_loop(16, d, w, putb, sys_.pids)
    print(f"  enqueue, {b} per request, c=16: {out['enqueue_batched']}", flush=True)
    await sys_.cleanup(q)

    out["dequeue_ack_batched"] = await dequeue_ack(sys_, d, w, b)
    print(f"  dequeue, then ack, {b} per request, 8 consumers: {out['dequeue_ack_batched']}",
          flush=True)

    q = await filled(sys_, d + w)
    prev: dict[int, list[Any]] = {}

    async def take_next(worker: int) -> int:
        done = prev.get(worker, [])
        prev[worker] = await sys_.take_next(q, f"n{worker}", b, done)
        return len(done)

    out["dequeue_ack_next"] = await closed_loop(8, d, w, take_next, sys_.pids)
    print(f"  dequeue with ack of the previous batch, {b} per request, 8 consumers: "
          f"{out['dequeue_ack_next']}", flush=True)
    await sys_.cleanup(q)

    out["end_to_end"] = await end_to_end(sys_, args.e2e_rate, 10, d + w, w)
    print(f"  end-to-end at {args.e2e_rate} msgs/s: {out['end_to_end']}", flush=True)
    out["end_to_end_single"] = await end_to_end(sys_, 50, 1, d + w, w)
    print(f"  end-to-end at 50 msgs/s, one per request: {out['end_to_end_single']}",
          flush=True)

    if sys_.name == "distsync":
        out["spread"] = {}
        for parts, keyed in ((60, True), (60, False), (16, True)):
            for n in (3, 5, 10):
                r = await spread(sys_, parts, n, keyed, args.spread_messages)
                out["spread"][f"p{parts}-{'keyed' if keyed else 'round-robin'}-c{n}"] = r
                print(f"  spread, {parts} partitions, {'random keys' if keyed else 'no key'}, "
                      f"{n} consumers: {r}", flush=True)
    return out


async def filled(sys_: Any, seconds: float) -> str:
    """A fresh queue holding enough messages for `seconds` of draining (30k msgs/s at
    most)."""
    q = sys_.fresh()
    await sys_.setup(q)
    sem = asyncio.Semaphore(16)

    async def fill(_: int) -> None:
        async with sem:
            await sys_.put_many(q, [BODY] * 500)

    await asyncio.gather(*(fill(i) for i in range(int(30_000 * seconds) // 500 + 1)))
    return q


async def dequeue_ack(sys_: Any, duration: float, warmup: float, batch: int,
                      started: asyncio.Event | None = None) -> dict[str, Any]:
    """8 consumers on a pre-filled queue, each `get(max=batch)` then `ack_many`; `started`
    is set when the fill is done and the consumers begin."""
    q = await filled(sys_, duration + warmup)
    if started is not None:
        started.set()

    async def take(worker: int) -> int:
        return len((await sys_.take(q, f"c{worker}", batch))[0])

    res = await closed_loop(8, duration, warmup, take, sys_.pids)
    await sys_.cleanup(q)
    return res


async def profile_dequeue(sys_: Any, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """The dequeue + ack phase once more while py-spy samples the leader. py-spy pauses the
    target for each sample, so this phase is slower and is not reported as a measurement."""
    out_dir = Path(tempfile.mkdtemp(prefix="distsync-prof-")) if args.no_write else args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "leader-profile-queue-dequeue.txt"
    prof: dict[str, Any] = {"kind": "dequeue+ack", "seconds": args.profile, "raw": raw.name,
                            "pid": pid, "concurrency": 8}
    print(f"PROFILE: dequeue + ack while py-spy samples the leader (pid {pid}) for "
          f"{args.profile:g} s ...", flush=True)
    started = asyncio.Event()
    task = asyncio.create_task(
        dequeue_ack(sys_, args.profile + 1.5, args.warmup, args.batch, started))
    await started.wait()  # the fill is not what we profile
    await asyncio.sleep(args.warmup)
    p = start_profiler(pid, args.profile, raw)
    r = await task
    prof["workload"] = {"ops_per_s": r["msgs_per_s"], "p50_ms": r.get("p50_ms"),
                        "p99_ms": r.get("p99_ms")}
    if p is None:
        prof["error"] = "py-spy not installed"
        return prof
    text, _ = await asyncio.to_thread(p.communicate)
    if p.returncode != 0 or not raw.exists():
        prof["error"] = f"py-spy exited {p.returncode}: {text.strip()[-500:]}"
        print(f"py-spy failed (ptrace not permitted?): {prof['error']}")
    else:
        prof["summary"] = summarize_profile(raw, PROFILE_RATE_HZ, args.profile, top=25)
        print(profile_text(prof, n_self=20, n_incl=25), flush=True)
    return prof


async def end_to_end(sys_: Any, rate: int, batch: int, seconds: float,
                     warmup: float) -> dict[str, Any]:
    """Paced producer at `rate` msgs/s; consumers long-poll; latency per message."""
    q = sys_.fresh()
    await sys_.setup(q)
    deliver, acked, t_meas = [], [], time.monotonic() + warmup
    stop = asyncio.Event()

    async def producer() -> None:
        period = batch / rate
        nxt = time.monotonic()
        pending: set[asyncio.Task] = set()
        t_end = nxt + seconds
        while nxt < t_end:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            t = asyncio.create_task(sys_.put_many(q, [{"t": time.monotonic()}] * batch))
            pending.add(t)
            t.add_done_callback(pending.discard)
            nxt += period
        if pending:
            await asyncio.wait(pending)

    async def consumer(k: int) -> None:
        c = f"e2e-{k}"
        await sys_.register(q, c)
        while not stop.is_set():
            try:
                got, t_got = await sys_.take(q, c, 100, wait_ms=500)
            except Exception:  # noqa: BLE001
                continue
            t_ack = time.monotonic()
            for body in got:
                if body["t"] >= t_meas:
                    deliver.append(t_got - body["t"])
                    acked.append(t_ack - body["t"])

    consumers = [asyncio.create_task(consumer(k)) for k in range(4)]
    await producer()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*consumers)
    await sys_.cleanup(q)
    return {"messages": len(acked), "enqueue_to_delivery": _lat(deliver),
            "enqueue_to_ack": _lat(acked)}


async def spread(sys_: Any, partitions: int, consumers: int, keyed: bool,
                 messages: int) -> dict[str, Any]:
    q = sys_.fresh(partitions) + f"-c{consumers}{'k' if keyed else 'r'}"
    await sys_.setup(q, partitions)
    names = [f"s{i}" for i in range(consumers)]
    for n in names:
        await sys_.register(q, n)
    rng = random.Random(consumers * 1000 + partitions)
    for i in range(0, messages, 500):
        keys = [f"user-{rng.randrange(10**9)}" for _ in range(500)] if keyed else None
        await sys_.put_many(q, [i] * 500, keys)
    counts: Counter[str] = Counter()
    total = 0

    async def drain(n: str) -> None:
        nonlocal total
        while total < messages:
            got, _ = await sys_.take(q, n, 200, wait_ms=200)
            counts[n] += len(got)
            total += len(got)

    await asyncio.wait_for(asyncio.gather(*(drain(n) for n in names)), 120)
    await sys_.cleanup(q)
    per = [counts[n] for n in names]
    return {"per_consumer": per, "max_over_min": round(max(per) / max(1, min(per)), 3)}


# -------------------------------------------------------------------------------- report


def render_md(report: dict[str, Any]) -> str:
    systems = report["systems"]
    lines = [
        "# distsync queue benchmark",
        "",
        f"Run {report['started_at']} (git {report.get('git')}), {report['config']['duration_s']}"
        f" s per phase after {report['config']['warmup_s']} s warm-up, 3 nodes on loopback, "
        f"batch {report['config']['batch']}. Generated by `benchmarks/queue_bench.py`.",
        "",
        "```", machine_text(report["machine"]), "```", "",
        "| system | enqueue 1/req (c=64) msgs/s | p50/p99 ms | enqueue batched (c=16) msgs/s "
        "| p50/p99 ms per batch | dequeue, then ack (8 consumers) msgs/s | p50/p99 ms per "
        "batch | dequeue + ack of the previous batch, 1 request msgs/s | end-to-end "
        f"enqueue->ack p50/p99 ms at {report['config']['e2e_rate']} msgs/s | same, 50 msgs/s "
        "1/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in systems.items():
        def pp(x: dict[str, Any]) -> str:
            return f"{x.get('p50_ms', float('nan')):.1f} / {x.get('p99_ms', float('nan')):.1f}"

        lines.append(
            f"| {name} | {s['enqueue_unbatched']['msgs_per_s']:,} | "
            f"{pp(s['enqueue_unbatched'])} | {s['enqueue_batched']['msgs_per_s']:,} | "
            f"{pp(s['enqueue_batched'])} | {s['dequeue_ack_batched']['msgs_per_s']:,} | "
            f"{pp(s['dequeue_ack_batched'])} | {s['dequeue_ack_next']['msgs_per_s']:,} | "
            f"{pp(s['end_to_end']['enqueue_to_ack'])} | "
            f"{pp(s['end_to_end_single']['enqueue_to_ack'])} |"
        )
    lines += ["", "CPU during each phase (% of one core: servers / client / other processes):",
              ""]
    for name, s in systems.items():
        parts = []
        for ph in ("enqueue_unbatched", "enqueue_batched", "dequeue_ack_batched",
                   "dequeue_ack_next"):
            r = s[ph]
            parts.append(f"{ph} {r['server_cpu_pct']}/{r['client_cpu_pct']}/"
                         f"{r['other_cpu_pct']}")
        lines.append(f"- {name}: " + ", ".join(parts))
    sp = systems.get("distsync", {}).get("spread")
    if sp:
        lines += ["", "Consumer spread (messages per consumer after draining; max/min):", "",
                  "| partitions, placement | 3 consumers | 5 consumers | 10 consumers |",
                  "|---|---:|---:|---:|"]
        for parts, kind in ((60, "keyed"), (60, "round-robin"), (16, "keyed")):
            cells = [f"{sp[f'p{parts}-{kind}-c{n}']['max_over_min']:.2f}" for n in (3, 5, 10)]
            lines.append(f"| {parts}, {'random keys' if kind == 'keyed' else 'no key'} | "
                         + " | ".join(cells) + " |")
    if report.get("profile", {}).get("summary"):
        lines += ["", "Leader profile during one more dequeue + ack phase (py-spy; not part of "
                  "the tables):", "", "```", profile_text(report["profile"], 20, 25), "```"]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace, lc: LocalCluster, work: Path,
              report: dict[str, Any]) -> None:
    pids = [nd.proc.pid for nd in lc.nodes.values() if nd.proc is not None]
    async with Client(lc.addrs, timeout=60, request_timeout=30) as c:
        await c.find_leader()
        ds = Distsync(c, pids)
        if not args.profile_only:
            report["systems"]["distsync"] = await phases(ds, args)
        if args.profile > 0:
            pid = lc.nodes[lc.leader()].proc.pid  # type: ignore[union-attr]
            report["profile"] = await profile_dequeue(ds, pid, args)
    if args.no_redis or args.profile_only:
        return
    try:
        import redis.asyncio as aioredis
    except ImportError:
        print("redis-py not installed: no Redis baseline")
        return
    for fsync in ("always", "everysec"):
        started = start_redis(work, fsync)
        if started is None:
            print("redis-server not on PATH: no Redis baseline")
            return
        proc, port = started
        try:
            r = aioredis.Redis(host="127.0.0.1", port=port, max_connections=128)
            sys_ = Redis(r, proc.pid, fsync)
            report["systems"][sys_.name] = await phases(sys_, args)
            await r.aclose()
        finally:
            proc.terminate()
            proc.wait(10)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--e2e-rate", type=int, default=1000)
    p.add_argument("--spread-messages", type=int, default=6000)
    p.add_argument("--no-redis", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="after the distsync phases, sample the leader with py-spy for this "
                        "long during one more dequeue + ack phase")
    p.add_argument("--profile-only", action="store_true",
                   help="with --profile: skip the measured phases and Redis; write nothing "
                        "but the profile")
    return p.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="distsync-qbench-"))
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": _git_rev(),
        "config": {"duration_s": args.duration, "warmup_s": args.warmup, "batch": args.batch,
                   "e2e_rate": args.e2e_rate, "body": "100-char JSON string",
                   "spread_messages": args.spread_messages},
        "systems": {},
    }
    lc = LocalCluster(3, data_dir=work / "cluster")
    rc = 0
    try:
        report["machine"] = machine_info(work)
        report["machine"]["fsync_probe"] = probe_fsync(work)
        report["machine"]["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        print(machine_text(report["machine"]), flush=True)
        lc.start()
        lc.wait_ready(60)
        lc.leader()
        asyncio.run(run(args, lc, work, report))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        report["snapshots_taken"] = snapshots_taken(lc)
        lc.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.profile_only:
        return rc
    if rc == 0 and not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "queue_bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "queue_bench.md").write_text(render_md(report))
        print(f"\nwrote {args.out / 'queue_bench.json'} and queue_bench.md")
    print("\n" + render_md(report))
    return rc


if __name__ == "__main__":
    sys.exit(main())
