#!/usr/bin/env python3
"""Latency and throughput of distsync's lock service on a real 3-node cluster, and the cost of
deadlock detection on a 10,000-session wait-for graph.

Not a test: a measurement you run by hand (see benchmarks/README.md).

1. **Uncontended**: one session, one lock; a closed loop of `acquire` + `release` (two
   replicated commands, each acknowledged once fsynced on a majority and applied on the
   leader). Latency per pair and per call, measured in the client from invoke to parsed
   answer.
2. **Contended**: `--contenders` sessions (default 16) on `--locks` locks (default 4), each
   looping acquire (waiting, long-polled) -> release on a random lock. Throughput = grants
   per second; acquire latency includes the time spent queued. Exclusive tokens are checked
   to be unique and increasing per lock.
3. **Deadlock detection cost**, in process (no cluster; the state machine alone), on graphs of
   10,000 sessions: the incremental search an acquire runs before it waits, timed per call
   over many repetitions, next to a full scan of the graph for comparison.

Writes benchmarks/results/lock_bench.json and lock_bench.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distsync.client import Client
from distsync.local import LocalCluster
from distsync.services.base import CommandError
from distsync.services.locks import EXCLUSIVE, SHARED, LockService
from distsync.services.locks_graph import all_cycles, find_cycle

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"


# -- helpers ---------------------------------------------------------------------------------


def pct(vals: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(vals)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary_ms(vals: list[float]) -> dict[str, float]:
    return {
        "n": len(vals), "mean": statistics.fmean(vals) * 1000 if vals else float("nan"),
        "p50": pct(vals, 50) * 1000, "p99": pct(vals, 99) * 1000,
        "p99.9": pct(vals, 99.9) * 1000, "max": max(vals) * 1000 if vals else float("nan"),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def busy_seconds() -> float:
    """CPU seconds all cores spent busy (from /proc/stat)."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(vals[:8]) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def proc_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """CPU used during a phase by the cluster, this process, and everything else."""

    def __init__(self, lc: LocalCluster) -> None:
        self.pids = [nd.proc.pid for nd in lc.nodes.values() if nd.proc is not None]

    def __enter__(self) -> CpuWindow:
        self.t0 = time.monotonic()
        self.b0 = busy_seconds()
        self.n0 = sum(proc_seconds(p) for p in self.pids)
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.monotonic() - self.t0
        nodes = sum(proc_seconds(p) for p in self.pids) - self.n0
        me = time.process_time() - self.c0
        self.nodes_pct = 100 * nodes / dt
        self.client_pct = 100 * me / dt
        self.other_pct = max(0.0, 100 * (busy_seconds() - self.b0 - nodes - me) / dt)


# -- cluster phases ----------------------------------------------------------------------------


async def uncontended(c: Client, duration: float, warmup: float) -> dict[str, Any]:
    pair: list[float] = []
    acq: list[float] = []
    rel: list[float] = []
    async with c.session(ttl=30, name="bench-uncontended") as s:
        end_warm = time.monotonic() + warmup
        while time.monotonic() < end_warm:
            await s.acquire("bench-u")
            await s.release("bench-u")
        end = time.monotonic() + duration
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await s.acquire("bench-u")
            t1 = time.perf_counter()
            await s.release("bench-u")
            t2 = time.perf_counter()
            pair.append(t2 - t0)
            acq.append(t1 - t0)
            rel.append(t2 - t1)
    return {"pairs_per_s": len(pair) / duration, "pair_ms": summary_ms(pair),
            "acquire_ms": summary_ms(acq), "release_ms": summary_ms(rel)}


async def kv_baseline(c: Client, duration: float, warmup: float) -> dict[str, Any]:
    """One kv PUT at a time: the cost of one replicated command, for comparison (a lock
    acquire or release is one replicated command too)."""
    lat: list[float] = []
    end_warm = time.monotonic() + warmup
    i = 0
    while time.monotonic() < end_warm:
        await c.put(f"bench/warm/{i}", "x" * 20)
        i += 1
    end = time.monotonic() + duration
    while time.monotonic() < end:
        t0 = time.perf_counter()
        await c.put(f"bench/put/{i}", "x" * 20)
        lat.append(time.perf_counter() - t0)
        i += 1
    return {"puts_per_s": len(lat) / duration, "put_ms": summary_ms(lat)}


async def contended(c: Client, n: int, locks: int, duration: float, warmup: float,
                    shared_ratio: float) -> dict[str, Any]:
    sessions = [c.session(ttl=30, name=f"bench-{i}") for i in range(n)]
    for s in sessions:
        await s.open()
    lat: list[float] = []
    tokens: dict[str, list[int]] = {f"bench-c{k}": [] for k in range(locks)}
    grants = {"exclusive": 0, "shared": 0}
    t_start = time.monotonic() + warmup
    t_end = t_start + duration

    async def worker(i: int) -> None:
        rng = random.Random(i)
        s = sessions[i]
        while time.monotonic() < t_end:
            lock = f"bench-c{rng.randrange(locks)}"
            mode = SHARED if rng.random() < shared_ratio else EXCLUSIVE
            t0 = time.perf_counter()
            g = await s.acquire(lock, mode=mode, wait=60)
            done = time.perf_counter()
            await s.release(lock)
            if t_start <= time.monotonic() <= t_end:
                lat.append(done - t0)
                grants[mode] += 1
                if mode == EXCLUSIVE:
                    tokens[lock].append(g.token)

    await asyncio.gather(*(worker(i) for i in range(n)))
    for s in sessions:
        await s.close()
    ordered = all(sorted(set(v)) == sorted(v) for v in tokens.values())
    total = grants["exclusive"] + grants["shared"]
    return {"sessions": n, "locks": locks, "shared_ratio": shared_ratio,
            "grants_per_s": total / duration, "grants": grants,
            "acquire_ms": summary_ms(lat), "exclusive_tokens_unique": ordered}


async def cluster_phases(args: argparse.Namespace, lc: LocalCluster,
                         report: dict[str, Any]) -> None:
    async with Client(lc.addrs, timeout=60) as c:
        leader_addr = await c.find_leader()
        report["leader"] = leader_addr
        with CpuWindow(lc) as cw:
            b = await kv_baseline(c, args.duration, args.warmup)
        b["cpu_pct"] = {"nodes": cw.nodes_pct, "client": cw.client_pct, "other": cw.other_pct}
        report["kv_put_baseline"] = b
        print(f"baseline kv PUT: {b['puts_per_s']:.0f}/s, p50 {b['put_ms']['p50']:.2f} ms "
              f"p99 {b['put_ms']['p99']:.2f} ms; other CPU {cw.other_pct:.0f}%", flush=True)
        with CpuWindow(lc) as cw:
            u = await uncontended(c, args.duration, args.warmup)
        u["cpu_pct"] = {"nodes": cw.nodes_pct, "client": cw.client_pct, "other": cw.other_pct}
        report["uncontended"] = u
        print(f"uncontended acquire+release: {u['pairs_per_s']:.0f} pairs/s, pair "
              f"p50 {u['pair_ms']['p50']:.2f} ms p99 {u['pair_ms']['p99']:.2f} ms; acquire "
              f"p50 {u['acquire_ms']['p50']:.2f} ms, release p50 {u['release_ms']['p50']:.2f} "
              f"ms; other CPU {cw.other_pct:.0f}%", flush=True)
        with CpuWindow(lc) as cw:
            k = await contended(c, args.contenders, args.locks, args.duration, args.warmup,
                                args.shared_ratio)
        k["cpu_pct"] = {"nodes": cw.nodes_pct, "client": cw.client_pct, "other": cw.other_pct}
        report["contended"] = k
        print(f"contended ({k['sessions']} sessions, {k['locks']} locks, "
              f"{k['shared_ratio']:.0%} shared): {k['grants_per_s']:.0f} grants/s, acquire "
              f"p50 {k['acquire_ms']['p50']:.2f} ms p99 {k['acquire_ms']['p99']:.2f} ms "
              f"(waiting included); tokens ok: {k['exclusive_tokens_unique']}; other CPU "
              f"{cw.other_pct:.0f}%", flush=True)


# -- deadlock detection on a 10,000-session graph ---------------------------------------------


class Graph:
    def __init__(self) -> None:
        self.svc = LockService()
        self.index = 0

    def apply(self, op: str, **args: Any) -> Any:
        self.index += 1
        try:
            return self.svc.apply(op, args, self.index)
        except CommandError as e:
            return e.to_result()

    def sessions(self, n: int) -> list[str]:
        return [self.apply("open", ttl_ms=60_000)["session"] for _ in range(n)]

    def acq(self, sid: str, lock: str, mode: str = EXCLUSIVE, wait: bool = True) -> Any:
        return self.apply("acquire", session=sid, lock=lock, mode=mode,
                          wait_ms=1000 if wait else 0, deadline_ms=0)

    def detect(self, sid: str, lock: str, mode: str = EXCLUSIVE) -> Any:
        """Exactly the search an acquire runs before it waits, without applying it."""
        lk = self.svc.locks[lock]
        first = list(lk.blockers(sid, mode, lk.next_seq))
        return find_cycle(self.svc, sid, lock, first)


def time_calls(fn: Any, reps: int) -> dict[str, float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    out.sort()
    return {"reps": reps, "p50_us": pct(out, 50), "p99_us": pct(out, 99),
            "mean_us": statistics.fmean(out)}


def deadlock_costs(n: int, reps: int) -> dict[str, Any]:
    rng = random.Random(7)
    out: dict[str, Any] = {"sessions": n}

    # (a) The realistic shape: every session holds a lock, most also wait for one held by a
    # later session (a random forest of wait chains, so no cycle), some share a lock.
    g = Graph()
    ss = g.sessions(n)
    for i, s in enumerate(ss):
        g.acq(s, f"L{i}")
    waits = 0
    for i in range(n - 1):
        if rng.random() < 0.9:
            j = rng.randrange(i + 1, min(n, i + 50))
            if g.acq(ss[i], f"L{j}").get("waiting"):
                waits += 1
    def chain_end(s: str) -> str:
        while g.svc.sessions[s].waits:
            lname = next(iter(g.svc.sessions[s].waits))
            s = next(iter(g.svc.locks[lname].holders))
        return s

    samples = []
    for _ in range(32):  # the end of a chain asking for a lock upstream: closes a cycle
        i = rng.randrange(n)
        samples.append((chain_end(ss[i]), f"L{i}"))
    for _ in range(32):  # a random session asking for a random held lock
        samples.append((ss[rng.randrange(n)], f"L{rng.randrange(n)}"))
    costs = []
    verdicts = 0
    for sid, lock in samples:
        if g.svc.locks[lock].holders.get(sid):
            continue  # its own lock: a reentrant grant, no search
        res = time_calls(lambda sid=sid, lock=lock: g.detect(sid, lock), max(5, reps // 64))
        costs.append(res["p50_us"])
        verdicts += g.detect(sid, lock) is not None
    costs.sort()
    out["forest"] = {
        "waits": waits, "requests": len(costs), "cycles_found": verdicts,
        "p50_us": pct(costs, 50), "p99_us": pct(costs, 99), "max_us": costs[-1],
        "what": "every session holds a lock; 90% also wait for a lock held by one of the next "
                "49 sessions (a forest of wait chains); 32 requests from the end of a chain "
                "for a lock upstream of it (they close a cycle), 32 random ones",
    }
    # The same requests, applied for real (refused ones change nothing, so they repeat).
    dl = next(((sid, lock) for sid, lock in samples if g.detect(sid, lock) is not None), None)
    if dl is not None:
        out["forest"]["refused_acquire_apply"] = time_calls(
            lambda: g.acq(dl[0], dl[1]), reps)
    t0 = time.perf_counter()
    cycles = all_cycles(g.svc)
    out["forest"]["full_scan_ms"] = (time.perf_counter() - t0) * 1000
    assert cycles == []

    # (b) 100 chains of 100 waits: closing a chain walks it (100 sessions).
    g = Graph()
    ss = g.sessions(n)
    for i, s in enumerate(ss):
        g.acq(s, f"k{i}")
    for c in range(n // 100):
        for j in range(99):
            g.acq(ss[c * 100 + j], f"k{c * 100 + j + 1}")
    out["chains_of_100"] = {
        "closing": time_calls(lambda: g.detect(ss[599], "k500"), reps),
        "refused_acquire_apply": time_calls(lambda: g.acq(ss[599], "k500"), reps),
        "not_closing": time_calls(lambda: g.detect(ss[99], "k250"), reps),
    }
    t0 = time.perf_counter()
    assert all_cycles(g.svc) == []
    out["chains_of_100"]["full_scan_ms"] = (time.perf_counter() - t0) * 1000

    # (c) Worst case for an incremental search: one chain through all n sessions; closing it
    # visits every one of them (O(reachable), here the whole graph).
    g = Graph()
    ss = g.sessions(n)
    for i, s in enumerate(ss):
        g.acq(s, f"c{i}")
    for i in range(n - 1):
        g.acq(ss[i], f"c{i + 1}")
    out["one_chain"] = {"closing": time_calls(lambda: g.detect(ss[-1], "c0"), max(5, reps // 20))}

    # (d) A long queue: n - 1 shared waiters behind one exclusive holder; an exclusive request
    # at the back waits for the whole run of shared waiters (n - 1 edges).
    g = Graph()
    ss = g.sessions(n)
    g.acq(ss[0], "q")
    for s in ss[1:-1]:
        g.acq(s, "q", SHARED)
    out["long_queue"] = {"exclusive_at_back": time_calls(lambda: g.detect(ss[-1], "q"),
                                                         max(5, reps // 20))}
    return out


# -- output ------------------------------------------------------------------------------------


def render_md(report: dict[str, Any]) -> str:
    m = report["machine"]
    u, k, d = report.get("uncontended"), report.get("contended"), report["deadlock"]
    lines = [
        "# lock_bench results", "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['python']}, load average at start "
        f"{m['loadavg_at_start']}. 3 nodes, client and nodes on the same machine.", "",
    ]
    if u:
        lines += [
            "## Uncontended acquire + release (one session, one lock, closed loop)", "",
            "| | ops/s | p50 ms | p99 ms | p99.9 ms | max ms |", "|---|---:|---:|---:|---:|---:|",
        ]
        for name, key in (("acquire+release", "pair_ms"), ("acquire", "acquire_ms"),
                          ("release", "release_ms")):
            s = u[key]
            lines.append(f"| {name} | {u['pairs_per_s']:.0f} | {s['p50']:.2f} | {s['p99']:.2f} "
                         f"| {s['p99.9']:.2f} | {s['max']:.2f} |")
        b = report.get("kv_put_baseline")
        if b:
            s = b["put_ms"]
            lines.append(f"| kv PUT, same cluster, for comparison | {b['puts_per_s']:.0f} | "
                         f"{s['p50']:.2f} | {s['p99']:.2f} | {s['p99.9']:.2f} | "
                         f"{s['max']:.2f} |")
        lines += ["", f"CPU during the phase: nodes {u['cpu_pct']['nodes']:.0f}%, client "
                      f"{u['cpu_pct']['client']:.0f}%, other processes "
                      f"{u['cpu_pct']['other']:.0f}% (100% = one core).", ""]
    if k:
        s = k["acquire_ms"]
        lines += [
            f"## Contended: {k['sessions']} sessions on {k['locks']} locks "
            f"({k['shared_ratio']:.0%} shared)", "",
            "| grants/s | exclusive | shared | acquire p50 ms | p99 ms | max ms | tokens ok |",
            "|---:|---:|---:|---:|---:|---:|---|",
            f"| {k['grants_per_s']:.0f} | {k['grants']['exclusive']} | {k['grants']['shared']} "
            f"| {s['p50']:.2f} | {s['p99']:.2f} | {s['max']:.2f} | "
            f"{k['exclusive_tokens_unique']} |", "",
            f"CPU: nodes {k['cpu_pct']['nodes']:.0f}%, client {k['cpu_pct']['client']:.0f}%, "
            f"other {k['cpu_pct']['other']:.0f}%.", "",
        ]
    f = d["forest"]
    c = d["chains_of_100"]
    lines += [
        f"## Deadlock detection on {d['sessions']:,} sessions (in process)", "",
        "| graph | request | p50 µs | p99 µs |", "|---|---|---:|---:|",
        f"| forest of wait chains ({f['waits']:,} waits) | {f['requests']} requests "
        f"({f['cycles_found']} close a cycle) | {f['p50_us']:.1f} | {f['p99_us']:.1f} |",
        f"| 100 chains of 100 | closing a chain (walks 100 sessions) | "
        f"{c['closing']['p50_us']:.1f} | {c['closing']['p99_us']:.1f} |",
        f"| 100 chains of 100 | the refused acquire, applied end to end | "
        f"{c['refused_acquire_apply']['p50_us']:.1f} | "
        f"{c['refused_acquire_apply']['p99_us']:.1f} |",
        f"| 100 chains of 100 | not closing (walks one chain) | "
        f"{c['not_closing']['p50_us']:.1f} | {c['not_closing']['p99_us']:.1f} |",
        f"| one chain through all sessions | closing it (walks all {d['sessions']:,}) | "
        f"{d['one_chain']['closing']['p50_us']:.1f} | {d['one_chain']['closing']['p99_us']:.1f} |",
        f"| {d['sessions'] - 2:,} shared waiters behind one holder | exclusive at the back "
        f"({d['sessions'] - 2:,} edges) | {d['long_queue']['exclusive_at_back']['p50_us']:.1f} | "
        f"{d['long_queue']['exclusive_at_back']['p99_us']:.1f} |",
        "",
        f"A full scan of the whole graph, for comparison: {f['full_scan_ms']:.1f} ms (forest), "
        f"{c['full_scan_ms']:.1f} ms (chains).", "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="3 s phases, fewer repetitions")
    p.add_argument("--contenders", type=int, default=16)
    p.add_argument("--locks", type=int, default=4)
    p.add_argument("--shared-ratio", type=float, default=0.25)
    p.add_argument("--graph-sessions", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=2000, help="repetitions per detection timing")
    p.add_argument("--no-cluster", action="store_true", help="only the in-process graph phase")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.reps = 3.0, 300
    return a


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu_model": cpu_model(), "cores": os.cpu_count(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "kernel": platform.release(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
    }
    m = report["machine"]
    print(f"{m['cpu_model']}, {m['cores']} cores, {m['python']}, load {m['loadavg_at_start']}")
    rc = 0
    if not args.no_cluster:
        work = Path(tempfile.mkdtemp(prefix="distsync-lockbench-"))
        lc = LocalCluster(3, data_dir=work / "cluster")
        try:
            lc.start()
            lc.wait_ready(timeout=60)
            lc.leader()
            asyncio.run(cluster_phases(args, lc, report))
        except KeyboardInterrupt:
            print("interrupted: stopping the cluster", file=sys.stderr)
            rc = 130
        finally:
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                lc.close()
                shutil.rmtree(work, ignore_errors=True)
            finally:
                signal.signal(signal.SIGINT, old)
        if rc:
            return rc
    print(f"building {args.graph_sessions:,}-session wait-for graphs ...", flush=True)
    report["deadlock"] = deadlock_costs(args.graph_sessions, args.reps)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    md = render_md(report)
    print()
    print(md)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "lock_bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "lock_bench.md").write_text(md + "\n")
        print(f"wrote {args.out / 'lock_bench.json'} and {args.out / 'lock_bench.md'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
