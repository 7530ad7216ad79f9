"""One node of the *relay floor*: the least a replicated, fsynced write can cost with
distsync's own stack (Python, aiohttp, uvloop, a WebSocket per peer, one fdatasync per
batch) and nothing else: no Raft (no terms, votes, log matching or hard state), no request
ids, no state machine, no metrics, no middlewares, no checksums.

It answers the question the side-by-side table cannot: how much of the gap to etcd is the
stack, and how much is distsync's own code. A write to the floor costs at least what any
Python/aiohttp Raft costs on the same machine, so the floor bounds what optimising distsync
alone can reach.

Node 0 is the fixed leader. A PUT is queued; the leader's writer task takes everything
queued, sends it as one frame to every follower, appends it to its own log with one
fdatasync (after the sends, so the followers write in parallel, as distsync's leader
does), and answers the batch once its own write and one follower's are durable (2 of 3).
A follower appends each frame with one fdatasync and acknowledges it. Batches are not
pipelined: the next one starts when this one is acknowledged.

    python floor_node.py --index 0 --http-port 8001 --peers 127.0.0.1:8002,127.0.0.1:8003 \
        --data-dir /tmp/f0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

LOG_BYTES = 64 << 20
ZERO_AHEAD = 1 << 20  # zeros written ahead of the tail, so no fdatasync allocates blocks


class Log:
    """An append-only file, zero-filled ahead of its tail (distsync's segments do the same),
    with one pwrite + one fdatasync per append."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.tail = 0
        self.zeroed = 0

    def append(self, data: bytes) -> None:
        end = self.tail + len(data)
        if end > self.zeroed:
            if end > LOG_BYTES:  # wrap: the floor keeps no history
                self.tail, end = 0, len(data)
            else:
                os.pwrite(self.fd, b"\0" * ZERO_AHEAD, self.zeroed)
                os.fsync(self.fd)
                self.zeroed += ZERO_AHEAD
        os.pwrite(self.fd, data, self.tail)
        os.fdatasync(self.fd)
        self.tail = end


def _frame(seq: int, items: list[bytes]) -> bytes:
    return seq.to_bytes(8, "big") + b"\n".join(items)


async def follower(port: int, log: Log) -> None:
    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                log.append(msg.data)
                await ws.send_bytes(msg.data[:8])  # the batch's sequence number
        return ws

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/status", lambda r: web.json_response({"leader": False}))
    await _serve(app, port)


async def leader(port: int, peers: list[str], log: Log) -> None:
    queue: list[tuple[bytes, asyncio.Future[None]]] = []
    wake = asyncio.Event()
    acks: dict[int, asyncio.Future[None]] = {}
    session = aiohttp.ClientSession()
    links: list[aiohttp.ClientWebSocketResponse] = []
    for p in peers:
        for _ in range(100):  # the followers may still be starting
            try:
                links.append(await session.ws_connect(f"http://{p}/stream", compress=0))
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        else:
            raise SystemExit(f"floor leader: follower {p} did not answer")

    async def read_acks(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            fut = acks.pop(int.from_bytes(msg.data[:8], "big"), None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    readers = [asyncio.create_task(read_acks(ws)) for ws in links]

    async def writer() -> None:
        seq = 0
        while True:
            await wake.wait()
            wake.clear()
            batch, queue[:] = list(queue), []
            if not batch:
                continue
            seq += 1
            acked = asyncio.get_running_loop().create_future()
            acks[seq] = acked
            frame = _frame(seq, [data for data, _ in batch])
            for ws in list(links):
                try:
                    await ws.send_bytes(frame)
                except (aiohttp.ClientError, ConnectionError):
                    links.remove(ws)  # a follower that went away: the other one answers
            await asyncio.sleep(0)  # let the frames leave before the loop blocks in fsync
            log.append(frame)
            await acked
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            if queue:
                wake.set()

    async def put(request: web.Request) -> web.Response:
        body = await request.json()
        key = request.match_info["key"]
        fut = asyncio.get_running_loop().create_future()
        queue.append((f"{key}={body['value']}".encode(), fut))
        wake.set()
        await fut
        return web.json_response({"key": key})

    task = asyncio.create_task(writer())
    app = web.Application()
    app.router.add_put("/v1/kv/{key:.+}", put)
    app.router.add_get("/status", lambda r: web.json_response({"leader": True}))
    try:
        await _serve(app, port)
    finally:
        for t in (task, *readers):
            t.cancel()
        await session.close()


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=int, required=True, help="0 = the leader")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--peers", default="", help="host:port of the followers (leader only)")
    ap.add_argument("--data-dir", required=True)
    a = ap.parse_args()
    Path(a.data_dir).mkdir(parents=True, exist_ok=True)
    log = Log(Path(a.data_dir) / "floor.log")
    coro = (leader(a.http_port, [p for p in a.peers.split(",") if p], log) if a.index == 0
            else follower(a.http_port, log))
    try:
        import uvloop  # as distsync's nodes run (cli.py --event-loop auto)
    except ImportError:
        asyncio.run(coro)
    else:
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(
                loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)


if __name__ == "__main__":
    main()
