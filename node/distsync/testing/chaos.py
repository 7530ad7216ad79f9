"""One chaos run: start a cluster, run workloads against it while a seeded nemesis breaks it,
heal, wait for recovery, read the final state, check every history, print a summary.

    python -m distsync.testing.chaos --scenario partitions --seed 42 --duration 25
    python -m distsync.testing.chaos --nodes 5 --duration 60 --workload kv --cluster netns

The same function backs the pytest chaos suite (tests/chaos/), so a failing CI seed replays by
hand with the command the failure prints.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import ChaosCluster, make_cluster, wait_recovered
from .history import History
from .nemesis import FAULTS, PROCESS_FAULTS, Nemesis, Step, format_schedule, make_schedule
from .workload import Verdict
from .workloads import resolve


@dataclass(frozen=True)
class Scenario:
    name: str
    nodes: int
    faults: tuple[str, ...]
    what: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in [
        Scenario("partitions", 5, (
            "partition-halves", "partition-leader", "partition-bridge", "partition-one-way",
            "loss", "link-down",
        ), "network faults only: splits, isolated leader, bridge, one-way, loss, link down"),
        Scenario("crashes", 3, ("kill", "kill-leader", "pause-leader", "restart-all"),
                 "process faults only: SIGKILL + restart, paused leader, whole-cluster restart"),
        Scenario("mixed", 3, tuple(FAULTS), "every fault, network and process"),
    ]
}


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2**31)


def replay_command(scenario: str, seed: int, duration: float, workloads: list[str]) -> str:
    return (f"CHAOS_SEED={seed} CHAOS_DURATION={duration:g} python -m pytest tests/chaos "
            f"-k {scenario}   # or: python -m distsync.testing.chaos --scenario {scenario} "
            f"--seed {seed} --duration {duration:g} --workload {','.join(workloads)}")


@dataclass
class RunResult:
    scenario: str
    seed: int
    duration: float
    cluster: str
    schedule: list[Step]
    injected: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    history: History | None = None
    artifacts: Path | None = None
    wall_s: float = 0.0
    workloads: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent in each phase

    @property
    def ok(self) -> bool:
        return not self.errors and all(v.valid is True for v in self.verdicts)

    def summary(self) -> str:
        lines = [
            f"chaos scenario {self.scenario!r} seed {self.seed}, {self.duration:g}s on "
            f"{self.cluster} ({self.wall_s:.0f}s wall: "
            + ", ".join(f"{k} {v:.0f}s" for k, v in self.phases.items()) + ")",
            "schedule:",
            *("  " + ln for ln in format_schedule(self.schedule).splitlines()),
            f"faults injected: {len(self.injected)}"
            + (f" ({', '.join(sorted({i['fault'] for i in self.injected}))})"
               if self.injected else ""),
        ]
        if self.recovery:
            lines.append(f"recovered after healing: leader {self.recovery.get('leader')} in "
                         f"{self.recovery.get('took', 0):.1f}s")
        hdr = f"{'WORKLOAD':<10} {'OK':>6} {'FAILED':>7} {'INDET.':>7}  VERDICT"
        lines += ["", hdr, "-" * len(hdr)]
        for v in self.verdicts:
            verdict = {True: "valid", False: "INVALID", None: "unknown"}[v.valid]
            lines.append(f"{v.workload:<10} {v.counts.get('ok', 0):>6} "
                         f"{v.counts.get('fail', 0):>7} {v.counts.get('info', 0):>7}  {verdict}")
        for name, why in self.skipped.items():
            lines.append(f"{name:<10} {'-':>6} {'-':>7} {'-':>7}  not run: {why}")
        for v in self.verdicts:
            if v.valid is not True:
                lines += ["", f"--- {v.workload}: {v.detail}", *v.problems[:20]]
        if self.errors:
            lines += ["", "errors:", *self.errors]
        if not self.ok:
            lines += ["", "replay: " + replay_command(self.scenario, self.seed, self.duration,
                                                      self.workloads)]
        if self.artifacts:
            lines.append(f"history and node logs: {self.artifacts}")
        return "\n".join(lines)


def _laps(phases: dict[str, float], t0: float) -> Any:
    """A function that records, under each name it is called with, the time since its
    previous call (the first: since t0)."""
    t = [t0]

    def lap(name: str) -> None:
        now = time.monotonic()
        phases[name] = now - t[0]
        t[0] = now

    return lap


def _save(result: RunResult, cluster: ChaosCluster, out_dir: Path | None) -> Path:
    out = out_dir or Path(tempfile.mkdtemp(prefix=f"distsync-chaos-{result.scenario}-"
                                                  f"{result.seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    if result.history is not None:
        result.history.dump(out / "history.jsonl")
    for nid, nd in cluster.nodes.items():
        if nd.log_path.exists():
            shutil.copy(nd.log_path, out / f"{nid}.log")
    (out / "summary.txt").write_text(result.summary() + "\n")
    return out


async def run_chaos(
    scenario: str = "mixed", seed: int | None = None, duration: float = 25.0,
    workloads: list[str] | None = None, cluster: str = "auto", nodes: int | None = None,
    out_dir: str | Path | None = None, recovery_timeout: float = 40.0,
) -> RunResult:
    """A whole run. Never raises for what it finds: everything is in the result."""
    sc = SCENARIOS[scenario]
    seed = new_seed() if seed is None else seed
    names = workloads or ["all"]
    classes, skipped = resolve(names)
    t_wall = time.monotonic()
    c = make_cluster(cluster, nodes or sc.nodes)
    faults = [f for f in sc.faults if c.network_faults or not FAULTS[f][0]] or PROCESS_FAULTS
    schedule = make_schedule(seed, duration, faults, list(c.nodes))
    res = RunResult(scenario, seed, duration, c.describe(), schedule, skipped=skipped,
                    workloads=[w.name for w in classes] or names)
    lap = _laps(res.phases, t_wall)
    hist = History(meta={"scenario": scenario, "seed": seed, "duration": duration,
                         "cluster": c.describe(), "schedule": [s.__dict__ for s in schedule]})
    res.history = hist
    try:
        for cls in classes:
            c.env = {**getattr(c, "env", {}), **cls.node_env}
        if any(cls.needs_cache_backend for cls in classes):
            await asyncio.to_thread(c.start_cache_backend)
        await asyncio.to_thread(c.start)
        await asyncio.to_thread(wait_recovered, c, 60.0)
        lap("start")
        rng = random.Random(seed)
        wls = [cls(c.addrs, hist, rng.getrandbits(64)) for cls in classes]
        nem = Nemesis(c, hist, schedule)
        stop = asyncio.Event()
        t0 = time.monotonic()
        nem_task = asyncio.create_task(nem.run(t0, stop))
        wl_tasks = [asyncio.create_task(w.run(stop), name=w.name) for w in wls]
        try:
            await asyncio.sleep(duration)
        finally:
            stop.set()
            await nem_task  # heals everything on the way out
            done, pending = await asyncio.wait(wl_tasks, timeout=60)
            for t in pending:
                t.cancel()
                res.errors.append(f"workload {t.get_name()} did not stop within 60 s")
            for t in done:
                if t.exception() is not None:
                    res.errors.append(f"workload {t.get_name()} crashed: {t.exception()!r}")
        res.injected = nem.injected
        lap("run")
        try:
            res.recovery = await asyncio.to_thread(wait_recovered, c, recovery_timeout)
        except TimeoutError as e:
            res.errors.append(f"cluster did not recover within {recovery_timeout:g}s of "
                              f"healing: {e}\n{c.status_table()}")
        lap("recover")
        if not res.errors:
            for w in wls:
                await w.final()
        lap("final")
        res.verdicts = [cls.check(hist) for cls in classes]
        lap("check")
    except Exception as e:  # noqa: BLE001 - a harness failure is a result too
        res.errors.append(f"{type(e).__name__}: {e}")
    finally:
        res.wall_s = time.monotonic() - t_wall
        if out_dir is not None or not res.ok:
            try:
                res.artifacts = _save(res, c, Path(out_dir) if out_dir else None)
            except OSError as e:
                res.errors.append(f"could not save artifacts: {e}")
        await asyncio.to_thread(c.close)
        res.wall_s = time.monotonic() - t_wall
    return res


def main(argv: list[str] | None = None, prog: str = "python -m distsync.testing.chaos") -> int:
    import argparse

    p = argparse.ArgumentParser(prog=prog,
                                description="Run one seeded chaos scenario and check it.")
    p.add_argument("--scenario", default="mixed", choices=sorted(SCENARIOS))
    p.add_argument("--nodes", type=int, default=None, help="default: the scenario's (3 or 5)")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=None, help="default: a fresh one, printed")
    p.add_argument("--workload", default="all", help="comma-separated, or 'all'")
    p.add_argument("--cluster", default="auto", choices=["auto", "netns", "loopback"])
    p.add_argument("--out", default=None, help="save history and node logs here")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else int(os.environ.get("CHAOS_SEED") or new_seed())
    print(f"chaos seed {seed}", flush=True)
    res = asyncio.run(run_chaos(a.scenario, seed, a.duration, a.workload.split(","),
                                a.cluster, a.nodes, a.out))
    print(res.summary())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
