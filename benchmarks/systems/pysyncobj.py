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

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.systems.base import ProcessPeer
from benchmarks.systems.procs import ProcessSet

NODE_SCRIPT = Path(__file__).resolve().with_name("pysyncobj_node.py")
VALUE = "v" * 100
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


class PySyncObj(ProcessPeer):
    """A PySyncObj cluster of separate processes, one journal + dump per node in a temp dir.

    `restart` relaunches a node with the same journal and dump: PySyncObj replays them on
    start."""

    name = "pysyncobj"
    durability = (
        "journal written (mmap), not fsynced: survives a process kill, not a power loss; "
        "appendEntriesPeriod=2 ms (default 100 ms), appendEntriesUseBatch=False"
    )
    START_TIMEOUT_S = 60.0
    WORKLOADS = {"put": "_put", "lock": "_lock"}
    UNSUPPORTED = {"get": NO_LINEARIZABLE_READ}
    NO_WORKLOAD = "pysyncobj adapter has no workload {workload!r}"

    # -- lifecycle --------------------------------------------------------------------------

    def _argv(self, node: str, procs: ProcessSet) -> list[str]:
        return [
            sys.executable, str(NODE_SCRIPT), "--self", self._peer_addr[node],
            "--partners", ",".join(a for m, a in self._peer_addr.items() if m != node),
            "--http-port", self._client_url[node].rsplit(":", 1)[1],
            "--data-dir", str(procs.data_dir(node)),
        ]

    async def _agreed_leader(self, session: aiohttp.ClientSession) -> str | None:
        """One round of /status: the live node that says it leads, if it is the only one
        and every reachable node names it."""
        named, leading = set(), []
        for n in self._live():
            try:
                st = await _call(session, "GET", self._client_url[n] + "/status")
            except (TimeoutError, aiohttp.ClientError, RuntimeError):
                continue
            named.add(st["leader"])
            if st["is_leader"]:
                leading.append(n)
        if len(leading) == 1 and named == {self._peer_addr[leading[0]]}:
            return leading[0]
        return None

    # -- workloads --------------------------------------------------------------------------

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        """Point ops at the current leader; the lock session is the leader process's own
        ReplLockManager, already kept alive, so locks need nothing more."""
        await self._find_leader_url()

    async def _write_to(self, session: aiohttp.ClientSession, node: str, key: str) -> None:
        await _call(session, "PUT", f"{self._client_url[node]}/kv/{key}", VALUE,
                    WRITE_ONCE_TIMEOUT)

    async def _put(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        await _call(session, "PUT", f"{self._leader_url}/kv/{key}", VALUE)

    async def _lock(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        url = f"{self._leader_url}/lock/bench/lock/w{worker}"
        await _call(session, "POST", url)
        await _call(session, "DELETE", url)

if __name__ == "__main__":
    from benchmarks.systems.selfcheck import main

    main(PySyncObj())
