"""The embedded backing store for `distsync up` on a machine without `redis-server`: the
in-memory store (backend.MemoryBackend) served over loopback HTTP from the `up` process, so
every node process shares one store. Development only: it lives and dies with that process.
URL: `embedded://127.0.0.1:<port>`."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
from aiohttp import web

from .backend import BackendUnavailable, Loaded, MemoryBackend
from .protocol import decode, encode


class EmbeddedStoreServer:
    def __init__(self) -> None:
        self.store = MemoryBackend()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"embedded://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        msg = decode(await request.read())
        op, st = request.match_info["op"], self.store
        if op == "load":
            ld = await st.load(msg["key"], msg["seal"])
            out: Any = [ld.value, ld.version, ld.counter, ld.ttl_ms]
        elif op == "reserve":
            out = await st.reserve(msg["key"], msg.get("conf", 0))
        elif op == "put":
            out = list(await st.put(msg["key"], msg["value"], msg["ttl_ms"], msg["conf"]))
        else:
            out = list(await st.write(msg["key"], msg["expect"], msg["newver"], msg["value"],
                                      msg["ttl_ms"]))
        return web.Response(body=encode({"r": out}))

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{op}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> EmbeddedStoreServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


class EmbeddedBackend:
    kind = "embedded"

    def __init__(self, url: str, timeout: float = 1.0):
        self.base = "http://" + url.split("://", 1)[1].rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _op(self, op: str, **msg: Any) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        try:
            async with self._session.post(f"{self.base}/{op}", data=encode(msg)) as r:
                if r.status != 200:
                    raise BackendUnavailable(f"embedded store answered HTTP {r.status}")
                return decode(await r.read())["r"]
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise BackendUnavailable(f"embedded store at {self.base}: {e!r}") from None

    async def load(self, key: str, seal: bool = False) -> Loaded:
        return Loaded(*(await self._op("load", key=key, seal=seal)))

    async def reserve(self, key: str, conf: int = 0) -> int:
        return int(await self._op("reserve", key=key, conf=conf))

    async def put(self, key: str, value: bytes | None, ttl_ms: int | None,
                  conf: int = 0) -> tuple[int, bool]:
        nv, existed = await self._op("put", key=key, value=value, ttl_ms=ttl_ms, conf=conf)
        return int(nv), bool(existed)

    async def write(self, key: str, expect: int, newver: int, value: bytes | None,
                    ttl_ms: int | None) -> tuple[int, bool]:
        nv, existed = await self._op("write", key=key, expect=expect, newver=newver,
                                     value=value, ttl_ms=ttl_ms)
        return int(nv), bool(existed)

    async def ping(self) -> bool:
        try:
            await self._op("reserve", key="__ping__")
            return True
        except BackendUnavailable:
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
