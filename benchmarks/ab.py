#!/usr/bin/env python3
"""Two distsync builds side by side, in short phases taken in turn:
`python benchmarks/ab.py --b-env DISTSYNC_X=1` or `--a-tree ../old --b-tree .`.

Why this and not two runs of run.py: this machine's latency at low concurrency moves by
30-60 % from one minute to the next (the host's disk and vCPU wake-ups), so two runs a few
minutes apart compare two moods of the host, not two builds. Two clusters kept up at once
and measured in alternating phases of a few seconds (A B, B A, A B, ...) see the same host,
and each round's two phases ran back to back: the report gives B/A round by round with the
interval for its median, which says whether a difference is shown (on a noisy host two A/A
runs at PUT c=1 had medians 8 % apart, inside that interval). Not a test; see
benchmarks/README.md, "A/B".

A build is the working tree's code plus `--a-env`/`--b-env` (variables for its node
processes), or another checkout's `node/` directory (`--a-tree`, `--b-tree`: a git worktree
of the commit to compare), put first on the nodes' PYTHONPATH, run on this interpreter or on
`--a-python`/`--b-python` (one that imports distsync; see interp.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

from benchmarks.harness import closed_loop, median_interval, render, server_cpu_us  # noqa: E402
from benchmarks.harness import verdict as harness_verdict  # noqa: E402
from benchmarks.interp import describe_python  # noqa: E402
from benchmarks.systems.base import System  # noqa: E402
from benchmarks.systems.distsync import Distsync  # noqa: E402

WORKLOADS = ("put", "get", "lock")
MEASURES = ("per_s", "p50_ms", "p99_ms", "cpu_us")  # a phase's numbers the table compares


def _env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--a-env/--b-env take NAME=VALUE, not {item!r}")
        out[key] = value
    return out


def build_env(env: dict[str, str], tree: Path | None) -> dict[str, str]:
    """The variables one build's node processes start with (on top of this process's)."""
    out = dict(env)
    if tree is not None:
        node_dir = tree / "node"
        if not (node_dir / "distsync" / "node.py").is_file():
            raise SystemExit(f"{tree} is not a distsync checkout (no node/distsync/node.py)")
        rest = os.environ.get("PYTHONPATH")
        out["PYTHONPATH"] = str(node_dir.resolve()) + (os.pathsep + rest if rest else "")
    return out


async def start(env: dict[str, str], nodes: int, python: Path | None = None) -> Distsync:
    """A cluster whose processes see `env` (LocalCluster copies os.environ at spawn) and
    run on `python`."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d = Distsync(nodes, python=python)
        await d.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return d


async def run(a: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    builds = {"A": build_env(_env_pairs(a.a_env), a.a_tree),
              "B": build_env(_env_pairs(a.b_env), a.b_tree)}
    clusters: dict[str, Distsync] = {}
    phases: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for tag, env in builds.items():
            clusters[tag] = await start(env, a.nodes, getattr(a, f"{tag.lower()}_python"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            for d in clusters.values():
                await d.prepare(a.workload, s, a.concurrency)
            for r in range(a.rounds):
                for tag in ("A", "B") if r % 2 == 0 else ("B", "A"):  # neither always first
                    phases[tag].append(await phase(clusters[tag], s, a, f"{tag}{r}"))
    finally:
        for d in clusters.values():
            await d.stop()
    return phases


async def phase(d: System, s: aiohttp.ClientSession, a: argparse.Namespace,
                label: str) -> dict[str, Any]:
    """One measured phase of `a.workload` on `d` (errors end the run): MEASURES, and each
    server's CPU (% of one core) as `cpu_by_server`."""
    op = d.op(a.workload)

    async def step(w: int, i: int) -> None:
        await op(s, w, f"ab/{label}/{w}/{i}/{time.time_ns()}")

    r = await closed_loop(step, a.concurrency, a.phase, a.warmup, d.pids())
    if r.errors:
        raise SystemExit(f"phase {label}: {r.errors} errors {r.error_types}")
    return {"per_s": r.per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "cpu_us": server_cpu_us(r) or 0.0, "cpu_by_server": r.cpu.get("servers", {})}


def table(phases: dict[str, list[dict[str, Any]]], unit: str) -> list[list[str]]:
    """Per build: the medians over its phases, and every phase's p50; then B/A."""
    med = {t: {k: statistics.median(p[k] for p in ps) for k in MEASURES}
           for t, ps in phases.items()}
    rows = [["build", f"median {unit}", "median p50 ms", "median p99 ms",
             "server CPU us/op", "p50 of each phase, ms"]]
    for t, ps in phases.items():
        m = med[t]
        rows.append([t, f"{m['per_s']:,.1f}", f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.2f}",
                     f"{m['cpu_us']:.0f}", " ".join(f"{p['p50_ms']:.2f}" for p in ps)])
    rows.append(["B/A", f"{med['B']['per_s'] / med['A']['per_s']:.3f}x",
                 f"{med['B']['p50_ms'] / med['A']['p50_ms']:.3f}x",
                 f"{med['B']['p99_ms'] / med['A']['p99_ms']:.3f}x",
                 f"{med['B']['cpu_us'] / med['A']['cpu_us']:.3f}x", ""])
    return rows


def paired(a: list[float], b: list[float], coverage: float = 0.95) -> dict[str, float]:
    """B/A round by round, and how sure that is. The two phases of a round ran back to back,
    so each round's ratio compares the builds under the same mood of the host; the medians
    of the table compare phases that ran minutes apart (harness.median_interval)."""
    return median_interval([bi / ai for ai, bi in zip(a, b, strict=True) if ai > 0], coverage)


def verdict(p: dict[str, float]) -> str:
    return harness_verdict(p, "B higher", "B lower")


def paired_lines(phases: dict[str, list[dict[str, float]]], unit: str) -> list[str]:
    lines = ["Round by round, B/A (each round's two phases ran back to back): median "
             "[interval for it]"]
    for key, name in (("per_s", unit), ("p50_ms", "p50"), ("p99_ms", "p99"),
                      ("cpu_us", "CPU/op")):
        p = paired([x[key] for x in phases["A"]], [x[key] for x in phases["B"]])
        if not p.get("n"):
            continue
        lines.append(f"  {name:8} {p['median']:.3f}x [{p['lo']:.3f}x .. {p['hi']:.3f}x] "
                     f"({p['coverage'] * 100:.0f} % coverage, {p['n']} rounds): {verdict(p)}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--a-tree", type=Path, help="a distsync checkout whose node/ A runs")
    p.add_argument("--b-tree", type=Path, help="a distsync checkout whose node/ B runs")
    p.add_argument("--a-python", type=Path, metavar="PATH",
                   help="the interpreter A's nodes run on (default: this one)")
    p.add_argument("--b-python", type=Path, metavar="PATH",
                   help="the interpreter B's nodes run on (default: this one)")
    p.add_argument("--workload", choices=WORKLOADS, default="put")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rounds", type=int, default=8, help="phases per build (8)")
    p.add_argument("--phase", type=float, default=3.0, help="measured seconds per phase (3)")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first (0.5)")
    p.add_argument("--nodes", type=int, default=3)
    a = p.parse_args(argv)
    if a.rounds < 1 or a.phase <= 0:
        p.error("--rounds must be at least 1 and --phase positive")
    if not (a.a_env or a.b_env or a.a_tree or a.b_tree or a.a_python or a.b_python):
        p.error("A and B are the same build: give --a-env/--b-env, --a-tree/--b-tree or "
                "--a-python/--b-python")
    for side in ("a", "b"):
        py = getattr(a, f"{side}_python")
        if py is not None:
            describe_python(py)  # refuses, with the reason, one that cannot run a node
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    phases = asyncio.run(run(a))
    unit = "pairs/s" if a.workload == "lock" else "ops/s"
    print(f"{a.workload} c={a.concurrency}, {a.rounds} phases of {a.phase:g} s per build, "
          f"in turn\nA: {' '.join(a.a_env) or '-'} {a.a_tree or ''} {a.a_python or ''}\n"
          f"B: {' '.join(a.b_env) or '-'} {a.b_tree or ''} {a.b_python or ''}")
    print(render(table(phases, unit)))
    print("\n".join(paired_lines(phases, unit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

