"""The relay floor as a row of the side-by-side table (see `floor_node.py`): three processes
that replicate a write to a majority with one fdatasync per batch over distsync's own stack
(Python, aiohttp, uvloop, a WebSocket per peer) and do nothing else.

It is not a system anyone could run: no elections, no recovery, no reads. It is there so
the table shows what the stack alone costs next to distsync and etcd, measured in the same
run by the same client. "lock" is two such writes in turn (an acquire and a release each
commit once in distsync and in etcd), so it is the floor of any lock pair on this stack.

Self-check: `python -m benchmarks.systems.floor` from the repo root.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp

from benchmarks.systems.base import ProcessPeer
from benchmarks.systems.procs import ProcessSet

NODE_SCRIPT = Path(__file__).resolve().with_name("floor_node.py")
VALUE = "v" * 100
WRITE_ONCE_TIMEOUT = aiohttp.ClientTimeout(total=0.5)


async def _put(session: aiohttp.ClientSession, url: str,
               timeout: aiohttp.ClientTimeout | None = None) -> None:
    kwargs = {"timeout": timeout} if timeout is not None else {}
    async with session.put(url, json={"value": VALUE}, **kwargs) as r:
        await r.json()
        if r.status != 200:
            raise RuntimeError(f"floor PUT {url}: {r.status}")


class Floor(ProcessPeer):
    """Node 0 leads for good; the others only append and acknowledge."""

    name = "floor"
    durability = ("fsync on a majority (leader + 1 follower), one fdatasync per batch; "
                  "no Raft, no state machine: the stack's floor, not a system")
    WORKLOADS = {"put": "_put", "lock": "_lock"}
    UNSUPPORTED = {"get": "the floor keeps no state to read"}
    NO_WORKLOAD = "the floor has no workload {workload!r}"

    def __init__(self, nodes: int = 3, data_dir: str | None = None,
                 python: str | None = None) -> None:
        """`python`: the interpreter the floor's processes run on; run.py gives it the one
        distsync's nodes run on, so that the floor stays the floor of that stack."""
        super().__init__(nodes, data_dir)
        self.python = python or sys.executable

    def _argv(self, node: str, procs: ProcessSet) -> list[str]:
        index = int(node.rsplit("-", 1)[1])
        followers = [u.removeprefix("http://") for n, u in self._client_url.items()
                     if not n.endswith("-0")]
        return [
            self.python, str(NODE_SCRIPT), "--index", str(index),
            "--http-port", self._client_url[node].rsplit(":", 1)[1],
            "--peers", ",".join(followers) if index == 0 else "",
            "--data-dir", str(procs.data_dir(node)),
        ]

    async def _agreed_leader(self, session: aiohttp.ClientSession) -> str | None:
        lead = f"{self.name}-0"
        return lead if lead in self._live() else None

    async def _write_to(self, session: aiohttp.ClientSession, node: str, key: str) -> None:
        # Only the leader takes writes; every attempt goes there.
        await _put(session, f"{self._client_url[self.name + '-0']}/v1/kv/{key}",
                   WRITE_ONCE_TIMEOUT)

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        await self._find_leader_url()

    async def _put(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        await _put(session, f"{self._leader_url}/v1/kv/{key}")

    async def _lock(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        await _put(session, f"{self._leader_url}/v1/kv/lock-w{worker}-acquire")
        await _put(session, f"{self._leader_url}/v1/kv/lock-w{worker}-release")


if __name__ == "__main__":
    from benchmarks.systems.selfcheck import main

    main(Floor())
