"""Fault schedules chosen by a seed, and the task that injects them into a running cluster.

A schedule is a list of steps: at `at` seconds into the run, inject `fault` for `duration`
seconds, then heal. Everything random (which fault, how long, which nodes, how much loss) comes
from `random.Random(seed)`, so `make_schedule(seed, ...)` gives the same schedule every time.
Targets named "leader" are resolved when the step runs (who leads then is up to the cluster),
and the history records the node actually hit.

Faults (`FAULTS`): network ones need a NetnsCluster, process ones work everywhere.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .harness import ChaosCluster
from .history import History

# name -> (needs network namespaces, what it does)
FAULTS: dict[str, tuple[bool, str]] = {
    "partition-halves": (True, "random majority/minority split"),
    "partition-leader": (True, "the leader cut off from every other node"),
    "partition-bridge": (True, "two sides that only one node (the bridge) can reach both of"),
    "partition-one-way": (True, "the leader's packets to (or from) the others dropped"),
    "loss": (True, "random packet loss (nftables numgen) on every node"),
    "link-down": (True, "one node's link down (`ip link set ... down`)"),
    "kill": (False, "SIGKILL of a random node, restarted when the step ends"),
    "kill-leader": (False, "SIGKILL of the leader, restarted when the step ends"),
    "pause-leader": (False, "SIGSTOP of the leader, SIGCONT when the step ends"),
    "restart-all": (False, "SIGKILL of every node at once, then all restarted"),
}

PROCESS_FAULTS = [f for f, (net, _) in FAULTS.items() if not net]
NETWORK_FAULTS = [f for f, (net, _) in FAULTS.items() if net]


@dataclass
class Step:
    at: float
    fault: str
    duration: float
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        p = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"t={self.at:5.1f}s  {self.fault:<18} for {self.duration:4.1f}s  {p}".rstrip()


def make_schedule(
    seed: int, duration: float, faults: list[str], nodes: list[str],
    warmup: float = 2.0, settle: float = 4.0,
) -> list[Step]:
    """Faults one at a time, each 1-5 s, separated by 1-3 s of calm, within
    [warmup, duration - settle]. Deterministic in its arguments."""
    if not faults:
        return []
    rng = random.Random(seed)
    steps: list[Step] = []
    t = warmup + rng.uniform(0, 1)
    while True:
        fault = rng.choice(faults)
        length = round(rng.uniform(1.0, 5.0), 1)
        if fault == "restart-all":
            length = 1.0
        if t + length > duration - settle:
            break
        steps.append(Step(round(t, 1), fault, length, _params(rng, fault, nodes)))
        t += length + rng.uniform(1.0, 3.0)
    return steps


def _params(rng: random.Random, fault: str, nodes: list[str]) -> dict[str, Any]:
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    n = len(nodes)
    if fault == "partition-halves":
        minority = sorted(shuffled[: (n - 1) // 2])
        return {"minority": minority, "majority": sorted(set(nodes) - set(minority))}
    if fault == "partition-bridge":
        bridge, rest = shuffled[0], shuffled[1:]
        half = len(rest) // 2
        return {"bridge": bridge, "left": sorted(rest[:half]), "right": sorted(rest[half:])}
    if fault == "partition-one-way":
        return {"direction": rng.choice(["from-leader", "to-leader"])}
    if fault == "loss":
        return {"percent": rng.choice([10, 20, 30])}
    if fault in ("link-down", "kill"):
        return {"node": shuffled[0]}
    return {}


def format_schedule(steps: list[Step]) -> str:
    return "\n".join(s.describe() for s in steps) or "(no faults)"


def _cut(a: list[str], b: list[str]) -> set[tuple[str, str]]:
    """Both directions between every node of a and every node of b."""
    return {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}


class Nemesis:
    """Runs a schedule against a cluster, recording each action in the history."""

    def __init__(self, cluster: ChaosCluster, history: History, steps: list[Step]):
        self.cluster = cluster
        self.history = history
        self.steps = steps
        self.injected: list[dict[str, Any]] = []

    async def _do(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        try:
            for step in self.steps:
                delay = t0 + step.at - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
                if stop.is_set():
                    return
                await self._inject(step)
                try:
                    await asyncio.wait_for(stop.wait(), step.duration)
                except TimeoutError:
                    pass
                await self.heal(step.fault)
        finally:
            await self.heal("final")

    async def _inject(self, step: Step) -> None:
        c, f, p = self.cluster, step.fault, dict(step.params)
        nodes = list(c.nodes)
        if f in ("partition-leader", "partition-one-way", "kill-leader", "pause-leader"):
            leader = await self._do(c.probe_leader)
            p["node"] = leader or random.Random(step.at).choice(nodes)
            p["leader_known"] = leader is not None
        target = p.get("node")
        if f == "partition-halves":
            await self._do(c.set_network, _cut(p["minority"], p["majority"]), {})
        elif f == "partition-leader":
            await self._do(c.set_network, _cut([target], [n for n in nodes if n != target]), {})
        elif f == "partition-bridge":
            await self._do(c.set_network, _cut(p["left"], p["right"]), {})
        elif f == "partition-one-way":
            others = [n for n in nodes if n != target]
            pairs = ({(target, o) for o in others} if p["direction"] == "from-leader"
                     else {(o, target) for o in others})
            await self._do(c.set_network, pairs, {})
        elif f == "loss":
            await self._do(c.set_network, set(), dict.fromkeys(nodes, p["percent"]))
        elif f == "link-down":
            await self._do(c.link, target, False)
        elif f in ("kill", "kill-leader"):
            await self._do(c.crash, target)
        elif f == "pause-leader":
            await self._do(c.pause, target)
        elif f == "restart-all":
            await self._do(c.crash_all)
            await asyncio.sleep(0.3)
            await self._do(c.start)
        else:
            raise ValueError(f"unknown fault {f!r}")
        self.history.nemesis(f"start:{f}", p)
        self.injected.append({"fault": f, **p})

    async def heal(self, what: str) -> None:
        await self._do(self.cluster.heal)
        self.history.nemesis(f"heal:{what}")
