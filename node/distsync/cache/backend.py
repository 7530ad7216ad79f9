"""The backing store: a real Redis through redis-py asyncio, or an embedded in-memory store.

Operations issued concurrently go to Redis together, as one call of one Lua script per
event-loop turn (batching.py, _BATCH below): redis-py spends far more CPU per command than
Redis does, and one call pays the per-command part (a pooled connection, a socket write, a
reply to read with its timeout) once for the whole batch.

Each key has two Redis keys (three once written by a home) in one hash slot: `dsc:{k}:v` holds `b"<version>:" + value`
(with the key's TTL) and `dsc:{k}:c` is the key's version counter (no TTL, so versions only
grow, across deletes and expiry too). Every mutation is a Lua script, atomic in Redis:

- `put(value, conf)`: INCR the counter and store (or delete) the value stamped with it, in
  one step. The home writes every PUT that is not a silent upgrade this way (one round
  trip); moving the counter also fences any older owner's silent write still in flight (its
  compare below fails). `conf` is the Raft configuration index under which the writer is
  the key's home; a third key `dsc:{k}:h` keeps the highest one seen, and a put under an
  older configuration is refused (version 0): a former home cut off during a membership
  change cannot land a write after the new home has written or fenced the key.
- `reserve(conf)`: INCR the counter and raise `h` to `conf`: the fence the home sets before
  it loads a key whose owner (or former home) it had to revoke.
- `write(expect, newver, value)`: only if counter == expect: set counter = newver and store
  (or delete) the value stamped with newver. A silent E->M write by the owner uses
  expect = its line's version, newver = expect + 1.
- `load(seal)`: value, its version, the counter and the TTL left. With seal, a value whose
  version is below the counter (a reserved write that never completed) is re-stamped with a
  fresh counter value, so the abandoned writer can never land later and the value can be
  cached again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from hashlib import sha1
from typing import Protocol

from .batching import Batcher


class BackendUnavailable(Exception):
    """The backing store cannot be reached (a write may or may not have landed, unless
    `untouched`: refused before anything was changed)."""

    def __init__(self, message: str = "", untouched: bool = False):
        super().__init__(message)
        self.untouched = untouched


@dataclass(slots=True)
class Loaded:
    value: bytes | None  # None: absent
    version: int  # version stamped on the value (0 if absent)
    counter: int  # the key's version counter (>= version)
    ttl_ms: int | None  # None: no TTL


class Backend(Protocol):
    kind: str

    async def load(self, key: str, seal: bool = False) -> Loaded: ...

    async def reserve(self, key: str, conf: int = 0) -> int: ...

    async def put(self, key: str, value: bytes | None, ttl_ms: int | None,
                  conf: int = 0) -> tuple[int, bool]:
        """(new version, existed-before): the counter moved on and the value (None: deleted)
        stamped with it; (0, False) if a home under a newer configuration fenced the key."""

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
return store(KEYS[1], nv, ARGV[3], ARGV[4], ARGV[5])
"""

_PUT = """
local hc = tonumber(redis.call('GET', KEYS[3]) or '0')
local conf = tonumber(ARGV[4])
if hc > conf then return {0, 0} end
if conf > hc then redis.call('SET', KEYS[3], ARGV[4]) end
local nv = redis.call('INCR', KEYS[2])
return store(KEYS[1], nv, ARGV[1], ARGV[2], ARGV[3])
"""


_FENCE = """
local hc = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > hc then redis.call('SET', KEYS[3], ARGV[1]) end
return redis.call('INCR', KEYS[2])
"""


# Every command a node sends Redis in one event-loop turn goes as one call of this script:
# the operations above, applied in order (each one atomic, as it was as a script of its own).
# One reply to parse and one timeout per round trip, not one per operation: redis-py spends
# far more CPU per command than Redis does (a fifth of a coherent PUT's CPU at c=64 was
# redis-py reading pipelined replies one by one). ARGV holds, per operation, its name, its
# argument count and its arguments; KEYS holds its three keys (see _keys).
_OPS = (("load", _LOAD), ("write", _WRITE), ("put", _PUT), ("fence", _FENCE))
# Stores (op 'set') or deletes (op 'del') the value of key `k` stamped with version `nv`;
# returns {nv, existed-before}. Shared by write and put.
_STORE = """
local function store(k, nv, op, val, ttl)
  if op == 'del' then return {nv, redis.call('DEL', k)} end
  local existed = redis.call('EXISTS', k)
  local raw = string.format('%d', nv) .. ':' .. val
  if tonumber(ttl) > 0 then redis.call('SET', k, raw, 'PX', ttl)
  else redis.call('SET', k, raw) end
  return {nv, existed}
end
"""
_BATCH = _STORE + "local OPS = {}\n" + "".join(
    f"OPS['{name}'] = function(KEYS, ARGV)\n{body}\nend\n" for name, body in _OPS
) + """
local res, ai, ki = {}, 1, 1
while ai <= #ARGV do
  local op, na = ARGV[ai], tonumber(ARGV[ai + 1])
  local A = {}
  for j = 1, na do A[j] = ARGV[ai + 1 + j] end
  res[#res + 1] = OPS[op]({KEYS[ki], KEYS[ki + 1], KEYS[ki + 2]}, A)
  ai, ki = ai + 2 + na, ki + 3
end
return res
"""


def _keys(key: str) -> list[str]:
    return [f"dsc:{{{key}}}:v", f"dsc:{{{key}}}:c", f"dsc:{{{key}}}:h"]


class RedisBackend:
    kind = "redis"

    def __init__(self, url: str, timeout: float = 1.0, max_inflight: int = 4):
        import redis.asyncio as aioredis
        from redis import exceptions as rex
        from redis.asyncio.retry import Retry  # the asyncio one: redis-py warns at a sync Retry
        from redis.backoff import ExponentialBackoff

        self.url = url
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1), max_connections=256,
        )
        self._sha = sha1(_BATCH.encode()).hexdigest()
        self._noscript = rex.NoScriptError
        self._refused = rex.ResponseError
        self._down = (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, OSError,
                      asyncio.TimeoutError)
        self._batch: Batcher[tuple] = Batcher(self._pipeline, max_inflight=max_inflight)

    async def _pipeline(self, _group: object, ops: list[tuple]) -> list[object]:
        """One round trip for `ops` (one call of _BATCH); a script Redis does not know (first
        use, or a restarted or flushed Redis) is loaded and the call sent once more."""
        keys: list[str] = []
        argv: list[object] = []
        for name, op_keys, args in ops:
            keys += op_keys
            argv += [name, len(args), *args]
        try:
            try:
                out = await self._run(keys, argv)
            except self._noscript:
                await self.client.script_load(_BATCH)
                out = await self._run(keys, argv)
        except self._down as e:
            raise BackendUnavailable(f"redis at {self.url}: {e}") from None
        except self._refused as e:  # a Redis error fails the whole call: every op gets it
            return [e] * len(ops)
        return list(out)

    async def _run(self, keys: list[str], argv: list[object]) -> list[object]:
        return await self.client.execute_command(  # type: ignore[no-any-return]
            "EVALSHA", self._sha, len(keys), *keys, *argv
        )

    async def _script(self, name: str, keys: list[str], args: list[object]) -> object:
        res = await self._batch.submit((name, keys, args))
        if isinstance(res, Exception):
            raise res
        return res

    async def load(self, key: str, seal: bool = False) -> Loaded:
        ok, val, ver, ctr, pttl = await self._script(  # type: ignore[misc]
            "load", _keys(key), ["1" if seal else "0"]
        )
        if not ok:
            return Loaded(None, 0, int(ctr), None)
        return Loaded(bytes(val), int(ver), int(ctr), None if pttl < 0 else max(1, int(pttl)))

    async def reserve(self, key: str, conf: int = 0) -> int:
        return int(await self._script("fence", _keys(key), [conf]))  # type: ignore[call-overload]

    async def put(self, key: str, value: bytes | None, ttl_ms: int | None,
                  conf: int = 0) -> tuple[int, bool]:
        args = ["del" if value is None else "set", value or b"", ttl_ms or 0, conf]
        nv, existed = await self._script("put", _keys(key), args)  # type: ignore[misc]
        return int(nv), bool(existed)

    async def write(self, key: str, expect: int, newver: int, value: bytes | None,
                    ttl_ms: int | None) -> tuple[int, bool]:
        args = [expect, newver, "del" if value is None else "set", value or b"", ttl_ms or 0]
        nv, existed = await self._script("write", _keys(key), args)  # type: ignore[misc]
        return (int(nv), bool(existed)) if nv else (0, False)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except self._down:
            return False

    async def close(self) -> None:
        await self._batch.close()
        await self.client.aclose()


class MemoryBackend:
    """The same semantics in process memory: for unit tests, benchmarks of the protocol
    alone, and a single node without Redis. `available = False` simulates an outage."""

    kind = "memory"

    def __init__(self, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.clock = clock
        self.values: dict[str, tuple[int, bytes, float | None]] = {}
        self.counters: dict[str, int] = {}
        self.homes: dict[str, int] = {}  # key -> highest home configuration index seen
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

    async def reserve(self, key: str, conf: int = 0) -> int:
        self._check()
        self.homes[key] = max(self.homes.get(key, 0), conf)
        self.counters[key] = self.counters.get(key, 0) + 1
        return self.counters[key]

    async def put(self, key: str, value: bytes | None, ttl_ms: int | None,
                  conf: int = 0) -> tuple[int, bool]:
        self._check()
        if self.homes.get(key, 0) > conf:
            return 0, False
        self.homes[key] = conf
        nv = self.counters.get(key, 0) + 1
        return self._store(key, nv, value, ttl_ms)

    async def write(self, key: str, expect: int, newver: int, value: bytes | None,
                    ttl_ms: int | None) -> tuple[int, bool]:
        self._check()
        if self.counters.get(key, 0) != expect:
            return 0, False
        return self._store(key, newver, value, ttl_ms)

    def _store(self, key: str, newver: int, value: bytes | None,
                     ttl_ms: int | None) -> tuple[int, bool]:
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
