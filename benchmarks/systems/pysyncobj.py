"""PySyncObj as a peer in the side-by-side benchmark: `nodes` processes of
`pysyncobj_node.py`, each a PySyncObj node (replicated dict + lock battery) with an HTTP front.

What the table can and cannot say about it:
- "put" is a replicated `ReplDict.set`, answered once applied on the leader.
- "get" is Unsupported: PySyncObj has no linearizable read (no ReadIndex, no leader lease);
  its reads come from the local replica's applied state and may be stale. Sending a read
  through the log would make it linearizable but turn it into a write, which "put" measures.
- "lock" is `ReplLockManager`: acquire and release are one replicated command each, the
  process's lock session kept alive by the battery's prolongation thread. There is no
  fencing token, and expiry compares timestamps taken from the proposing node's wall clock.
- Durability: PySyncObj writes its journal into an mmap'd file and never calls fsync or
  msync before acknowledging (only on clean shutdown), so an acknowledged write survives a
  process SIGKILL (the page cache keeps it) but not a power loss.

Self-check: `python -m benchmarks.systems.pysyncobj` from the repo root.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.systems.base import Op, Unsupported
from benchmarks.systems.procs import ProcessSet, first_ack, wait_until_written
from distsync.local import free_ports

NODE_SCRIPT = Path(__file__).resolve().with_name("pysyncobj_node.py")
VALUE = "v" * 100
STATUS_TIMEOUT = aiohttp.ClientTimeout(total=1.0)
# A follower forwards a write to the leader it last knew; one forwarded to a leader that has
# just died fails only once the follower sees a new leader. The short per-attempt timeout
# keeps any other stall from rounding up the failover time (the caller retries).
WRITE_ONCE_TIMEOUT = aiohttp.ClientTimeout(total=0.25)
NO_LINEARIZABLE_READ = (
    "PySyncObj has no linearizable read: reads come from the local replica (no ReadIndex or "
    "leader lease), and a read through the log would be a write"
)


def available() -> bool:
    """Whether the pysyncobj distribution is installed (by metadata, not import: this
    module's own name would shadow the library on some sys.path layouts)."""
    try:
        importlib.metadata.version("pysyncobj")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, data: str | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> dict[str, Any]:
    """One front call; anything but 200 raises so the harness counts it as an error."""
    kwargs: dict[str, Any] = {"data": data}
    if timeout is not None:
        kwargs["timeout"] = timeout
    async with session.request(method, url, **kwargs) as r:
        body = await r.json(content_type=None)
        if r.status != 200:
            raise RuntimeError(f"pysyncobj {method} {url}: {r.status} {body}")
        return body


class PySyncObj:
    """A PySyncObj cluster of separate processes, one journal + dump per node in a temp dir."""

    name = "pysyncobj"
    durability = (
        "journal written (mmap), not fsynced: survives a process kill, not a power loss; "
        "appendEntriesPeriod=2 ms (default 100 ms), appendEntriesUseBatch=False"
    )

    def __init__(self, nodes: int = 3, data_dir: str | None = None) -> None:
        self.nodes = nodes
        self._parent_dir = data_dir
        self._procs: ProcessSet | None = None
        self._http_url: dict[str, str] = {}
        self._raft_name: dict[str, str] = {}   # raft host:port -> node name
        self._leader_url = ""

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> float:
        self._procs = procs = ProcessSet("pysyncobj-bench", self._parent_dir)
        ports = free_ports(2 * self.nodes)
        names = [f"pysyncobj-{i}" for i in range(self.nodes)]
        raft = {n: f"127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names)}
        self._raft_name = {a: n for n, a in raft.items()}
        self._http_url = {n: f"http://127.0.0.1:{ports[2 * i]}" for i, n in enumerate(names)}
        t0 = time.perf_counter()
        for n in names:
            procs.spawn(n, [
                sys.executable, str(NODE_SCRIPT), "--self", raft[n],
                "--partners", ",".join(raft[m] for m in names if m != n),
                "--http-port", self._http_url[n].rsplit(":", 1)[1],
                "--data-dir", str(procs.data_dir(n)),
            ])
        async with aiohttp.ClientSession() as session:
            await wait_until_written(
                lambda: self.write_once(session, "bench/ready"), 60.0, "pysyncobj start",
                self._log_tails,
            )
        ready = time.perf_counter() - t0
        await self._find_leader_url()
        return ready

    async def stop(self) -> None:
        if self._procs is not None:
            await asyncio.to_thread(self._procs.stop)
            self._procs = None

    def pids(self) -> dict[str, int]:
        return self._procs.pids() if self._procs else {}

    def kill(self, node: str) -> None:
        assert self._procs is not None
        self._procs.kill(node)

    def restart(self, node: str) -> None:
        """Relaunch with the same journal and dump: PySyncObj replays them on start."""
        assert self._procs is not None
        self._procs.restart(node)

    async def leader(self) -> str:
        """The live node that says it leads, once every reachable node names it."""
        async with aiohttp.ClientSession(timeout=STATUS_TIMEOUT) as session:
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                named, leading = set(), []
                for n in self._live():
                    try:
                        st = await _call(session, "GET", self._http_url[n] + "/status")
                    except (TimeoutError, aiohttp.ClientError, RuntimeError):
                        continue
                    named.add(st["leader"])
                    if st["is_leader"]:
                        leading.append(n)
                if len(leading) == 1 and named == {self._addr_of(leading[0])}:
                    return leading[0]
                await asyncio.sleep(0.05)
        raise TimeoutError(f"pysyncobj: no agreed leader among {self._live()}")

    # -- workloads --------------------------------------------------------------------------

    def op(self, workload: str) -> Op:
        if workload == "put":
            return self._put
        if workload == "get":
            raise Unsupported(NO_LINEARIZABLE_READ)
        if workload == "lock":
            return self._lock
        raise Unsupported(f"pysyncobj adapter has no workload {workload!r}")

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        """Point ops at the current leader; the lock session is the leader process's own
        ReplLockManager, already kept alive, so locks need nothing more."""
        await self._find_leader_url()

    async def write_once(self, session: aiohttp.ClientSession, key: str) -> None:
        await first_ack({
            n: lambda n=n: _call(session, "PUT", f"{self._http_url[n]}/kv/{key}", VALUE,
                                 WRITE_ONCE_TIMEOUT)
            for n in self._live()
        }, "pysyncobj")

    async def _put(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        await _call(session, "PUT", f"{self._leader_url}/kv/{key}", VALUE)

    async def _lock(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        url = f"{self._leader_url}/lock/bench/lock/w{worker}"
        await _call(session, "POST", url)
        await _call(session, "DELETE", url)

    # -- helpers ----------------------------------------------------------------------------

    def _live(self) -> list[str]:
        return self._procs.live_names() if self._procs else []

    def _addr_of(self, node: str) -> str:
        return next(a for a, n in self._raft_name.items() if n == node)

    async def _find_leader_url(self) -> None:
        self._leader_url = self._http_url[await self.leader()]

    def _log_tails(self) -> str:
        assert self._procs is not None
        return "\n".join(f"--- {n} ---\n{self._procs.log_tail(n)}" for n in self._procs.names())


if __name__ == "__main__":
    from benchmarks.systems.selfcheck import main

    main(PySyncObj())
