#!/usr/bin/env python3
"""Throughput and latency of distsync's replicated key-value register on a real 3-node cluster.

Not a test: a measurement you run by hand (see benchmarks/README.md).

What it does:

1. Prints the machine (CPU model, cores, Python, the data directory's file system) and probes
   the raw fsync latency of that file system, so the numbers below can be read against it.
2. Starts 3 real `distsync node` processes on loopback (`distsync.local.LocalCluster`) with a
   temporary data directory and the product's normal durability (the segmented log: every
   Ready batch is written and fdatasync'ed once before it is acknowledged).
3. Finds the leader and points ONE asyncio `distsync.client.Client` (one aiohttp session) at it.
4. For each concurrency (default 1 and 64) runs a fixed-duration workload of kv PUTs (unique
   keys, ~100-byte values) with that many worker tasks, each issuing one request at a time.
   Latency is measured per request from invoke (`await client.put(...)` starts) to
   acknowledgement (the leader's 200 reply is parsed), i.e. including the client library.
5. Does the same for linearizable GETs (ReadIndex on the leader) of keys written in step 4.
6. Prints two tables and writes benchmarks/results/raft_bench.json and .md.
7. With `--profile SECONDS`, runs one more c=64 PUT phase and one more c=64 GET phase (NOT
   part of the tables) while `py-spy record` samples the leader process, and writes the raw
   collapsed stacks plus a top-N summary next to the results.

The cluster processes are stopped (SIGTERM, then SIGKILL) on every exit path: normal end,
exception, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distsync.client import Client
from distsync.local import LocalCluster

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"

VALUE_BYTES = 100
PROFILE_RATE_HZ = 200


# -------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mount_of(path: Path) -> dict[str, str]:
    """The /proc/mounts entry with the longest mount point that contains `path`."""
    best: dict[str, str] = {}
    p = str(path.resolve())
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype, opts, *_ = line.split()
                mnt = mnt.replace("\\040", " ")
                if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best.get("mount", "")
                ):
                    best = {"device": dev, "mount": mnt, "fstype": fstype, "options": opts}
    except OSError:
        pass
    dev = best.get("device", "")
    if dev.startswith("/dev/"):
        name = os.path.basename(os.path.realpath(dev))
        for cand in (name, re.sub(r"p?\d+$", "", name)):
            rot = Path(f"/sys/block/{cand}/queue/rotational")
            if rot.exists():
                best["rotational"] = rot.read_text().strip()
                break
    return best


def probe_fsync(directory: Path, n: int = 200, size: int = 4096) -> dict[str, float]:
    """Append `size` bytes + fsync, `n` times: roughly what one WAL commit costs the disk."""
    path = directory / "fsync-probe.bin"
    buf = os.urandom(size)
    lat = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(n):
            os.write(fd, buf)
            t0 = time.perf_counter()
            os.fsync(fd)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    lat.sort()
    return {
        "n": n,
        "bytes": size,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
        "mean_ms": statistics.fmean(lat) * 1e3,
    }


def idle_polling(sys_root: Path = Path("/sys")) -> dict[str, Any]:
    """How this machine's idle CPUs wait: the cpuidle driver, and on a KVM guest whether it
    polls before halting (`guest_halt_poll_ns`, 0 = halts at once). A request at c=1 wakes
    an idle vCPU several times; on this project's 2-vCPU VM one run with polling on was
    23-36 % faster at PUT c=1 for every system and the next one was not (benchmarks/
    README.md, "Wake-ups on a VM"), so a result says which way it was measured."""
    out: dict[str, Any] = {}
    driver = sys_root / "devices/system/cpu/cpuidle/current_driver"
    poll = sys_root / "module/haltpoll/parameters/guest_halt_poll_ns"
    with contextlib.suppress(OSError, ValueError):
        out["cpuidle_driver"] = driver.read_text().strip()
    with contextlib.suppress(OSError, ValueError):
        out["guest_halt_poll_ns"] = int(poll.read_text().strip())
    return out


def machine_info(data_dir: Path) -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "platform": platform.platform(),
        "data_dir": str(data_dir),
        "filesystem": _mount_of(data_dir),
        "idle": idle_polling(),
        "fsync_note": (
            "real fsync: each node appends every Raft Ready batch to its segmented log with one "
            "fdatasync; nothing is acknowledged before a majority "
            "(leader + 1 follower) has it durable"
        ),
    }


def _git_rev() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -------------------------------------------------------------------------------- helpers


def _pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck


def _system_busy_seconds() -> float | None:
    """CPU seconds all cores spent not idle (from the `cpu` line of /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _scrape(addr: str) -> dict[str, float]:
    """The few node metrics the report uses (Prometheus text format)."""
    want = (
        "distsync_storage_batch_entries_sum", "distsync_storage_batch_entries_count",
        "distsync_storage_fsync_seconds_sum", "distsync_storage_fsync_seconds_count",
        "distsync_apply_latency_seconds_sum", "distsync_apply_latency_seconds_count",
        "distsync_raft_term", "distsync_raft_commit_index", "distsync_raft_snapshot_index",
        "distsync_raft_leader_changes_total",
    )
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, val = line.rpartition(" ")
        if name in want:
            try:
                out[name] = float(val)
            except ValueError:
                pass
    return out


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


# ------------------------------------------------------------------------------- workload


@dataclass
class PhaseResult:
    kind: str  # "put" | "get"
    concurrency: int
    duration_s: float
    ops: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    error_types: dict[str, int] = field(default_factory=dict)
    cpu_percent: dict[str, float] = field(default_factory=dict)  # process -> % of one core
    # Whole machine, same units; "other" = busy CPU not spent by the client or the nodes
    # (other tenants, py-spy, the kernel's own threads). High values mean a noisy run.
    system_cpu_percent: float | None = None
    other_cpu_percent: float | None = None
    ops_whole_phase: int = 0  # completions incl. warm-up and drain (the metrics' window)
    leader_fsyncs: float | None = None
    leader_fsyncs_per_op: float | None = None  # over the whole phase
    leader_entries_per_fsync: float | None = None
    leader_fsync_mean_ms: float | None = None
    leader_apply_mean_ms: float | None = None  # server side: proposal -> applied on leader
    # Share of the phase the leader's Raft loop spent awaiting storage (write + fsync); the
    # loop steps no messages and takes no proposals meanwhile.
    leader_storage_busy_percent: float | None = None
    follower_fsyncs: dict[str, float] = field(default_factory=dict)
    follower_fsync_mean_ms: dict[str, float] = field(default_factory=dict)
    leader_term_before: float | None = None
    leader_term_after: float | None = None


class Workload:
    def __init__(self, client: Client, lc: LocalCluster, leader: str, seed: int = 1):
        self.client = client
        self.lc = lc
        self.leader = leader
        self.rng = random.Random(seed)
        self.written: list[str] = []
        # ~100 bytes of printable text (JSON string), fresh per run but fixed per request.
        self.value = "".join(self.rng.choices(string.ascii_letters + string.digits, k=VALUE_BYTES))
        self.run_id = f"{int(time.time())}-{os.getpid()}"

    def _pids(self) -> dict[str, int]:
        pids = {"bench-client": os.getpid()}
        for nid, nd in self.lc.nodes.items():
            if nd.proc is not None and nd.proc.poll() is None:
                pids[nid + (" (leader)" if nid == self.leader else "")] = nd.proc.pid
        return pids

    async def phase(
        self, kind: str, conc: int, duration: float, warmup: float, record_keys: bool = False,
    ) -> PhaseResult:
        client, value = self.client, self.value
        loop_time = time.perf_counter
        lats: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        keys_out: list[str] = []
        done = [0]
        read_pool = self.written
        if kind == "get" and not read_pool:
            raise RuntimeError("GET phase needs keys written by a PUT phase first")
        prefix = f"bench/{self.run_id}/{kind}-c{conc}"

        metrics_before = {nid: _scrape(nd.addr) for nid, nd in self.lc.nodes.items()}
        metrics_t0 = time.perf_counter()
        pids = self._pids()

        start = loop_time()
        m_start = start + warmup
        m_end = m_start + duration
        cpu_before: dict[str, float | None] = {}
        cpu_mark_taken = False

        async def worker(w: int) -> None:
            rng = random.Random(w)
            i = 0
            while True:
                t0 = loop_time()
                if t0 >= m_end:
                    return
                try:
                    if kind == "put":
                        key = f"{prefix}/w{w}/{i}"
                        i += 1
                        await client.put(key, value)
                        if record_keys:
                            keys_out.append(key)
                    else:
                        await client.get(read_pool[rng.randrange(len(read_pool))])
                except Exception as e:  # noqa: BLE001 - counted and reported
                    t1 = loop_time()
                    if m_start <= t1 <= m_end:
                        errors[type(e).__name__] += 1
                    continue
                t1 = loop_time()
                done[0] += 1
                # Completions inside the measured window: throughput = count / duration.
                if m_start <= t1 <= m_end:
                    lats.append(t1 - t0)

        async def cpu_marker() -> None:
            nonlocal cpu_before, cpu_mark_taken
            await asyncio.sleep(max(0.0, m_start - loop_time()))
            cpu_before = {name: _proc_cpu_seconds(pid) for name, pid in pids.items()}
            cpu_before["__system__"] = _system_busy_seconds()
            cpu_mark_taken = True

        marker = asyncio.create_task(cpu_marker())
        tasks = [asyncio.create_task(worker(w), name=f"{kind}-w{w}") for w in range(conc)]
        try:
            # Sample CPU at the end of the window, not after the drain.
            await asyncio.sleep(max(0.0, m_end - loop_time()))
            cpu_after = {name: _proc_cpu_seconds(pid) for name, pid in pids.items()}
            cpu_after["__system__"] = _system_busy_seconds()
            cpu_wall = loop_time() - m_start
            await asyncio.gather(*tasks)
            await marker
        finally:
            for t in tasks:
                t.cancel()
            marker.cancel()

        metrics_wall = time.perf_counter() - metrics_t0
        metrics_after = {nid: _scrape(nd.addr) for nid, nd in self.lc.nodes.items()}
        if record_keys:
            self.written.extend(keys_out)

        lats.sort()
        n = len(lats)
        res = PhaseResult(
            kind=kind, concurrency=conc, duration_s=duration, ops=n,
            errors=sum(errors.values()), ops_per_s=n / duration,
            p50_ms=_pct(lats, 50) * 1e3, p90_ms=_pct(lats, 90) * 1e3,
            p99_ms=_pct(lats, 99) * 1e3, p999_ms=_pct(lats, 99.9) * 1e3,
            max_ms=(lats[-1] * 1e3 if lats else float("nan")),
            mean_ms=(statistics.fmean(lats) * 1e3 if lats else float("nan")),
            error_types=dict(errors), ops_whole_phase=done[0],
        )
        if cpu_mark_taken and cpu_wall > 0:
            for name, b in cpu_before.items():
                a = cpu_after.get(name)
                if a is not None and b is not None:
                    pct = round(100 * (a - b) / cpu_wall, 1)
                    if name == "__system__":
                        res.system_cpu_percent = pct
                    else:
                        res.cpu_percent[name] = pct
            if res.system_cpu_percent is not None:
                res.other_cpu_percent = round(
                    max(0.0, res.system_cpu_percent - sum(res.cpu_percent.values())), 1
                )
        lb, la = metrics_before.get(self.leader, {}), metrics_after.get(self.leader, {})
        fs = _delta(la, lb, "distsync_storage_fsync_seconds_count")
        if fs > 0:
            res.leader_fsyncs = fs
            if done[0]:
                res.leader_fsyncs_per_op = fs / done[0]
            fs_sum = _delta(la, lb, "distsync_storage_fsync_seconds_sum")
            res.leader_fsync_mean_ms = fs_sum / fs * 1e3
            res.leader_storage_busy_percent = round(100 * fs_sum / metrics_wall, 1)
            be = _delta(la, lb, "distsync_storage_batch_entries_count")
            if be > 0:
                res.leader_entries_per_fsync = (
                    _delta(la, lb, "distsync_storage_batch_entries_sum") / be
                )
        ap = _delta(la, lb, "distsync_apply_latency_seconds_count")
        if ap > 0:
            res.leader_apply_mean_ms = (
                _delta(la, lb, "distsync_apply_latency_seconds_sum") / ap * 1e3
            )
        for nid in self.lc.nodes:
            if nid != self.leader:
                fa, fb = metrics_after.get(nid, {}), metrics_before.get(nid, {})
                n_fs = _delta(fa, fb, "distsync_storage_fsync_seconds_count")
                res.follower_fsyncs[nid] = n_fs
                if n_fs > 0:
                    res.follower_fsync_mean_ms[nid] = round(
                        _delta(fa, fb, "distsync_storage_fsync_seconds_sum") / n_fs * 1e3, 3
                    )
        res.leader_term_before = lb.get("distsync_raft_term")
        res.leader_term_after = la.get("distsync_raft_term")
        return res


# -------------------------------------------------------------------------------- py-spy


def start_profiler(pid: int, seconds: float, out_raw: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy); skipping the leader profile")
        return None
    cmd = [
        exe, "record", "--pid", str(pid), "--duration", str(max(1, int(round(seconds)))),
        "--rate", str(PROFILE_RATE_HZ), "--format", "raw", "--threads", "--output", str(out_raw),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short_file(path: str) -> str:
    for marker in ("/site-packages/", "/node/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker != "/lib/python3." else "stdlib/" + tail.split("/", 1)[-1]
    return path


# Frames every sample on the event-loop thread passes through; hiding them makes the
# inclusive list say something.
_BOILERPLATE = (
    "(<frozen runpy>)", "(click/", "(asyncio/runners.py)", "(asyncio/base_events.py)",
    "(asyncio/events.py)", "(distsync/cli.py)", "(threading.py)",
    "(concurrent/futures/thread.py)",
)


# Where the event-loop thread's time goes, by component (inclusive; a sample counts for
# every component one of its frames belongs to, so the rows overlap and need not sum to 100).
_COMPONENTS = (
    ("HTTP API: aiohttp request handling + handlers", "RequestHandler._handle_request"),
    ("HTTP API: request parsing (data_received)", "RequestHandler.data_received"),
    ("  API handler: kv put", "put (distsync/api/kv.py)"),
    ("  API handler: kv get", "get (distsync/api/kv.py)"),
    ("  API: body parse + pydantic (parse_body)", "parse_body (distsync/api/schemas.py)"),
    ("  API: prometheus counters (prometheus_client)", "(prometheus_client/"),
    ("Node._run: Raft driver loop", "Node._run (distsync/node.py)"),
    ("  Node._handle_ready", "Node._handle_ready (distsync/node.py)"),
    ("  Raft core (distsync/raft/*)", "(distsync/raft/"),
    ("  state machine apply (Registry.apply)", "Registry.apply"),
    ("peer transport: send (Transport._pump)", "Transport._pump (distsync/transport/peer.py)"),
    ("peer transport: receive (_handle_stream)",
     "Transport._handle_stream (distsync/transport/peer.py)"),
    ("msgpack codec (distsync/raft/codec.py)", "(distsync/raft/codec.py)"),
    ("socket send() syscalls (_SelectorSocketTransport.write)",
     "_SelectorSocketTransport.write (asyncio/selector_events.py)"),
    ("epoll wait (EpollSelector.select)", "EpollSelector.select (selectors.py)"),
    ("asyncio.wait_for", "wait_for (asyncio/tasks.py)"),
    ("thread-pool hand-off (run_in_executor)", "run_in_executor (asyncio/base_events.py)"),
)


# Leaf frames that are really waits, which py-spy's idle heuristic does not always catch
# (e.g. the fsync worker thread blocked in its queue's get()).
_WAIT_LEAVES = (
    "_worker (concurrent/futures/thread.py)",
    "EpollSelector.select (selectors.py)",
)


def summarize_profile(raw: Path, rate: int, seconds: float, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks (one
    `thread (tid): name;frame;frame... count` line per distinct stack)."""
    self_all: collections.Counter[str] = collections.Counter()
    self_main: collections.Counter[str] = collections.Counter()
    incl_main: collections.Counter[str] = collections.Counter()
    comp_c: collections.Counter[str] = collections.Counter()
    thread_c: collections.Counter[str] = collections.Counter()
    thread_wait: collections.Counter[str] = collections.Counter()
    total = main_total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith(("thread ", "process ")):
            thread = frames[0].split(": ", 1)[-1]
            frames = frames[1:]
        thread_c[thread] += c
        names = []
        for fr in frames:
            m = _FRAME_RE.match(fr)
            names.append(f"{m['func']} ({_short_file(m['file'])})" if m else fr)
        if not names:
            continue
        if names[-1] in _WAIT_LEAVES:
            thread_wait[thread] += c
        self_all[names[-1]] += c
        if thread == "MainThread":
            main_total += c
            self_main[names[-1]] += c
            for nm in set(names):
                if not any(b in nm for b in _BOILERPLATE):
                    incl_main[nm] += c
            for label, needle in _COMPONENTS:
                if any(needle in nm for nm in names):
                    comp_c[label] += c

    def rows(counter: collections.Counter[str], denom: int) -> list[dict[str, Any]]:
        return [
            {"function": k, "samples": v, "percent": round(100 * v / denom, 1) if denom else 0}
            for k, v in counter.most_common(top)
        ]

    possible = rate * seconds
    return {
        "total_samples": total,
        "main_thread_samples": main_total,
        "rate_hz": rate,
        "seconds": seconds,
        # Samples of a thread that was not idle / samples possible: how busy it was.
        # busy_percent excludes samples whose leaf is a wait (epoll, idle worker queue).
        "threads": {
            t: {"samples": v, "wait_samples": thread_wait[t],
                "busy_percent": round(100 * (v - thread_wait[t]) / possible, 1)}
            for t, v in thread_c.most_common()
        },
        "top_self_main": rows(self_main, main_total),
        "top_inclusive_main": rows(incl_main, main_total),
        "top_self_all_threads": rows(self_all, total),
        "components_main": [
            {"component": label, "samples": comp_c[label],
             "percent": round(100 * comp_c[label] / main_total, 1) if main_total else 0}
            for label, _ in _COMPONENTS
        ],
    }


# ------------------------------------------------------------------------------- reporting


def _fmt(v: float | None, nd: int = 1) -> str:
    if v is None or v != v:  # None or NaN
        return "-"
    return f"{v:,.{nd}f}"


def _table(title: str, unit: str, rows: list[PhaseResult], leader: str) -> list[list[str]]:
    head = ["concurrency", "ops", unit, "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
            "leader CPU %", "client CPU %", "other CPU %"]
    if rows and rows[0].kind == "put":
        head.insert(8, "entries/fsync")
    out = [head]
    for r in rows:
        lead_cpu = next((v for k, v in r.cpu_percent.items() if k.startswith(leader)), None)
        row = [
            str(r.concurrency), f"{r.ops:,}", _fmt(r.ops_per_s), _fmt(r.p50_ms, 2),
            _fmt(r.p99_ms, 2), _fmt(r.p999_ms, 2), _fmt(r.max_ms, 2), str(r.errors),
            _fmt(lead_cpu, 0), _fmt(r.cpu_percent.get("bench-client"), 0),
            _fmt(r.other_cpu_percent, 0),
        ]
        if r.kind == "put":
            row.insert(8, _fmt(r.leader_entries_per_fsync, 1))
        out.append(row)
    return out


def _render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _render_md(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---:" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def machine_text(m: dict[str, Any]) -> str:
    fs = m["filesystem"]
    fp = m.get("fsync_probe") or {}
    disk = (
        f"{fs.get('fstype', '?')} on {fs.get('device', '?')} (mount {fs.get('mount', '?')}"
        + (f", rotational={fs['rotational']}" if "rotational" in fs else "")
        + ")"
    )
    lines = [
        f"CPU:      {m['cpu_model']}  ({m['cores']} logical cores, {m['cores_usable']} usable)",
        f"Python:   {m['python']}   kernel {m['kernel']}",
        f"Storage:  {disk}",
    ]
    if fp:
        lines.append(
            f"fsync:    raw probe (append {fp['bytes']} B + fsync, n={fp['n']}): "
            f"p50 {fp['p50_ms']:.2f} ms, p99 {fp['p99_ms']:.2f} ms"
        )
    idle = idle_text(m.get("idle") or {})
    if idle:
        lines.append(f"Idle:     {idle}")
    lines.append(f"Note:     {m['fsync_note']}")
    return "\n".join(lines)


def idle_text(idle: dict[str, Any]) -> str:
    parts = []
    if idle.get("cpuidle_driver"):
        parts.append(f"cpuidle {idle['cpuidle_driver']}")
    ns = idle.get("guest_halt_poll_ns")
    if ns is not None:
        parts.append(f"guest halt polling {'off' if ns == 0 else 'on'} "
                     f"(guest_halt_poll_ns={ns})")
    return ", ".join(parts)


def profile_text(prof: dict[str, Any], n_self: int = 10, n_incl: int = 15) -> str:
    s = prof["summary"]
    w = prof.get("workload", {})
    lines = [
        f"Leader {prof.get('pid')} sampled by py-spy at {s['rate_hz']} Hz for "
        f"{s['seconds']:g} s during "
        f"{prof.get('kind', '').upper()} c={prof.get('concurrency')} "
        f"({_fmt(w.get('ops_per_s'))} ops/s while sampled); raw stacks: "
        f"{Path(prof['raw']).name}",
        "Threads (busy % = samples not in a wait (epoll, idle worker queue) / possible "
        "samples):",
    ]
    for t, v in s["threads"].items():
        lines.append(f"  {t:<16} {v['samples']:>6} samples  busy {v['busy_percent']:5.1f}%")
    lines.append(f"Event-loop thread, self time (% of its {s['main_thread_samples']} samples):")
    for i, r in enumerate(s["top_self_main"][:n_self], 1):
        lines.append(f"  {i:2}. {r['percent']:5.1f}%  {r['function']}")
    lines.append("Event-loop thread, inclusive (asyncio/click/runpy frames hidden):")
    for i, r in enumerate(s["top_inclusive_main"][:n_incl], 1):
        lines.append(f"  {i:2}. {r['percent']:5.1f}%  {r['function']}")
    lines.append("Event-loop thread by component (inclusive, rows overlap):")
    for r in s.get("components_main", []):
        lines.append(f"  {r['percent']:5.1f}%  {r['component']}")
    return "\n".join(lines)


def write_results(out_dir: Path, report: dict[str, Any], put_rows: list[list[str]],
                  get_rows: list[list[str]]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / "raft_bench.json", out_dir / "raft_bench.md"
    jpath.write_text(json.dumps(report, indent=2) + "\n")
    cfg = report["config"]
    md = [
        "# distsync Raft benchmark",
        "",
        f"Run {report['started_at']} (git {report.get('git') or '?'}), "
        f"{cfg['duration_s']:g} s per phase after {cfg['warmup_s']:g} s warm-up, "
        f"3 nodes on loopback, leader {report['leader']}. "
        "Generated by `benchmarks/raft_bench.py`; see `benchmarks/README.md`.",
        "",
        "## Machine",
        "",
        "```",
        machine_text(report["machine"]),
        "```",
        "",
        *([f"**Warning:** {report['noise_warning']}.", ""] if report.get("noise_warning")
          else []),
        "## Committed writes (kv PUT, unique keys, ~100-byte values)",
        "",
        "Latency: client invoke -> acknowledgement (entry fsynced on a majority and applied "
        "on the leader).",
        "",
        _render_md(put_rows),
        "",
        "## Linearizable reads (kv GET, ReadIndex on the leader)",
        "",
        _render_md(get_rows),
        "",
        "CPU % is per process, 100 = one core busy for the whole measured window "
        f"(the machine has {report['machine']['cores_usable']} usable cores shared by the "
        "client and all three nodes). \"other CPU %\" is CPU used by processes that are not "
        "part of the benchmark during the window: other tenants of the machine; high values "
        "mean the numbers are pessimistic and noisy.",
        "",
        "Per phase detail (leader fsyncs, entries per fsync, follower fsyncs, CPU of every "
        "node) is in `raft_bench.json`.",
        "",
    ]
    for kind, prof in report.get("profiles", {}).items():
        title = (f"## Leader profile: {kind.upper()} c={prof['concurrency']} "
                 "(py-spy; an extra phase, not part of the tables)")
        if prof.get("summary"):
            md += [title, "", "```", profile_text(prof), "```", ""]
        elif prof.get("error"):
            md += [title, "", f"Not available: {prof['error']}", ""]
    mpath.write_text("\n".join(md))
    return jpath, mpath


# ------------------------------------------------------------------------------------ main


def _phase_line(r: PhaseResult) -> str:
    parts = [f"     {r.ops:,} ops, {r.ops_per_s:,.1f}/s, p50 {r.p50_ms:.2f} ms, "
             f"p99 {r.p99_ms:.2f} ms, errors {r.errors}"]
    if r.leader_fsyncs:
        parts.append(f"     leader: {r.leader_fsyncs:,.0f} fsyncs for {r.ops_whole_phase:,} "
                     f"acked ops ({_fmt(r.leader_fsyncs_per_op, 2)}/op), "
                     f"{_fmt(r.leader_entries_per_fsync)} entries per entry-carrying fsync, "
                     f"fsync+write mean {_fmt(r.leader_fsync_mean_ms, 2)} ms "
                     f"(Raft loop waiting on storage {_fmt(r.leader_storage_busy_percent, 0)}% "
                     "of the time), "
                     f"server apply mean {_fmt(r.leader_apply_mean_ms, 2)} ms")
    if any(r.follower_fsyncs.values()):
        parts.append("     followers: " + ", ".join(
            f"{k} {v:,.0f} fsyncs (mean {_fmt(r.follower_fsync_mean_ms.get(k), 2)} ms)"
            for k, v in r.follower_fsyncs.items()))
    parts.append("     CPU %: " + ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_percent.items())
                 + f", other processes {_fmt(r.other_cpu_percent, 0)}"
                 + f" (machine busy {_fmt(r.system_cpu_percent, 0)} of "
                 f"{100 * (os.cpu_count() or 1)})")
    return "\n".join(parts)


async def run(args: argparse.Namespace, lc: LocalCluster, report: dict[str, Any],
              profiler: list[subprocess.Popen]) -> None:
    leader = lc.leader(timeout=30)
    leader_addr = lc.nodes[leader].addr
    report["leader"] = leader
    print(f"leader: {leader} at {leader_addr} (pid {lc.nodes[leader].proc.pid})")  # type: ignore[union-attr]

    async with Client([leader_addr], timeout=30.0, request_timeout=10.0) as client:
        found = await client.find_leader()
        if found != leader_addr:
            raise RuntimeError(f"client found leader {found}, LocalCluster said {leader_addr}")
        wl = Workload(client, lc, leader)
        puts: list[PhaseResult] = []
        gets: list[PhaseResult] = []
        for conc in args.concurrency:
            print(f"PUT  c={conc:<3} {args.warmup:g}s warm-up + {args.duration:g}s ...",
                  flush=True)
            r = await wl.phase("put", conc, args.duration, args.warmup, record_keys=True)
            puts.append(r)
            print(_phase_line(r), flush=True)
        for conc in args.concurrency:
            print(f"GET  c={conc:<3} {args.warmup:g}s warm-up + {args.duration:g}s ...",
                  flush=True)
            r = await wl.phase("get", conc, args.duration, args.warmup)
            gets.append(r)
            print(_phase_line(r), flush=True)
        report["put"] = [asdict(r) for r in puts]
        report["get"] = [asdict(r) for r in gets]

        if args.profile > 0:
            report["profiles"] = {}
            for kind in args.profile_kinds:
                report["profiles"][kind] = await profile_phase(args, lc, wl, leader, kind,
                                                               profiler)


async def profile_phase(args: argparse.Namespace, lc: LocalCluster, wl: Workload, leader: str,
                        kind: str, profiler: list[subprocess.Popen]) -> dict[str, Any]:
    """One extra phase at the highest concurrency while py-spy samples the leader. py-spy
    pauses the target for each sample, so this phase is slower and is not reported as a
    measurement."""
    conc = max(args.concurrency)
    out_dir = Path(tempfile.mkdtemp(prefix="distsync-prof-")) if args.no_write else args.out
    raw = out_dir / f"leader-profile-{kind}.txt"
    pid = lc.nodes[leader].proc.pid  # type: ignore[union-attr]
    print(f"PROFILE: {kind.upper()} c={conc} while py-spy samples the leader (pid {pid}) for "
          f"{args.profile:g}s ...", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    prof: dict[str, Any] = {"kind": kind, "seconds": args.profile, "raw": raw.name, "pid": pid,
                            "concurrency": conc}
    # Let the workload reach steady state before sampling starts.
    task = asyncio.create_task(wl.phase(kind, conc, args.profile + 1.5, args.warmup))
    await asyncio.sleep(args.warmup + 0.5)
    p = start_profiler(pid, args.profile, raw)
    if p is not None:
        profiler.append(p)
    r = await task
    prof["workload"] = {"ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
    if p is None:
        prof["error"] = "py-spy not installed"
        return prof
    out, _ = await asyncio.to_thread(p.communicate)
    prof["py_spy_output"] = out.strip()[-2000:]
    if p.returncode != 0 or not raw.exists():
        prof["error"] = f"py-spy exited {p.returncode}: {out.strip()[-500:]}"
        print(f"py-spy failed (ptrace not permitted?): {prof['error']}")
    else:
        prof["summary"] = summarize_profile(raw, PROFILE_RATE_HZ, args.profile)
        print(f"     wrote {raw}", flush=True)
    return prof


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Committed-write and linearizable-read throughput/latency of a real "
                    "3-node distsync cluster on loopback.",
    )
    ap.add_argument("--duration", type=float, default=10.0,
                    help="measured seconds per phase (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s phases (overrides --duration)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="unmeasured seconds at the start of each phase (default 1)")
    ap.add_argument("--concurrency", default="1,64",
                    help="comma-separated worker counts (default 1,64)")
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    ap.add_argument("--tick-ms", type=int, default=50, help="node --tick-ms (default 50)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="parent directory for the nodes' temporary data (default: system "
                         "temp dir); put it on the disk you want to measure")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS,
                    help=f"results directory (default {DEFAULT_RESULTS})")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="after the measured phases, sample the leader with py-spy for this "
                         "many seconds during an extra c=max PUT and GET phase (default: off)")
    ap.add_argument("--profile-kinds", default="put,get",
                    help="which workloads to profile with --profile (default put,get)")
    ap.add_argument("--no-write", action="store_true", help="do not write result files")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if not args.concurrency or min(args.concurrency) < 1:
        ap.error("--concurrency needs positive integers")
    args.profile_kinds = [k.strip() for k in args.profile_kinds.split(",") if k.strip()]
    if set(args.profile_kinds) - {"put", "get"}:
        ap.error("--profile-kinds takes put and/or get")
    if args.duration <= 0:
        ap.error("--duration must be positive")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def snapshots_taken(lc: LocalCluster) -> dict[str, int]:
    """Log compactions per node, counted from the nodes' logs."""
    snaps = {}
    for nid, nd in lc.nodes.items():
        try:
            snaps[nid] = nd.log_path.read_text(errors="replace").count("log compacted")
        except OSError:
            pass
    return snaps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    base = args.data_dir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="distsync-bench-", dir=base))
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git_rev(),
        "config": {
            "nodes": args.nodes, "duration_s": args.duration, "warmup_s": args.warmup,
            "concurrency": args.concurrency, "value_bytes": VALUE_BYTES,
            "tick_ms": args.tick_ms, "client": "distsync.client.Client (one aiohttp session)",
            "put": "PUT /v1/kv/<unique key>, JSON string value of 100 chars",
            "get": "GET /v1/kv/<key written above>?consistency=linearizable",
        },
    }
    profiler: list[subprocess.Popen] = []
    lc = LocalCluster(args.nodes, data_dir=work / "cluster", tick_ms=args.tick_ms)
    rc = 0
    try:
        machine = machine_info(work)
        machine["fsync_probe"] = probe_fsync(work)
        machine["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        report["machine"] = machine
        print(machine_text(machine))
        print()
        print(f"starting {args.nodes} nodes in {work} ...", flush=True)
        lc.start()
        lc.wait_ready(timeout=60)
        asyncio.run(run(args, lc, report, profiler))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the cluster", file=sys.stderr)
        rc = 130
    except Exception as e:
        print(f"benchmark failed: {e!r}", file=sys.stderr)
        for nid, nd in lc.nodes.items():
            try:
                tail = nd.log_path.read_text(errors="replace").splitlines()[-15:]
            except OSError:
                tail = []
            print(f"--- {nid} log tail ---\n" + "\n".join(tail), file=sys.stderr)
        rc = 1
    finally:
        # A second Ctrl-C must not leave node processes behind: ignore it while cleaning up
        # (LocalCluster.stop escalates SIGTERM to SIGKILL after 10 s per node).
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for p in profiler:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            report["snapshots_taken"] = snapshots_taken(lc)
            lc.close()
            shutil.rmtree(work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)

    if rc == 0:
        leader = report["leader"]
        puts = [PhaseResult(**r) for r in report["put"]]
        gets = [PhaseResult(**r) for r in report["get"]]
        put_rows = _table("writes", "writes/s", puts, leader)
        get_rows = _table("reads", "reads/s", gets, leader)
        print()
        print("Committed writes (kv PUT, unique keys, ~100 B values; latency = invoke -> ack)")
        print(_render_text(put_rows))
        print()
        print("Linearizable reads (kv GET, ReadIndex on the leader)")
        print(_render_text(get_rows))
        noisy = [f"{r.kind.upper()} c={r.concurrency}: {r.other_cpu_percent:.0f}%"
                 for r in puts + gets if (r.other_cpu_percent or 0) > 25]
        if noisy:
            report["noise_warning"] = (
                "other processes used CPU during: " + ", ".join(noisy)
                + " (100% = one core); these numbers understate what the cluster can do"
            )
            print("WARNING: " + report["noise_warning"])
        terms = {(r.leader_term_before, r.leader_term_after) for r in puts + gets}
        if len({t for pair in terms for t in pair}) > 1:
            print("WARNING: the leader's term changed during the run (an election happened)")
        print(f"snapshots taken (log compactions) per node: {report.get('snapshots_taken')}")
        for prof in report.get("profiles", {}).values():
            if prof.get("summary"):
                print()
                print(profile_text(prof))
        if not args.no_write:
            j, m = write_results(args.out, report, put_rows, get_rows)
            print(f"\nwrote {j} and {m}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
