"""The measuring half of `run.py`: one closed-loop load generator, one way to summarise
latencies, one way to sample the servers' CPU and memory, and one table layout, so every
system in the side-by-side run is timed and reported identically.

The low-level probes (percentile, /proc CPU counters, machine description, fsync probe, the
text and Markdown table renderers) come from `raft_bench.py`, so a number here means the
same as the same number there.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def ensure_bench_path() -> None:
    """The older benchmark scripts import each other as top-level modules (`raft_bench`,
    `queue_bench`); make that work however this package was reached (`run.py`, pytest,
    `python -m benchmarks.systems.etcd`)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.append(str(BENCH_DIR))  # last: never shadow an installed module


ensure_bench_path()

from raft_bench import (  # noqa: E402
    _pct,
    _proc_cpu_seconds,
    _render_md,
    _render_text,
    _system_busy_seconds,
    machine_info,
    machine_text,
    probe_fsync,
)

from benchmarks.interp import python_summary  # noqa: E402

# A step of the closed loop: (worker, i) -> units of work done (messages), None meaning 1.
Step = Callable[[int, int], Awaitable[int | None]]

DRAIN_TIMEOUT_S = 30.0  # requests still in flight when the window closes get this long
ERROR_BACKOFF_S = 0.01  # a failing peer must not turn the loop into a busy spin
CDF_POINTS = 200


# ------------------------------------------------------------------------------ statistics


def pct(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    return _pct(sorted(values), p)


def latency_stats(latencies_s: Iterable[float]) -> dict[str, float]:
    """p50/p99/p99.9/max/mean in ms, nearest rank (the same as raft_bench)."""
    v = sorted(latencies_s)
    if not v:
        return {k: math.nan for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")}
    return {
        "p50_ms": _pct(v, 50) * 1e3, "p99_ms": _pct(v, 99) * 1e3,
        "p999_ms": _pct(v, 99.9) * 1e3, "max_ms": v[-1] * 1e3,
        "mean_ms": sum(v) / len(v) * 1e3,
    }


def cdf_points(latencies_s: Iterable[float], n: int = CDF_POINTS) -> list[list[float]]:
    """[[percentile, ms], ...] at `n` evenly spaced ranks plus the max: enough to draw a
    CDF from the JSON without keeping every sample."""
    v = sorted(latencies_s)
    if not v:
        return []
    pts = [[round(100 * i / n, 3), round(_pct(v, 100 * i / n) * 1e3, 4)] for i in range(1, n)]
    return pts + [[100.0, round(v[-1] * 1e3, 4)]]


# ---------------------------------------------------------------------------- processes


def rss_mb(pid: int) -> float | None:
    """Resident set of a process in MiB (VmRSS), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def rss_of(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: rss_mb(pid) for name, pid in pids.items()}


class CpuSampler:
    """CPU of each server process, of this client process and of everything else on the
    machine, in % of one core between `mark()` and `stop()`. "Other" is what makes a run on
    a shared machine pessimistic, so it goes into every row."""

    def __init__(self, pids: dict[str, int]):
        self.pids = dict(pids)
        self.before: dict[str, float | None] = {}
        self.t0 = 0.0

    def _now(self) -> dict[str, float | None]:
        snap: dict[str, float | None] = {n: _proc_cpu_seconds(p) for n, p in self.pids.items()}
        snap["__client__"] = time.process_time()
        snap["__system__"] = _system_busy_seconds()
        return snap

    def mark(self) -> None:
        self.t0, self.before = time.monotonic(), self._now()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        after = self._now()
        if not self.before or wall <= 0:
            return {}
        pct = {}
        for name, b in self.before.items():
            a = after.get(name)
            if a is not None and b is not None:
                pct[name] = round(100 * (a - b) / wall, 1)
        system = pct.pop("__system__", None)
        client = pct.pop("__client__", None)
        servers = round(sum(pct.values()), 1)
        other = None
        if system is not None:
            other = round(max(0.0, system - servers - (client or 0.0)), 1)
        return {"servers": pct, "servers_total": servers, "client": client, "other": other}


# ---------------------------------------------------------------------------- the loop


@dataclass
class Result:
    """One (system, workload, concurrency) cell of the report. `error` set means the phase
    could not run at all (a peer that failed to start, an unsupported workload); the table
    prints it in place of the numbers."""

    system: str
    workload: str
    concurrency: int
    duration_s: float = 0.0
    requests: int = 0
    units: int = 0  # messages for the queue, = requests elsewhere
    per_s: float = math.nan  # units per second inside the measured window
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    max_ms: float = math.nan
    mean_ms: float = math.nan
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cpu: dict[str, Any] = field(default_factory=dict)
    rss_mb: dict[str, float | None] = field(default_factory=dict)
    cdf: list[list[float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def failed(cls, system: str, workload: str, concurrency: int, error: str) -> Result:
        return cls(system, workload, concurrency, error=error)


def describe(exc: BaseException) -> str:
    """A one-line, table-sized name for an exception."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:80]}" if text else type(exc).__name__


async def closed_loop(
    step: Step, concurrency: int, duration: float, warmup: float,
    pids: dict[str, int] | None = None, keep_cdf: bool = False,
) -> Result:
    """`concurrency` workers, each with one request in flight, for `warmup + duration` s.
    A request counts when it completes inside the measured window (after the warm-up); its
    latency runs from invoke to parsed answer. Errors are counted by kind, never retried
    here. CPU is sampled over the window and RSS at its end (the "under load" figure)."""
    clock = time.perf_counter
    start = clock()
    m_start, m_end = start + warmup, start + warmup + duration
    lats: list[float] = []
    units = 0
    errors: collections.Counter[str] = collections.Counter()
    cpu = CpuSampler(pids or {})

    async def worker(w: int) -> None:
        nonlocal units
        i = 0
        while clock() < m_end:
            t0 = clock()
            try:
                n = await step(w, i)
            except Exception as e:  # noqa: BLE001 - counted and reported
                if m_start <= clock() <= m_end:
                    errors[describe(e)] += 1
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            finally:
                i += 1
            t1 = clock()
            if m_start <= t1 <= m_end:
                lats.append(t1 - t0)
                units += 1 if n is None else n

    async def sampler() -> dict[str, Any]:
        await asyncio.sleep(max(0.0, m_start - clock()))
        cpu.mark()
        await asyncio.sleep(max(0.0, m_end - clock()))
        return {"cpu": cpu.stop(), "rss": rss_of(pids or {})}

    tasks = [asyncio.create_task(worker(w)) for w in range(concurrency)]
    probe = asyncio.create_task(sampler())
    try:
        sampled = await probe
        done, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for t in (*tasks, probe):
            t.cancel()
    res = Result("", "", concurrency, duration_s=duration, requests=len(lats), units=units,
                 per_s=units / duration, errors=sum(errors.values()),
                 error_types=dict(errors), cpu=sampled["cpu"], rss_mb=sampled["rss"],
                 **latency_stats(lats))
    if keep_cdf:
        res.cdf = cdf_points(lats)
    if pending:
        res.notes.append(f"{len(pending)} requests still unanswered {DRAIN_TIMEOUT_S:.0f} s "
                         "after the window closed (cancelled)")
    return res


# ------------------------------------------------------------------------------ machine


def describe_machine(data_dir: Path) -> dict[str, Any]:
    """raft_bench's machine description plus its fsync probe and the load average, so every
    result file says what it was measured on and how busy the machine was."""
    m = machine_info(data_dir)
    m["fsync_probe"] = probe_fsync(data_dir)
    m["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return m


def machine_summary(m: dict[str, Any]) -> str:
    text = machine_text(m) + f"\nLoad:     {m.get('loadavg_at_start')} (1/5/15 min) at start"
    if m.get("node_python"):
        text += f"\nNodes on: {python_summary(m['node_python'], BENCH_DIR.parent)}"
    return text


# ------------------------------------------------------------------------------- tables


def _num(v: float | None, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{nd}f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, None when either side has no number."""
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return None
    return ours / theirs


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def server_cpu_us(r: Result) -> float | None:
    """The servers' CPU per unit of the row (operation, pair, message), in microseconds:
    their CPU over the measured window (% of one core) divided by the units per second."""
    total = r.cpu.get("servers_total")
    if total is None or not r.per_s or math.isnan(r.per_s):
        return None
    return total * 1e4 / r.per_s


def comparison_rows(results: list[Result], unit: str = "ops/s", ours: str = "distsync",
                    extra_ratio: dict[int, tuple[str, float | None]] | None = None,
                    ) -> list[list[str]]:
    """One row per (concurrency, system): throughput, p50/p99/p99.9/max, errors, the CPU
    that processes outside the benchmark used meanwhile (high: a pessimistic row), the
    servers' CPU per unit (server_cpu_us), and the ratios distsync/this system measured in
    the same run (throughput; p50, where below 1 means distsync is faster). Why the CPU
    column: at c=1 distsync and etcd spent about the same CPU per write while etcd answered
    sooner (stop 33), so a gap is made of where the CPU sits, not how much there is; the
    table should show which. A phase that could not run shows its error in place of the
    numbers. `extra_ratio[c] = (label, value)` appends one more comparison column (e.g. the
    cache hit GET against etcd's linearizable GET)."""
    per = unit.removesuffix("/s").removesuffix("s")
    head = ["c", "system", unit, "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
            "other CPU %", f"server CPU us/{per}", f"{ours}/this {unit}", f"{ours}/this p50"]
    if extra_ratio:
        head.append(next(iter(extra_ratio.values()))[0])
    rows = [head]
    by_c: dict[int, list[Result]] = collections.defaultdict(list)
    for r in results:
        by_c[r.concurrency].append(r)
    for c in sorted(by_c):
        mine = next((r for r in by_c[c] if r.system == ours and r.error is None), None)
        for r in by_c[c]:
            if r.error is not None:
                row = [str(c), r.system, f"ERROR: {r.error[:48]}", *["-"] * 9]
            else:
                errs = str(r.errors)
                is_ours = r.system == ours
                row = [str(c), r.system, _num(r.per_s), _num(r.p50_ms, 2), _num(r.p99_ms, 2),
                       _num(r.p999_ms, 2), _num(r.max_ms, 2), errs,
                       _num(r.cpu.get("other"), 0), _num(server_cpu_us(r), 0),
                       "-" if is_ours or mine is None else _fmt_ratio(ratio(mine.per_s, r.per_s)),
                       "-" if is_ours or mine is None else _fmt_ratio(ratio(mine.p50_ms,
                                                                             r.p50_ms))]
            if extra_ratio:
                row.append(_fmt_ratio(extra_ratio.get(c, ("", None))[1])
                           if r.system == ours else "-")
            rows.append(row)
    return rows


def median_interval(values: list[float], coverage: float = 0.95) -> dict[str, float]:
    """The median of `values` and the distribution-free interval for it: the k-th smallest
    and k-th largest value bound the median with probability 1 - 2 P(Binomial(n, 1/2) < k).
    The narrowest such pair that still covers `coverage`; with few values, the widest pair,
    whatever it covers (the coverage is part of the answer). No assumption about how this
    host's noise is shaped, and no random resampling."""
    r = sorted(values)
    n = len(r)
    if n == 0:
        return {"n": 0}

    def below(k: int) -> float:
        return sum(math.comb(n, j) for j in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and below(k + 1) <= (1 - coverage) / 2:
        k += 1
    return {"n": n, "median": statistics.median(r), "lo": r[k - 1], "hi": r[n - k],
            "coverage": 1 - 2 * below(k)}


# The least coverage at which an interval may say "higher" or "lower": five rounds (93.75 %).
# With fewer, the interval is the rounds' range and misses the median too often (one round
# covers it 0 % of the time, four 87.5 %) for its side of 1.0 to mean anything.
MIN_VERDICT_COVERAGE = 0.9


def verdict(iv: dict[str, float], above: str, below_: str) -> str:
    """What an interval of ratios shows against 1.0, if it covers the median often enough."""
    if not iv.get("n"):
        return "no rounds"
    if iv["coverage"] < MIN_VERDICT_COVERAGE:
        return f"too few rounds ({iv['coverage'] * 100:.0f} % coverage)"
    if iv["lo"] > 1:
        return above
    if iv["hi"] < 1:
        return below_
    return "no difference shown"


def _fmt_interval(iv: dict[str, float]) -> str:
    if not iv.get("n"):
        return "-"
    return f"{iv['lo']:.2f}x .. {iv['hi']:.2f}x ({iv['coverage'] * 100:.0f} %)"


def rounds_rows(rounds: list[list[Result]], unit: str = "ops/s", ours: str = "distsync",
                ) -> list[list[str]]:
    """The same phases repeated in `rounds` (each round runs every system at every
    concurrency, interleaved): per (concurrency, peer), the ratio distsync/peer of each
    round and their median. On a shared VM one phase's ratio swings with the host (this
    machine: PUT c=1 from 0.6x to 1.0x between back-to-back runs), so a single round is
    one draw; the median of rounds measured side by side is the number to quote, with the
    interval that bounds it (median_interval: with 3 rounds it covers only 75 %)."""
    head = ["c", "system", "rounds", f"median {unit}", "median p50 ms",
            f"{ours}/this {unit} per round", f"median {ours}/this {unit}",
            f"interval of the median {unit} ratio", f"{ours}/this p50 per round",
            f"median {ours}/this p50", "interval of the median p50 ratio"]
    rows = [head]
    cells: dict[tuple[int, str], list[Result | None]] = {}
    order: list[tuple[int, str]] = []
    for i, rnd in enumerate(rounds):
        for r in rnd:
            key = (r.concurrency, r.system)
            if key not in cells:
                cells[key] = [None] * len(rounds)
                order.append(key)
            cells[key][i] = r if r.error is None else None
    for c, system in sorted(order, key=lambda k: (k[0], k[1] != ours, order.index(k))):
        mine = cells.get((c, ours), [None] * len(rounds))
        theirs = cells[(c, system)]
        ok = [r for r in theirs if r is not None]
        row = [str(c), system, str(len(ok)),
               _num(statistics.median(r.per_s for r in ok)) if ok else "-",
               _num(statistics.median(r.p50_ms for r in ok), 2) if ok else "-"]
        if system == ours:
            row += ["-"] * 6
        else:
            for field_ in ("per_s", "p50_ms"):
                per = [ratio(getattr(m, field_), getattr(t, field_))
                       if m is not None and t is not None else None
                       for m, t in zip(mine, theirs, strict=True)]
                got = [p for p in per if p is not None]
                row += [" / ".join(_fmt_ratio(p) for p in per),
                        _fmt_ratio(statistics.median(got)) if got else "-",
                        _fmt_interval(median_interval(got))]
        rows.append(row)
    return rows


def render(rows: list[list[str]], markdown: bool = False) -> str:
    return _render_md(rows) if markdown else _render_text(rows)


# --------------------------------------------------------------------------------- JSON


def _clean(obj: Any) -> Any:
    """NaN is not JSON: write null instead, so any JSON reader can load the results."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, Result):
        return _clean(asdict(obj))
    return obj


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(report), indent=1) + "\n")
