"""The workload contract: what clients do during a chaos run, and how the recorded history
is judged.

A workload is a class with:

* `available()`: None if the service it drives exists in this build, else why not;
* `run(stop)`: concurrent clients doing random operations, each recorded in the history,
  until `stop` is set (faults come and go meanwhile);
* `final()`: after every fault is healed and the cluster has recovered: reads that pin the
  final state down (and show the cluster serves again);
* `check(history)` (a classmethod, a pure function of the history): a `Verdict`.

Each service's workload lives in its own module (`wl_kv.py`, `wl_locks.py`, ...) and is
listed in `workloads.WORKLOADS`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..client import Client, Unavailable
from .history import History


@dataclass
class Verdict:
    workload: str
    valid: bool | None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "valid": self.valid, "counts": self.counts,
                "problems": self.problems, "detail": self.detail}


# Exceptions that leave an operation's outcome unknown (it may still take effect).
INDETERMINATE = (Unavailable, aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Workload:
    name = "workload"
    needs_cache_backend = False  # the runner starts a redis-server and points nodes at it
    node_env: dict[str, str] = {}  # environment for the node processes

    def __init__(self, addrs: list[str], history: History, seed: int, *,
                 client_kw: dict[str, Any] | None = None, workers: int = 5,
                 op_timeout: float = 4.0, think_s: float = 0.02):
        self.addrs = addrs
        self.history = history
        self.rng = random.Random(seed)
        self.client_kw = client_kw or {}
        self.workers = workers
        self.op_timeout = op_timeout
        self.think_s = think_s

    @classmethod
    def available(cls) -> str | None:
        return None

    def client(self, worker: int = 0) -> Client:
        """A client for one worker. Odd workers give up after 1 s, so that faults leave
        operations whose outcome is unknown (the interesting case for the checker); even
        workers wait `op_timeout`, so that retries with one request id get exercised."""
        timeout = self.op_timeout if worker % 2 == 0 else 1.0
        return Client(self.addrs, timeout=timeout, request_timeout=min(2.0, timeout),
                      **self.client_kw)

    async def run(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def final(self) -> None:
        return None

    @classmethod
    def check(cls, history: History) -> Verdict:
        raise NotImplementedError


class KeyPool:
    """Keys (or lock names) in use: each gets at most `ops_per_key` operations (or `max_info`
    indeterminate ones) before it is retired for a fresh key, so that every key's history
    stays small enough for the linearizability search (Jepsen's "independent keys")."""

    def __init__(self, prefix: str, active: int, ops_per_key: int, max_info: int):
        self.prefix, self.ops_per_key, self.max_info = prefix, ops_per_key, max_info
        self.next = 0
        self.active: list[str] = []
        self.all: list[str] = []
        self.used: Counter[str] = Counter()
        self.infos: Counter[str] = Counter()
        self.last: dict[str, Any] = {}  # key -> a value recently read or written there
        for _ in range(active):
            self._new()

    def _new(self) -> str:
        key = f"{self.prefix}{self.next:04d}"
        self.next += 1
        self.active.append(key)
        self.all.append(key)
        return key

    def pick(self, rng: random.Random) -> str:
        key = rng.choice(self.active)
        self.used[key] += 1
        if self.used[key] >= self.ops_per_key or self.infos[key] >= self.max_info:
            self.active.remove(key)
            self._new()
        return key

    def note_info(self, key: str) -> None:
        self.infos[key] += 1
