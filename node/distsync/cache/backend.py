"""The backing store: a real Redis through redis-py asyncio, or an embedded in-memory store.

Each key has two Redis keys in one hash slot: `dsc:{k}:v` holds `b"<version>:" + value`
(with the key's TTL) and `dsc:{k}:c` is the key's version counter (no TTL, so versions only
grow, across deletes and expiry too). Every mutation is a Lua script, atomic in Redis:

- `reserve`: INCR the counter. The home does this before granting M, which also fences any
  older owner's in-flight write (its compare below fails).
- `write(expect, newver, value)`: only if counter == expect: set counter = newver and store
  (or delete) the value stamped with newver. A write granted by the home uses
  expect == newver == the reserved version; a silent E->M write by the owner uses
  expect = its line's version, newver = expect + 1.
- `load(seal)`: value, its version, the counter and the TTL left. With seal, a value whose
  version is below the counter (a reserved write that never completed) is re-stamped with a
  fresh counter value, so the abandoned writer can never land later and the value can be
  cached again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("distsync.cache")


class BackendUnavailable(Exception):
    """The backing store cannot be reached (a write may or may not have landed)."""


@dataclass(slots=True)
class Loaded:
    value: bytes | None  # None: absent
    version: int  # version stamped on the value (0 if absent)
    counter: int  # the key's version counter (>= version)
    ttl_ms: int | None  # None: no TTL


class Backend(Protocol):
    kind: str

    async def load(self, key: str, seal: bool = False) -> Loaded: ...

    async def reserve(self, key: str) -> int: ...

    async def write(self, key: str, expect: int, newver: int, value: bytes | None,
                    ttl_ms: int | None) -> tuple[int, bool]:
        """(newver, existed-before) on success; (0, False) when the compare failed."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


_LOAD = """
local raw = redis.call('GET', KEYS[1])
local ctr = tonumber(redis.call('GET', KEYS[2]) or '0')
if not raw then return {0, '', 0, ctr, -2} end
local i = string.find(raw, ':', 1, true)
local ver = tonumber(string.sub(raw, 1, i - 1))
local val = string.sub(raw, i + 1)
local pttl = redis.call('PTTL', KEYS[1])
if ARGV[1] == '1' and ver < ctr then
  ctr = redis.call('INCR', KEYS[2])
  ver = ctr
  redis.call('SET', KEYS[1], string.format('%d', ver) .. ':' .. val, 'KEEPTTL')
end
return {1, val, ver, ctr, pttl}
"""

_WRITE = """
local ctr = tonumber(redis.call('GET', KEYS[2]) or '0')
if ctr ~= tonumber(ARGV[1]) then return {0, ctr} end
local nv = tonumber(ARGV[2])
if nv ~= ctr then redis.call('SET', KEYS[2], string.format('%d', nv)) end
if ARGV[3] == 'del' then return {nv, redis.call('DEL', KEYS[1])} end
local existed = redis.call('EXISTS', KEYS[1])
local raw = string.format('%d', nv) .. ':' .. ARGV[4]
if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[1], raw, 'PX', ARGV[5])
else redis.call('SET', KEYS[1], raw) end
return {nv, existed}
"""


def _keys(key: str) -> list[str]:
    return [f"dsc:{{{key}}}:v", f"dsc:{{{key}}}:c"]


class RedisBackend:
    kind = "redis"

    def __init__(self, url: str, timeout: float = 1.0):
        import redis.asyncio as aioredis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.url = url
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1), max_connections=256,
        )
        self._load = self.client.register_script(_LOAD)
        self._write = self.client.register_script(_WRITE)
        from redis import exceptions as rex

        self._down = (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, OSError,
                      asyncio.TimeoutError)

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            return await coro
        except self._down as e:
            raise BackendUnavailable(f"redis at {self.url}: {e}") from None

    async def load(self, key: str, seal: bool = False) -> Loaded:
        ok, val, ver, ctr, pttl = await self._call(
            self._load(keys=_keys(key), args=["1" if seal else "0"])
        )
        if not ok:
            return Loaded(None, 0, int(ctr), None)
        return Loaded(bytes(val), int(ver), int(ctr), None if pttl < 0 else max(1, int(pttl)))

    async def reserve(self, key: str) -> int:
        return int(await self._call(self.client.incr(_keys(key)[1])))

    async def write(self, key: str, expect: int, newver: int, value: bytes | None,
                    ttl_ms: int | None) -> tuple[int, bool]:
        args = [expect, newver, "del" if value is None else "set", value or b"", ttl_ms or 0]
        nv, existed = await self._call(self._write(keys=_keys(key), args=args))
        return (int(nv), bool(existed)) if nv else (0, False)

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.client.ping()))
        except BackendUnavailable:
            return False

    async def close(self) -> None:
        await self.client.aclose()


class MemoryBackend:
    """The same semantics in process memory: for unit tests, benchmarks of the protocol
    alone, and a single node without Redis. `available = False` simulates an outage."""

    kind = "memory"

    def __init__(self, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.clock = clock
        self.values: dict[str, tuple[int, bytes, float | None]] = {}
        self.counters: dict[str, int] = {}
        self.available = True
        self.ops = 0

    def _check(self) -> None:
        self.ops += 1
        if not self.available:
            raise BackendUnavailable("memory backend marked unavailable")

    def _get(self, key: str) -> tuple[int, bytes, float | None] | None:
        got = self.values.get(key)
        if got is not None and got[2] is not None and self.clock() >= got[2]:
            del self.values[key]
            return None
        return got

    async def load(self, key: str, seal: bool = False) -> Loaded:
        self._check()
        ctr = self.counters.get(key, 0)
        got = self._get(key)
        if got is None:
            return Loaded(None, 0, ctr, None)
        ver, val, exp = got
        if seal and ver < ctr:
            ctr = ver = self.counters[key] = ctr + 1
            self.values[key] = (ver, val, exp)
        ttl = None if exp is None else max(1, int((exp - self.clock()) * 1000))
        return Loaded(val, ver, ctr, ttl)

    async def reserve(self, key: str) -> int:
        self._check()
        self.counters[key] = self.counters.get(key, 0) + 1
        return self.counters[key]

    async def write(self, key: str, expect: int, newver: int, value: bytes | None,
                    ttl_ms: int | None) -> tuple[int, bool]:
        self._check()
        if self.counters.get(key, 0) != expect:
            return 0, False
        self.counters[key] = newver
        existed = self._get(key) is not None
        if value is None:
            self.values.pop(key, None)
        else:
            exp = self.clock() + ttl_ms / 1000 if ttl_ms else None
            self.values[key] = (newver, bytes(value), exp)
        return newver, existed

    async def ping(self) -> bool:
        return self.available

    async def close(self) -> None:
        pass


def make_backend(url: str | None) -> Backend:
    """`redis://...` / `rediss://...` / `unix://...`: Redis; `embedded://host:port`: the
    store `distsync up` serves when there is no redis-server (embedded.py); `memory://` or
    nothing: a store inside this process (one node only: other nodes cannot see it)."""
    if url and url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisBackend(url)
    if url and url.startswith("embedded://"):
        from .embedded import EmbeddedBackend

        return EmbeddedBackend(url)
    if url and url != "memory://":
        raise ValueError(f"unsupported backend URL {url!r} (redis://host:port/db or memory://)")
    log.warning("cache: no --redis-url; using an embedded in-process store (one node only)")
    return MemoryBackend()
