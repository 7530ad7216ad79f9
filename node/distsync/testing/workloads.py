"""The workloads a chaos run can use, by name (`--workload kv,locks,queue,cache` or `all`).

Adding a service's workload: a `Workload` subclass (see workload.py) in its own module, one
line in `WORKLOADS`, and its checks described in README "Chaos testing". A workload whose
service is missing from a build says so in `available()` and is skipped with that reason.
"""

from __future__ import annotations

from .wl_cache import CacheWorkload
from .wl_kv import KVWorkload
from .wl_locks import LocksWorkload
from .wl_queue import QueueWorkload
from .workload import Workload

WORKLOADS: dict[str, type[Workload]] = {
    "kv": KVWorkload,
    "locks": LocksWorkload,
    "queue": QueueWorkload,
    "cache": CacheWorkload,
}


def resolve(names: list[str]) -> tuple[list[type[Workload]], dict[str, str]]:
    """Workload classes for `names` ("all": every one), and why the others are not run."""
    skipped: dict[str, str] = {}
    if names == ["all"]:
        names = list(WORKLOADS)
    out = []
    for n in names:
        cls = WORKLOADS.get(n)
        reason = "unknown workload" if cls is None else cls.available()
        if reason:
            skipped[n] = reason
        else:
            out.append(cls)  # type: ignore[arg-type]
    return out, skipped
