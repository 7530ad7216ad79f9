"""The contract every system under test meets, so `run.py` drives distsync and its peers
(etcd, PySyncObj, Redis) with the same load generator, the same aiohttp client and the same
clock. A system starts its own processes on loopback and owns their cleanup.

The shared parts of the adapters live here too (`WorkloadTable`, `ProcessPeer`), so that
what the table compares is started, timed and dispatched by one piece of code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar, Protocol

import aiohttp

from benchmarks.systems.procs import ProcessSet, first_ack, wait_until_written
from distsync.local import free_ports

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


class WorkloadTable:
    """`op()` from a table, so that an adapter lists what it runs (and why not the rest) as
    data, and the dispatch is written once for every system in the table."""

    # workload -> name of the method that makes one request (an `Op`).
    WORKLOADS: ClassVar[Mapping[str, str]] = {}
    # workload -> why this system cannot run it: the message the table shows.
    UNSUPPORTED: ClassVar[Mapping[str, str]] = {}
    # The message for any other workload; `{workload!r}` is filled in.
    NO_WORKLOAD: ClassVar[str] = "no workload {workload!r}"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # A misspelt method name fails at import, not mid-benchmark as an error column.
        super().__init_subclass__(**kwargs)
        missing = [m for m in cls.WORKLOADS.values() if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"{cls.__name__}.WORKLOADS names no method {missing}")

    def op(self, workload: str) -> Op:
        if workload in self.UNSUPPORTED:
            raise Unsupported(self.UNSUPPORTED[workload])
        method = self.WORKLOADS.get(workload)
        if method is None:
            raise Unsupported(self.NO_WORKLOAD.format(workload=workload))
        op: Op = getattr(self, method)
        return op


# How long one status poll of one node may take while looking for the leader.
STATUS_TIMEOUT = aiohttp.ClientTimeout(total=1.0)
LEADER_TIMEOUT_S = 15.0


class ProcessPeer(WorkloadTable):
    """A peer cluster of `nodes` separate server processes on loopback (a `ProcessSet`), each
    with a client port and a peer (Raft) port. Launching, killing, restarting, waiting for the
    first write and finding the leader are the same for every such peer, so that they are
    timed the same way; a subclass says how to launch one node and how to read its status.
    Node names are `<name>-<i>`; ops go to the leader's client URL, as a leader-aware client
    would send them."""

    name: ClassVar[str]
    START_TIMEOUT_S: ClassVar[float] = 30.0

    def __init__(self, nodes: int = 3, data_dir: str | None = None) -> None:
        self.nodes = nodes
        self._parent_dir = data_dir
        self._procs: ProcessSet | None = None
        self._client_url: dict[str, str] = {}  # node name -> http://host:port it serves on
        self._peer_addr: dict[str, str] = {}   # node name -> host:port of its Raft port
        self._leader_url = ""

    # -- what a subclass supplies -------------------------------------------------------------

    def _argv(self, node: str, procs: ProcessSet) -> list[str]:
        """The command line of `node`, from `_client_url`, `_peer_addr` and its data dir."""
        raise NotImplementedError

    async def _agreed_leader(self, session: aiohttp.ClientSession) -> str | None:
        """One round of status calls: the live node that all answers name as leader, if any."""
        raise NotImplementedError

    async def _write_to(self, session: aiohttp.ClientSession, node: str, key: str) -> None:
        """One write of VALUE under `key` through `node`, with a short timeout."""
        raise NotImplementedError

    async def _stop_last(self) -> str | None:
        """The node to stop after the others (see ProcessSet.stop), if any."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> float:
        self._procs = procs = ProcessSet(f"{self.name}-bench", self._parent_dir)
        ports = free_ports(2 * self.nodes)
        names = [f"{self.name}-{i}" for i in range(self.nodes)]
        self._client_url = {n: f"http://127.0.0.1:{ports[2 * i]}" for i, n in enumerate(names)}
        self._peer_addr = {n: f"127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names)}
        argv = {n: self._argv(n, procs) for n in names}
        t0 = time.perf_counter()
        for n in names:
            procs.spawn(n, argv[n])
        async with aiohttp.ClientSession() as session:
            await wait_until_written(
                lambda: self.write_once(session, "bench/ready"), self.START_TIMEOUT_S,
                f"{self.name} start", self._log_tails,
            )
        ready = time.perf_counter() - t0
        await self._find_leader_url()
        return ready

    async def stop(self) -> None:
        if self._procs is not None:
            last = await self._stop_last()
            await asyncio.to_thread(self._procs.stop, last=last)
            self._procs = None

    def pids(self) -> dict[str, int]:
        return self._procs.pids() if self._procs else {}

    def kill(self, node: str) -> None:
        assert self._procs is not None
        self._procs.kill(node)

    def restart(self, node: str) -> None:
        """Relaunch with the same command line and data dir (see the subclass for how its
        peer rejoins from them)."""
        assert self._procs is not None
        self._procs.restart(node)

    async def leader(self) -> str:
        async with aiohttp.ClientSession(timeout=STATUS_TIMEOUT) as session:
            deadline = time.monotonic() + LEADER_TIMEOUT_S
            while time.monotonic() < deadline:
                if (name := await self._agreed_leader(session)) is not None:
                    return name
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name}: no agreed leader among {self._live()}")

    async def write_once(self, session: aiohttp.ClientSession, key: str) -> None:
        await first_ack({
            n: lambda n=n: self._write_to(session, n, key) for n in self._live()
        }, self.name)

    # -- helpers -----------------------------------------------------------------------------

    def _live(self) -> list[str]:
        return self._procs.live_names() if self._procs else []

    async def _find_leader_url(self) -> None:
        self._leader_url = self._client_url[await self.leader()]

    def _log_tails(self) -> str:
        assert self._procs is not None
        return "\n".join(f"--- {n} ---\n{self._procs.log_tail(n)}" for n in self._procs.names())
