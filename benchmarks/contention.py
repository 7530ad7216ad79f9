#!/usr/bin/env python3
"""What the second follower costs a write at low concurrency, on a machine that all the
processes share: `python benchmarks/contention.py [--systems distsync,etcd]`.

Why: at c=1 a 3-member cluster answers once the leader and one follower have the write
durable, yet the other follower receives the same append at the same moment and does the
same work, on the same cores as the three processes the write waits for. Stop 33 found that
pausing it (SIGSTOP) made distsync's PUT c=1 about a quarter faster, and that turning off
only its fdatasync made no difference: what it takes from the write is CPU and wake-ups,
not the disk. This measures that for every system under the same client, so that it can be
told whether the effect is distsync's or the machine's.

One cluster per system, kept up; phases taken in turn, "both" (every member running) and
"one" (one follower, never the leader, paused with SIGSTOP for the phase and continued
after it), alternating which comes first; each round's one/both ratio, and the interval for
their median (harness.median_interval). A phase that sees an error, or a leader change,
stops the run: the number would not mean what it says. Not a test; benchmarks/README.md,
"The second follower".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

from benchmarks.ab import paired, phase  # noqa: E402
from benchmarks.harness import render  # noqa: E402
from benchmarks.harness import verdict as harness_verdict  # noqa: E402
from benchmarks.systems.distsync import Distsync  # noqa: E402
from benchmarks.systems.etcd import Etcd  # noqa: E402

SYSTEMS = {"distsync": Distsync, "etcd": Etcd}
MODES = ("both", "one")
KEYS = ("per_s", "p50_ms", "cpu_us")


def paused_follower(pids: dict[str, int], leader: str) -> str:
    """The follower to pause: the last by name, so that a rerun picks the same one."""
    followers = sorted(n for n in pids if n != leader)
    if not followers:
        raise SystemExit(f"no follower to pause (members: {sorted(pids)}, leader {leader})")
    return followers[-1]


async def measure(name: str, a: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every phase of one system: per mode, its rate, p50, servers' CPU per unit, and the
    paused follower's CPU (0 in every "one" phase, if the pause held)."""
    d = SYSTEMS[name](a.nodes)
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        await d.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await d.prepare(a.workload, s, a.concurrency)
            leader = await d.leader()
            pids = d.pids()
            victim = paused_follower(pids, leader)
            for r in range(a.rounds):
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    label = f"{name}/{mode}{r}"
                    if mode == "one":
                        os.kill(pids[victim], signal.SIGSTOP)
                    try:
                        res = await phase(d, s, a, label)  # errors end the run there
                    finally:
                        if mode == "one":
                            os.kill(pids[victim], signal.SIGCONT)
                    now = await d.leader()
                    if now != leader:
                        raise SystemExit(f"{label}: the leader moved from {leader} to {now}")
                    res["paused_cpu"] = res["cpu_by_server"].get(victim)
                    out[mode].append(res)
            print(f"  {name}: leader {leader}, paused follower {victim}", flush=True)
    finally:
        await d.stop()
    return out


def rows(results: dict[str, dict[str, list[dict[str, Any]]]], unit: str) -> list[list[str]]:
    head = ["system", f"{unit}, both", f"{unit}, one paused", "p50 ms, both",
            "p50 ms, one paused", f"one/both {unit}, median [interval]",
            "one/both p50, median [interval]", "server CPU us/op, both / one"]
    out = [head]
    for name, ph in results.items():
        med = {m: {k: statistics.median(p[k] for p in ph[m]) for k in KEYS} for m in MODES}
        cells = []
        for key in ("per_s", "p50_ms"):
            iv = paired([p[key] for p in ph["both"]], [p[key] for p in ph["one"]])
            cells.append(f"{iv['median']:.2f}x [{iv['lo']:.2f}x .. {iv['hi']:.2f}x, "
                         f"{iv['coverage'] * 100:.0f} %]: "
                         f"{harness_verdict(iv, 'higher', 'lower')}")
        out.append([name, f"{med['both']['per_s']:,.1f}", f"{med['one']['per_s']:,.1f}",
                    f"{med['both']['p50_ms']:.2f}", f"{med['one']['p50_ms']:.2f}", *cells,
                    f"{med['both']['cpu_us']:,.0f} / {med['one']['cpu_us']:,.0f}"])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--systems", default="distsync,etcd",
                   help="comma-separated: distsync, etcd (default both)")
    p.add_argument("--workload", choices=("put", "lock"), default="put")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rounds", type=int, default=8, help="phases per mode (8)")
    p.add_argument("--phase", type=float, default=2.0, help="measured seconds per phase (2)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="unmeasured seconds first (1): the continued follower catches up")
    p.add_argument("--nodes", type=int, default=3)
    a = p.parse_args(argv)
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = [s for s in a.systems if s not in SYSTEMS]
    if unknown or not a.systems:
        p.error(f"--systems: choose from {', '.join(SYSTEMS)} (got {a.systems})")
    if a.rounds < 1 or a.phase <= 0 or a.nodes < 3:
        p.error("--rounds at least 1, --phase positive, --nodes at least 3")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    results = {name: asyncio.run(measure(name, a)) for name in a.systems}
    unit = "pairs/s" if a.workload == "lock" else "ops/s"
    print(f"{a.workload} c={a.concurrency}, {a.nodes} members, {a.rounds} rounds of a "
          f"{a.phase:g} s phase per mode (after {a.warmup:g} s unmeasured), modes in turn")
    print(render(rows(results, unit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
