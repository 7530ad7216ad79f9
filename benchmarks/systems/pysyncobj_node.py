"""One PySyncObj node for the side-by-side benchmark: a replicated dict and PySyncObj's lock
battery behind a tiny aiohttp front, so the harness drives PySyncObj with the same HTTP
client as every other system.

PySyncObj is a library, not a server, so a front is the only way to put it in the table; it
lives in the node's own process (as an application embedding PySyncObj would), and a request
is answered only when PySyncObj's callback reports the command applied on this node.

    python pysyncobj_node.py --self 127.0.0.1:7001 --partners 127.0.0.1:7002,127.0.0.1:7003 \
        --http-port 8001 --data-dir /tmp/n1

Routes:
  PUT    /kv/{key}     replicated set (body = value); 200 once applied here, 503 on failure
  GET    /kv/{key}     this replica's applied value: NOT linearizable (PySyncObj has no
                       ReadIndex or leader lease read), for debugging only
  POST   /lock/{name}  replicated acquire (ReplLockManager); 200, or 409 if held elsewhere
  DELETE /lock/{name}  replicated release
  GET    /status       leader flag, leader address, raft term and commit index
A follower hands writes to the leader itself (PySyncObj forwards commands), so any node
accepts them; a 503 body names the leader so a client can go there directly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This file sits next to the adapter module `pysyncobj.py`; run as a script, its directory
# is sys.path[0], which would make `import pysyncobj` import the adapter. Drop it first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from aiohttp import web  # noqa: E402
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf  # noqa: E402
from pysyncobj.batteries import ReplDict, ReplLockManager  # noqa: E402

# Raft settings, stated in the adapter's durability line. The default appendEntriesPeriod
# (0.1 s) caps a closed-loop client at ~10 commits/s per in-flight request. With batching on
# (the default) a command also waits for the next tick, which only comes when a socket
# wakes the poller or autoTickPeriod (50 ms) passes: ~100 ms per put even at 2 ms. Batching
# off is PySyncObj's documented low-latency mode: each command wakes the tick thread through
# a pipe and is sent to the followers at once (entries already queued still travel
# together). Measured once on this machine (2 s, c=1/c=16): batching + 2 ms ticks gave
# 140/990 puts/s and ~12% idle CPU per node; batching off gave 386/864 and ~2%.
RAFT_SETTINGS = {"appendEntriesPeriod": 0.002, "appendEntriesUseBatch": False}
LOCK_AUTO_UNLOCK_S = 30.0
COMMAND_TIMEOUT_S = 5.0
_LEADER_STATE = 2  # pysyncobj.syncobj._RAFT_STATE.LEADER
_REASONS = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}


class Node:
    """The replicated objects of one process and the bridge from PySyncObj's tick thread
    (where callbacks run) to the asyncio loop (where HTTP handlers wait)."""

    def __init__(self, self_addr: str, partners: list[str], data_dir: Path) -> None:
        self.kv = ReplDict()
        self.locks = ReplLockManager(autoUnlockTime=LOCK_AUTO_UNLOCK_S)
        conf = SyncObjConf(
            **RAFT_SETTINGS,
            journalFile=str(data_dir / "journal.bin"),
            fullDumpFile=str(data_dir / "dump.bin"),
        )
        self.sync = SyncObj(self_addr, partners, conf, consumers=[self.kv, self.locks])

    async def call(self, start: Callable[[Callable[[Any, Any], None]], None]) -> tuple[Any, int | None]:
        """Run one replicated call and wait for its callback: (result, FAIL_REASON) or
        (None, None) on timeout (no leader, or a lost forward)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def settle(res: Any, err: int) -> None:
            if not fut.done():
                fut.set_result((res, err))

        start(lambda res, err: loop.call_soon_threadsafe(settle, res, err))
        try:
            return await asyncio.wait_for(fut, COMMAND_TIMEOUT_S)
        except TimeoutError:
            return None, None

    def status(self) -> dict[str, Any]:
        st = self.sync.getStatus()
        leader = st.get("leader")
        return {
            "self": str(st["self"]), "is_leader": st["state"] == _LEADER_STATE,
            "leader": str(leader) if leader is not None else None,
            "raft_term": st["raft_term"], "commit_idx": st["commit_idx"],
            "last_applied": st["last_applied"], "has_quorum": st["has_quorum"],
        }

    def failure(self, err: int | None) -> web.Response:
        reason = "timeout" if err is None else _REASONS.get(err, str(err))
        return web.json_response(
            {"error": reason, "leader": self.status()["leader"]}, status=503)


def routes(node: Node) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.put("/kv/{key:.+}")
    async def put(request: web.Request) -> web.Response:
        key, value = request.match_info["key"], await request.text()
        _, err = await node.call(lambda cb: node.kv.set(key, value, callback=cb))
        if err != FAIL_REASON.SUCCESS:
            return node.failure(err)
        return web.json_response({"ok": True})

    @r.get("/kv/{key:.+}")
    async def get(request: web.Request) -> web.Response:
        value = node.kv.get(request.match_info["key"])
        if value is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response({"value": value, "consistency": "local replica"})

    @r.post("/lock/{name:.+}")
    async def acquire(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        acquired, err = await node.call(lambda cb: node.locks.tryAcquire(name, callback=cb))
        if err != FAIL_REASON.SUCCESS:
            return node.failure(err)
        if not acquired:
            return web.json_response({"error": "held"}, status=409)
        return web.json_response({"acquired": True})

    @r.delete("/lock/{name:.+}")
    async def release(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        _, err = await node.call(lambda cb: node.locks.release(name, callback=cb))
        if err != FAIL_REASON.SUCCESS:
            return node.failure(err)
        return web.json_response({"released": True})

    @r.get("/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(node.status())

    return r


async def serve(args: argparse.Namespace) -> None:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    node = Node(args.self_addr, [p for p in args.partners.split(",") if p], args.data_dir)
    app = web.Application()
    app.add_routes(routes(node))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.http_port).start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await runner.cleanup()
    node.locks.destroy()
    node.sync.destroy_synchronous()  # flushes the journal's mmap on the way out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self", dest="self_addr", required=True, help="raft host:port")
    ap.add_argument("--partners", required=True, help="comma-separated raft host:port")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
