"""The contract every system under test meets, so `run.py` drives distsync and its peers
(etcd, PySyncObj, Redis) with the same load generator, the same aiohttp client and the same
clock. A system starts its own processes on loopback and owns their cleanup."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

# One request, timed by the harness from invoke to parsed answer. `key` is unique per call
# for writes; `worker` is the index of the closed-loop worker that issues it.
Op = Callable[[aiohttp.ClientSession, int, str], Awaitable[None]]


class Unsupported(Exception):
    """The system cannot run this workload; the table says so with this message."""


class System(Protocol):
    name: str          # "distsync", "etcd", "pysyncobj", "redis"
    nodes: int         # cluster size it was started with
    durability: str    # one line for the table: what an acknowledged write means

    async def start(self) -> float:
        """Start every process and wait until a write succeeds; returns start-to-ready
        seconds (from first spawn to first acknowledged write)."""

    async def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and delete its data."""

    def pids(self) -> dict[str, int]:
        """Node name -> pid of each live server process (for RSS and CPU)."""

    async def leader(self) -> str:
        """Name of the current leader (the node to kill for failover)."""

    def kill(self, node: str) -> None:
        """SIGKILL one node."""

    def restart(self, node: str) -> None:
        """Start a killed node again with its data."""

    def op(self, workload: str) -> Op:
        """The request for a workload: "put" (replicated write of a 100-byte value),
        "get" (linearizable read of a key written before), "lock" (acquire + release of an
        uncontended lock named after the worker). Raises Unsupported."""

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        """Set up what a workload needs before timing (keys to read, lock sessions)."""

    async def write_once(self, session: aiohttp.ClientSession, key: str) -> None:
        """One write through any live node, retried by the caller until it succeeds:
        used to time failover (SIGKILL of the leader -> first acknowledged write)."""
