#!/usr/bin/env python3
"""Watch fan-out, distsync beside etcd in one run: kv events delivered per second to 1, 100
and 1,000 watchers of one prefix, and how long after the writer's acknowledgement each
watcher has the event. Not a test; see benchmarks/README.md, "Watch fan-out".

    python benchmarks/watch_bench.py                 # about 1.5 minutes
    python benchmarks/watch_bench.py --watchers 1,10 --duration 2 --systems distsync

Both systems run 3 members on loopback with their default durability (fsync on a majority
before a write is acknowledged), started by their `systems/` adapters, and are driven by the
same aiohttp client process: distsync's `GET /v1/watch` stream (newline-delimited JSON),
etcd's watch through its own gRPC gateway (`POST /v3/watch`, a stream of JSON messages).
The watchers are spread round-robin over the members, each its own HTTP connection, and
start from the next change.

One phase per (watcher count, system), interleaved so that load from other tenants of the
machine hits both alike. `--writers` closed-loop writers put 100-byte values under the
phase's prefix (to the leader), and each waits until *every* watcher has the event of its
write before it writes again: end-to-end back-pressure, so at most `--writers` writes are
in flight between the writer's call and the last watcher's receipt. Delivered events/s is
what that loop sustains; a watcher never falls behind its node's buffer (distsync cancels a
watcher 1,000 events behind, `--watch-buffer-events`), so what is measured is delivery, not
a slow-consumer policy.

Latency is taken in the client for every (watcher, event) pair: from the moment the writer
has the put's acknowledgement to the moment the watcher's stream has the event. It can be
negative: a watcher on the leader may get the event before the writer has the answer (both
are sent at the apply), and the client reads whichever its event loop picks first. The JSON
also has the time from the put's invocation to the event.

Memory: the servers' RSS, summed over the members, is read before a phase's streams open
and again with all of them open and idle, before any write; the difference over the watcher
count is the "RSS KiB/idle watcher" column (from 100 watchers up; below, it is noise). The
phases run from fewest watchers to most on one cluster per system, and a process keeps
memory it freed for reuse, so a phase's figure is net of what the smaller phase before it
left behind: slightly low.

Results: `results/watch_bench.{json,md}` and `results/watch-fanout.png` (unless
`--no-write`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

from raft_bench import _git_rev  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    CpuSampler,
    _clean,
    describe,
    describe_machine,
    latency_stats,
    machine_summary,
    ratio,
    render,
    rss_of,
    write_json,
)

SYSTEMS = ("distsync", "etcd")
DELIVERY_TIMEOUT_S = 10.0  # a writer waits this long for every watcher to have its event
OPEN_BATCH = 50  # watch streams opened at once while a phase sets up
READY_TIMEOUT_S = 60.0  # for all of a phase's watchers to be open
IDLE_SETTLE_S = 1.0  # with every stream open, before the RSS is read and the writes start
CLOSE_SETTLE_S = 1.2  # after a phase: distsync ends a closed stream at its next progress line
# distsync's per-node defaults, raised by the benchmark only when a phase needs more on one
# node (README "Watches", "Connection limits").
DISTSYNC_DEFAULT_PER_CLIENT = 1000  # --max-watchers-per-client
DISTSYNC_DEFAULT_CONNS_PER_CLIENT = 512  # --max-connections-per-client


# ------------------------------------------------------------------------------ accounting


@dataclass
class WatchResult:
    """One (watcher count, system) phase. `error` set: the phase could not run."""

    system: str
    watchers: int
    duration_s: float = 0.0
    writers: int = 0
    puts: int = 0  # acknowledged inside the measured window
    puts_per_s: float = math.nan
    events: int = 0  # (watcher, event) receipts inside the window
    events_per_s: float = math.nan
    p50_ms: float = math.nan  # put acknowledged -> event received, per (watcher, event)
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    max_ms: float = math.nan
    mean_ms: float = math.nan
    invoke_p50_ms: float = math.nan  # put invoked -> event received
    invoke_p99_ms: float = math.nan
    missing: int = 0  # (watcher, acknowledged put) pairs never received
    out_of_order: int = 0  # events at or below a revision the watcher already had
    unacked_events: int = 0  # events of puts whose answer the writer never got
    late_puts: int = 0  # puts not delivered to every watcher within DELIVERY_TIMEOUT_S
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    setup_s: float = 0.0  # opening the watch streams
    rss_before_mb: float | None = None  # the servers' RSS, summed, before the streams open
    rss_open_mb: float | None = None  # ... with every stream open, before any write
    kib_per_watcher: float | None = None  # (rss_open - rss_before) / watchers
    cpu: dict[str, Any] = field(default_factory=dict)
    rss_mb: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class Fanout:
    """The receiving side of a phase: which watcher has which revision, when each put was
    invoked and acknowledged, and a future per put that is done once every watcher has its
    event. Receipts may come before the acknowledgement (kept until it comes)."""

    def __init__(self, watchers: int, m_start: float, m_end: float,
                 clock: Any = time.perf_counter):
        self.n, self.m_start, self.m_end, self.clock = watchers, m_start, m_end, clock
        self.count: dict[int, int] = collections.defaultdict(int)  # revision -> receipts
        self.acked: dict[int, tuple[float, float]] = {}  # revision -> (invoked, acked)
        self.early: dict[int, list[float]] = collections.defaultdict(list)
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.last = [0] * watchers  # each watcher's highest revision so far
        self.got = [0] * watchers  # each watcher's receipts
        self.out_of_order = 0
        self.events_in_window = 0
        self.lat: list[float] = []  # ack -> receipt, s
        self.lat_invoke: list[float] = []  # invoke -> receipt, s

    def receive(self, w: int, revisions: list[int]) -> None:
        t = self.clock()
        inside = self.m_start <= t <= self.m_end
        for r in revisions:
            if r <= self.last[w]:
                self.out_of_order += 1
            else:
                self.last[w] = r
            self.got[w] += 1
            c = self.count[r] = self.count[r] + 1
            if inside:
                self.events_in_window += 1
                times = self.acked.get(r)
                if times is None:
                    self.early[r].append(t)
                else:
                    self.lat.append(t - times[1])
                    self.lat_invoke.append(t - times[0])
            if c >= self.n:
                fut = self.waiting.pop(r, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def ack(self, revision: int, invoked: float, acked: float) -> asyncio.Future[None]:
        """The put of `revision` was acknowledged: a future done when all watchers have it."""
        self.acked[revision] = (invoked, acked)
        for t in self.early.pop(revision, ()):
            self.lat.append(t - acked)
            self.lat_invoke.append(t - invoked)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.count.get(revision, 0) >= self.n:
            fut.set_result(None)
        else:
            self.waiting[revision] = fut
        return fut

    def missing(self) -> int:
        return sum(self.n - min(self.n, self.count.get(r, 0)) for r in self.acked)

    def unacked_events(self) -> int:
        return sum(c for r, c in self.count.items() if r not in self.acked)


# ---------------------------------------------------------------------------------- phase


async def phase(system: Any, session: aiohttp.ClientSession, label: str, watchers: int,
                prefix: str, args: argparse.Namespace) -> WatchResult:
    """Open `watchers` streams on `prefix`, run the writers for warm-up + duration, wait for
    the last deliveries, close the streams."""
    res = WatchResult(label, watchers, duration_s=args.duration, writers=args.writers)
    clock = time.perf_counter
    urls = system.watch_urls()
    if not urls:
        res.error = "no live member"
        return res
    errors: collections.Counter[str] = collections.Counter()
    fan = Fanout(watchers, math.inf, math.inf, clock)
    ready = [asyncio.Event() for _ in range(watchers)]
    ended: list[int] = []

    async def watcher(w: int) -> None:
        try:
            await system.watch(session, urls[w % len(urls)], prefix,
                               lambda revs: fan.receive(w, revs), ready[w])
            ended.append(w)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - counted, and the phase says so
            errors[f"watcher: {describe(e)}"] += 1
            ended.append(w)
            ready[w].set()  # so the setup does not wait for it

    res.rss_before_mb = _total(rss_of(system.pids()))
    t0 = clock()
    tasks: list[asyncio.Task[None]] = []
    try:
        for lo in range(0, watchers, OPEN_BATCH):
            batch = range(lo, min(watchers, lo + OPEN_BATCH))
            tasks += [asyncio.create_task(watcher(w)) for w in batch]
            await asyncio.wait_for(asyncio.gather(*(ready[w].wait() for w in batch)),
                                   READY_TIMEOUT_S)
        res.setup_s = clock() - t0
        if ended:
            res.error = (f"{len(ended)} of {watchers} watch streams failed to open: "
                         f"{', '.join(errors)}")
            return res
        await asyncio.sleep(IDLE_SETTLE_S)  # idle watchers: what each one holds
        res.rss_open_mb = _total(rss_of(system.pids()))
        if res.rss_before_mb is not None and res.rss_open_mb is not None:
            res.kib_per_watcher = (res.rss_open_mb - res.rss_before_mb) * 1024 / watchers
        start = clock()
        fan.m_start, fan.m_end = start + args.warmup, start + args.warmup + args.duration
        acked_in_window = [0]
        late = [0]

        async def writer(k: int) -> None:
            i = 0
            while clock() < fan.m_end:
                t_inv = clock()
                try:
                    rev = await system.watch_put(session, f"{prefix}w{k}/{i}")
                except Exception as e:  # noqa: BLE001
                    if fan.m_start <= clock() <= fan.m_end:
                        errors[f"put: {describe(e)}"] += 1
                    await asyncio.sleep(0.01)
                    continue
                finally:
                    i += 1
                t_ack = clock()
                if fan.m_start <= t_ack <= fan.m_end:
                    acked_in_window[0] += 1
                done, _ = await asyncio.wait({fan.ack(rev, t_inv, t_ack)},
                                             timeout=DELIVERY_TIMEOUT_S)
                if not done:
                    late[0] += 1

        cpu = CpuSampler(system.pids())

        async def sampler() -> None:
            await asyncio.sleep(max(0.0, fan.m_start - clock()))
            cpu.mark()
            await asyncio.sleep(max(0.0, fan.m_end - clock()))
            res.cpu = cpu.stop()
            res.rss_mb = rss_of(system.pids())

        await asyncio.gather(sampler(), *(writer(k) for k in range(args.writers)))
        # Deliveries of the last puts still under way come in before the count.
        deadline = clock() + DELIVERY_TIMEOUT_S
        while fan.missing() and clock() < deadline and len(ended) < watchers:
            await asyncio.sleep(0.05)
    except TimeoutError:
        res.error = (f"watch streams not open after {READY_TIMEOUT_S:.0f} s "
                     f"({sum(e.is_set() for e in ready)} of {watchers})")
        return res
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(CLOSE_SETTLE_S)  # the servers notice the closed streams
    res.puts, res.puts_per_s = acked_in_window[0], acked_in_window[0] / args.duration
    res.events, res.events_per_s = fan.events_in_window, fan.events_in_window / args.duration
    stats = latency_stats(fan.lat)
    res.p50_ms, res.p99_ms, res.p999_ms = stats["p50_ms"], stats["p99_ms"], stats["p999_ms"]
    res.max_ms, res.mean_ms = stats["max_ms"], stats["mean_ms"]
    inv = latency_stats(fan.lat_invoke)
    res.invoke_p50_ms, res.invoke_p99_ms = inv["p50_ms"], inv["p99_ms"]
    res.missing, res.out_of_order = fan.missing(), fan.out_of_order
    res.unacked_events, res.late_puts = fan.unacked_events(), late[0]
    res.errors, res.error_types = sum(errors.values()), dict(errors)
    if ended:
        res.notes.append(f"{len(ended)} watch streams ended during the phase")
    return res


# ------------------------------------------------------------------------------- tables


def _num(v: float | None, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{nd}f}"


def _total(d: dict[str, float | None]) -> float | None:
    v = list(d.values())
    return None if not v or None in v else sum(v)  # type: ignore[arg-type]


def _span(d: dict[str, Any] | None) -> str:
    v = [x for x in (d or {}).values() if x is not None]
    if not v:
        return "-"
    lo, hi = f"{min(v):.0f}", f"{max(v):.0f}"
    return lo if lo == hi else f"{lo}-{hi}"


def rows(results: list[WatchResult], ours: str = "distsync") -> list[list[str]]:
    """One row per (watchers, system); the ratio is distsync's events/s over the row's,
    measured in the same run at the same watcher count."""
    head = ["watchers", "system", "puts/s", "events/s", "ack->event p50 ms", "p99 ms",
            "max ms", "put->event p50 ms", "missing", "out of order", "errors",
            "client CPU %", "servers CPU %", "other CPU %", "RSS MiB/node",
            "RSS KiB/idle watcher", f"{ours}/this events/s"]
    out = [head]
    by_n: dict[int, list[WatchResult]] = collections.defaultdict(list)
    for r in results:
        by_n[r.watchers].append(r)
    for n in sorted(by_n):
        mine = next((r for r in by_n[n] if r.system == ours and r.error is None), None)
        for r in by_n[n]:
            if r.error is not None:
                out.append([str(n), r.system, f"ERROR: {r.error[:60]}", *["-"] * (len(head) - 3)])
                continue
            other = r is mine or mine is None
            rat = ratio(mine.events_per_s, r.events_per_s) if not other and mine else None
            out.append([
                str(n), r.system, _num(r.puts_per_s), _num(r.events_per_s),
                _num(r.p50_ms, 2), _num(r.p99_ms, 2), _num(r.max_ms, 2),
                _num(r.invoke_p50_ms, 2), str(r.missing), str(r.out_of_order),
                str(r.errors), _num(r.cpu.get("client"), 0),
                _num(r.cpu.get("servers_total"), 0), _num(r.cpu.get("other"), 0),
                _span(r.rss_mb), _num(r.kib_per_watcher, 1) if r.watchers >= 100 else "-",
                "-" if rat is None else f"{rat:.2f}x",
            ])
    return out


def render_md(report: dict[str, Any], results: list[WatchResult]) -> str:
    a = report["config"]
    lines = [
        f"# Watch fan-out ({report['started_at']}, git {report['git']})", "",
        "```", machine_summary(report["machine"]), "```", "",
        f"Command: `{report['command']}`. Phases: {a['duration']:g} s measured after "
        f"{a['warmup']:g} s warm-up; {a['writers']} closed-loop writers, each waiting until "
        "every watcher has its event before the next put; watchers spread round-robin over "
        "the 3 members; one aiohttp client process on the same machine as the servers. "
        f"Total {report.get('total_s', 0):.0f} s.", "",
        "| system | durability of an acknowledged write | watch |", "|---|---|---|",
    ]
    for name, s in report["systems"].items():
        lines.append(f"| {name} | {s.get('durability') or 'ERROR: ' + s.get('error', '')} | "
                     f"{s.get('watch', '')} |")
    lines += ["", render(rows(results), markdown=True), ""]
    notes = [f"- {r.system} x{r.watchers}: {n}" for r in results for n in r.notes]
    notes += [f"- {r.system} x{r.watchers}: errors {r.error_types}" for r in results
              if r.error_types]
    notes += [f"- {r.system} x{r.watchers}: {r.late_puts} puts not delivered to every watcher "
              f"within {DELIVERY_TIMEOUT_S:.0f} s" for r in results if r.late_puts]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    if report.get("plots"):
        lines += [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(lines)


def plot(results: list[WatchResult], path: Path) -> None:
    """Delivered events/s and ack->event latency (p50, p99) against the watcher count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    by_sys: dict[str, list[WatchResult]] = collections.defaultdict(list)
    for r in results:
        if r.error is None:
            by_sys[r.system].append(r)
    for name, rs in by_sys.items():
        rs.sort(key=lambda r: r.watchers)
        xs = [r.watchers for r in rs]
        ax1.plot(xs, [r.events_per_s for r in rs], marker="o", label=name)
        line, = ax2.plot(xs, [r.p50_ms for r in rs], marker="o", label=f"{name} p50")
        ax2.plot(xs, [r.p99_ms for r in rs], marker="s", linestyle="--",
                 color=line.get_color(), label=f"{name} p99")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("watchers of one prefix")
        ax.grid(True, alpha=0.3)
        if by_sys:
            ax.legend(fontsize="small")
    ax1.set_ylabel("events/s delivered (all watchers)")
    ax1.set_title("watch fan-out: delivered events/s")
    ax2.set_ylabel("ms, put acknowledged -> event received")
    ax2.set_title("watch delivery latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- run


def _distsync_args(watchers: int, writers: int, nodes: int) -> list[str]:
    """The per-node limits a phase needs, where they exceed distsync's defaults (one client
    address holds every watcher and writer connection)."""
    per_node = -(-watchers // nodes)
    extra = []
    if per_node > DISTSYNC_DEFAULT_PER_CLIENT:
        extra += ["--max-watchers-per-client", str(per_node)]
    if per_node + writers + 8 > DISTSYNC_DEFAULT_CONNS_PER_CLIENT:
        extra += ["--max-connections-per-client", str(per_node + writers + 64)]
    return extra


def make_system(name: str, args: argparse.Namespace, work: Path) -> Any:
    if name == "distsync":
        from benchmarks.systems.distsync import Distsync

        return Distsync(args.nodes, work / "distsync",
                        extra_args=_distsync_args(max(args.watchers), args.writers, args.nodes))
    from benchmarks.systems.etcd import Etcd, available

    if not available():
        raise RuntimeError("etcd is not installed (apt-get install etcd-server, or run "
                           "benchmarks/setup_peers.py)")
    return Etcd(args.nodes, str(work / "etcd"))


WATCH_API = {
    "distsync": "GET /v1/watch?prefix= (NDJSON stream, from the next change)",
    "etcd": "POST /v3/watch through etcd's gRPC gateway (JSON message stream)",
}


async def run(args: argparse.Namespace, work: Path, report: dict[str, Any],
              results: list[WatchResult]) -> None:
    t_start = time.monotonic()
    report["machine"] = describe_machine(work)
    print(machine_summary(report["machine"]), flush=True)
    systems: dict[str, Any] = {}
    try:
        for name in args.systems:
            print(f"starting {name} ...", flush=True)
            try:
                system = make_system(name, args, work)
                systems[name] = system
                took = await system.start()
                report["systems"][name] = {
                    "durability": system.durability, "nodes": system.nodes,
                    "start_to_ready_s": round(took, 3), "watch": WATCH_API[name],
                    "rss_idle_mb": rss_of(system.pids())}
                print(f"  {name}: {system.nodes} node(s) ready in {took:.2f} s", flush=True)
            except Exception as e:  # noqa: BLE001 - the table says so
                report["systems"][name] = {"error": f"did not start: {describe(e)}",
                                           "watch": WATCH_API[name]}
                print(f"  {name}: {report['systems'][name]['error']}", flush=True)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=10)) as session:
            for n in args.watchers:
                for name in args.systems:
                    down = report["systems"][name].get("error")
                    if down:
                        results.append(WatchResult(name, n, error=down))
                        continue
                    system = systems[name]
                    print(f"  {n} watchers, {name} ...", flush=True)
                    try:
                        await system.prepare("put", session, 1)  # finds the leader
                        prefix = f"wb/{report['run_id']}/{name}/n{n}/"
                        r = await phase(system, session, name, n, prefix, args)
                    except Exception as e:  # noqa: BLE001
                        r = WatchResult(name, n, error=describe(e))
                    results.append(r)
                    if r.error is None:
                        print(f"    {r.events_per_s:,.0f} events/s, {r.puts_per_s:,.0f} puts/s, "
                              f"ack->event p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms, "
                              f"missing {r.missing}, errors {r.errors}", flush=True)
                    else:
                        print(f"    ERROR: {r.error}", flush=True)
    finally:
        for name, system in systems.items():
            try:
                await system.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"stopping {name}: {describe(e)}", file=sys.stderr)
        report["total_s"] = round(time.monotonic() - t_start, 1)
    print("\n== Watch fan-out: events delivered to N watchers of one prefix\n"
          + render(rows(results)), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--watchers", default="1,100,1000", help="watcher counts, one phase each")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="distsync,etcd")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--writers", type=int, default=8,
                   help="closed-loop writers (puts in flight until delivered to all)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    a = p.parse_args(argv)
    a.watchers = [int(x) for x in a.watchers.split(",") if x]
    a.systems = [s for s in a.systems.split(",") if s]
    bad = set(a.systems) - set(SYSTEMS)
    if bad:
        p.error(f"unknown systems: {', '.join(sorted(bad))}")
    if min(a.watchers, default=0) < 1 or a.writers < 1:
        p.error("--watchers and --writers must be >= 1")
    return a


def write_results(args: argparse.Namespace, report: dict[str, Any],
                  results: list[WatchResult]) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        plot(results, out / "watch-fanout.png")
        report["plots"] = ["watch-fanout.png"]
    except Exception as e:  # noqa: BLE001 - e.g. matplotlib missing: say so, keep the rest
        report["plot_error"] = f"plot not drawn: {describe(e)} (pip install matplotlib)"
    report["results"] = [asdict(r) for r in results]
    report["table"] = rows(results)
    write_json(out / "watch_bench.json", _clean(report))
    (out / "watch_bench.md").write_text(render_md(report, results))
    print(f"\nwrote {out / 'watch_bench.json'}, {out / 'watch_bench.md'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="distsync-watch-bench-"))
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": _git_rev(),
        "command": "python benchmarks/watch_bench.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "run_id": f"{int(time.time())}-{os.getpid()}",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "systems": {},
    }
    results: list[WatchResult] = []
    rc = 0

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await run(args, work, report, results)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stop in run() must finish

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process stopped", file=sys.stderr)
        rc = 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rc == 0 and not args.no_write:
        write_results(args, report, results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
