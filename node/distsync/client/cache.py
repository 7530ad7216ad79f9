"""Client side of the coherent cache: `client.cache.get/set/delete`, asyncio and blocking.

```python
async with Client(addrs) as c:
    await c.cache.set("user:1001", b'{"name": "alice"}', ttl=300)
    value = await c.cache.get("user:1001")            # bytes, or None if absent
    item = await c.cache.get_item("user:1001")        # value, version, hit, state
    await c.cache.delete("user:1001")

with BlockingClient(addrs) as c:
    c.cache.set("k", b"v"); c.cache.get("k")
```

Any node serves any key (a hit is answered from that node's memory), so the client sticks to
one node, its first seed, to keep its near cache warm, and moves to the next seed only when
that node cannot be reached. 503 answers other than `backend_unavailable` (the key's home is
unreachable, a write lost a race, the ring is changing) are retried until the client's
timeout; `backend_unavailable` is raised at once as `BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import aiohttp

from .blocking import blocking_attr
from .errors import (
    CompareFailed,
    DistSyncError,
    InvalidArgument,
    Unavailable,
    error_from_answer,
)
from .locks import check_seconds

if TYPE_CHECKING:
    from .core import BlockingClient, Client


Codec = Literal["utf-8", "json"]
CODECS: tuple[str, ...] = ("utf-8", "json")


CACHE_KEY_RE = re.compile(r"^[A-Za-z0-9._\-:@]{1,512}$")  # as api/cache.py checks


class InvalidCacheKey(InvalidArgument):
    """A cache key the API would refuse (raised before any request)."""


class CacheCodecError(InvalidArgument):
    """An unknown codec name (raised before any request)."""


def check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise CacheCodecError("invalid_codec", f"codec must be one of {CODECS}, not {codec!r}")


def encode_value(value: Any, codec: str | None) -> bytes:
    """The bytes a value is stored as: bytes-like as is, str as UTF-8, and with
    codec="json" anything json.dumps takes. Anything else would be guessed at (bytes(5) is
    five zero bytes), so it is a TypeError."""
    if codec is not None:
        check_codec(codec)
        if codec == "json":
            try:
                return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False).encode()
            except (TypeError, ValueError) as e:
                raise TypeError(f"value is not JSON-serializable: {e}") from None
        if not isinstance(value, str):
            raise TypeError(f"codec='utf-8' takes a str, not {type(value).__name__}")
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(
        f"cache values are bytes or str; got {type(value).__name__} (pass codec='json' to "
        f"store it as JSON)")


def decode_value(data: bytes, codec: str) -> Any:
    return data.decode() if codec == "utf-8" else json.loads(data)


class CacheFillTimeout(DistSyncError, TimeoutError):
    """get_or_set waited `wait` seconds for another caller's load."""


class VersionMismatch(CompareFailed):
    """`set(..., if_version=n)` found another version (`version`): nothing was written."""

    @property
    def version(self) -> int:
        return int(self.body.get("version", 0))


class BackendUnavailable(Unavailable):
    """The cache's Redis backend is down: writes fail, nothing was changed or cached."""


@dataclass(frozen=True)
class CacheItem:
    key: str
    value: bytes
    version: int
    hit: bool  # served from the answering node's near cache
    state: str  # that node's line state after the read (M, E, S or I)
    node_addr: str


class CacheClient:
    def __init__(self, client: Client):
        self.c = client
        self._seed = 0

    def _addr(self, node: str | None) -> str:
        return node or self.c.seeds[self._seed % len(self.c.seeds)]

    async def _req(self, method: str, path: str, *, data: bytes | None = None,
                   params: dict[str, str] | None = None, node: str | None = None,
                   content_type: str | None = None,
                   ) -> tuple[int, dict[str, str], bytes, str]:
        started = time.monotonic()
        deadline = started + self.c.timeout
        delay = 0.02
        headers = self.c._auth_headers()
        if content_type is not None:
            headers = {**headers, "Content-Type": content_type}
        while True:
            addr = self._addr(node)
            try:
                async with self.c._sess().request(
                    method, f"{self.c.scheme}://{addr}{path}", data=data, params=params,
                    headers=headers,
                ) as r:
                    self.c.answered_once = True
                    body = await r.read()
                    if r.status < 400:
                        return r.status, dict(r.headers), body, addr
                    try:
                        info = await r.json(content_type=None)
                    except ValueError:
                        info = {"error": "bad_response", "message": body[:200].decode(
                            errors="replace")}
                    if r.status == 404 and info.get("error") == "not_found" and method == "GET":
                        return 404, dict(r.headers), b"", addr
                    if info.get("error") == "backend_unavailable":
                        raise BackendUnavailable(r.status, info["error"],
                                                 info.get("message", ""), info)
                    err = error_from_answer(r.status, info)
                    if r.status != 503 or time.monotonic() > deadline:
                        raise err
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                if node is None:
                    self._seed += 1
                self.c.check_first_contact(started, e)
                if time.monotonic() > deadline:
                    raise Unavailable(503, "unreachable", f"{addr}: {e!r}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    @staticmethod
    def _path(key: str) -> str:
        if not isinstance(key, str) or not CACHE_KEY_RE.fullmatch(key):
            raise InvalidCacheKey("invalid_key", "cache keys are 1-512 characters of A-Z a-z "
                                                 f"0-9 . _ - : @, not {key!r}")
        return f"/v1/cache/{quote(key, safe='')}"

    async def get_item(self, key: str, node: str | None = None) -> CacheItem | None:
        status, h, body, addr = await self._req("GET", self._path(key), node=node)
        if status == 404:
            return None
        return CacheItem(key, body, int(h.get("X-Cache-Version", "0")),
                         h.get("X-Cache") == "hit", h.get("X-Cache-State", "I"), addr)

    @overload
    async def get(self, key: str, default: bytes | None = None, node: str | None = None,
                  ) -> bytes | None: ...

    @overload
    async def get(self, key: str, default: Any = None, node: str | None = None, *,
                  codec: Codec) -> Any: ...

    async def get(self, key: str, default: Any = None, node: str | None = None, *,
                  codec: Codec | None = None) -> Any:
        """The value as bytes (or decoded with `codec`: "utf-8" gives str, "json" the
        document), or `default` if the key is absent."""
        if codec is not None:
            check_codec(codec)
        item = await self.get_item(key, node)
        if item is None:
            return default
        return item.value if codec is None else decode_value(item.value, codec)

    @overload
    async def set(self, key: str, value: Any, ttl: float | None = None,
                  node: str | None = None, *, codec: Codec | None = None,
                  nx: Literal[False] = False, if_version: int | None = None) -> int: ...

    @overload
    async def set(self, key: str, value: Any, ttl: float | None = None,
                  node: str | None = None, *, codec: Codec | None = None,
                  nx: Literal[True], if_version: None = None) -> int | None: ...

    async def set(self, key: str, value: Any, ttl: float | None = None,
                  node: str | None = None, *, codec: Codec | None = None, nx: bool = False,
                  if_version: int | None = None) -> int | None:
        """Store `value` with an optional TTL in seconds; returns the new version once every
        other copy is invalidated and the backend has it. `value` is bytes (stored as is) or
        str (stored UTF-8); with `codec="json"` any JSON-serializable value (stored as UTF-8
        JSON). Anything else is a TypeError, raised before any request.
        `nx=True`: only if the key is absent (else nothing is written and None is returned,
        as redis-py's `set(nx=True)` does). `if_version=n`: only if the key's version is
        still n (0: absent), else VersionMismatch (with the current `version`)."""
        data = encode_value(value, codec)
        if nx and if_version is not None:
            raise InvalidArgument("invalid_argument", "give nx or if_version, not both")
        if if_version is not None and (isinstance(if_version, bool)
                                       or not isinstance(if_version, int) or if_version < 0):
            raise InvalidArgument("invalid_argument",
                                  f"if_version must be an int >= 0, not {if_version!r}")
        params: dict[str, str] = {}
        if ttl is not None:
            params["ttl"] = repr(float(ttl))
        if nx:
            params["nx"] = "1"
        if if_version is not None:
            params["if_version"] = str(if_version)
        try:
            _, _, body, _ = await self._req("PUT", self._path(key), data=data,
                                            params=params or None, node=node)
        except DistSyncError as e:
            if e.code != "condition_failed":
                raise
            if nx:
                return None
            raise VersionMismatch(e.status, e.code, e.message, e.body) from None
        return int(_json(body)["version"])

    async def mget(self, keys: Iterable[str], node: str | None = None,
                   ) -> dict[str, bytes | None]:
        """Several keys at once (concurrent reads); absent keys map to None."""
        ks = list(keys)
        got = await asyncio.gather(*(self.get(k, node=node) for k in ks))
        return dict(zip(ks, got, strict=True))

    async def mset(self, items: Mapping[str, Any], ttl: float | None = None,
                   node: str | None = None, *, codec: Codec | None = None) -> dict[str, int]:
        """Several writes at once; returns each key's new version. Every value is checked
        (TypeError) before any request. Not atomic across keys: each write is its own."""
        data = {k: encode_value(v, codec) for k, v in items.items()}
        for k in data:
            self._path(k)  # every key checked before any request
        versions = await asyncio.gather(*(self.set(k, v, ttl, node) for k, v in data.items()))
        return dict(zip(data, versions, strict=True))

    async def get_or_set(self, key: str, loader: Callable[[], Any], ttl: float | None = None,
                         *, codec: Codec | None = None, wait: float | None = 30.0,
                         lease: float = 10.0) -> Any:
        """The cached value, or else `loader()`'s (a function or coroutine function), stored
        with `ttl` and returned as `get` would return it. Single flight at the key's home:
        on a miss the home gives one caller a fill lease of `lease` seconds (it runs the
        loader and writes the value) and has the others wait for that write, so one loader
        per key runs however many clients and nodes miss together. If the loader raises,
        its lease is given back and the next caller loads. CacheFillTimeout (a
        TimeoutError) after `wait` seconds of waiting for another caller's load."""
        path = self._path(key) + "/fill"
        check_seconds("wait", wait)
        check_seconds("lease", lease)
        ask = json.dumps({"lease_ms": max(1, int(lease * 1000))}).encode()
        deadline = None if wait is None else time.monotonic() + wait
        delay = 0.01
        while True:
            got = await self.get(key)
            if got is not None:
                return got if codec is None else decode_value(got, codec)
            _, h, body, _ = await self._req("POST", path, data=ask,
                                            content_type="application/json")
            if h.get("Content-Type", "").startswith("application/octet-stream"):
                return body if codec is None else decode_value(body, codec)
            rep = _json(body)
            if rep.get("fill") == "granted":
                return await self._load_and_set(key, path, rep["token"], loader, ttl, codec)
            if deadline is not None and time.monotonic() >= deadline:
                raise CacheFillTimeout(504, "fill_timeout", f"another caller's load of {key!r} "
                                       f"did not finish within {wait} s")
            retry = float(rep.get("retry_ms", 100)) / 1000
            await asyncio.sleep(min(delay, retry))
            delay = min(delay * 2, 0.2)

    async def _load_and_set(self, key: str, path: str, token: str, loader: Callable[[], Any],
                            ttl: float | None, codec: Codec | None) -> Any:
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
            data = encode_value(value, codec)
        except BaseException:
            cancel = json.dumps({"token": token, "cancel": True}).encode()
            with contextlib.suppress(DistSyncError):
                await self._req("POST", path, data=cancel, content_type="application/json")
            raise
        await self.set(key, data, ttl)
        return data if codec is None else decode_value(data, codec)

    async def delete(self, key: str, node: str | None = None) -> bool:
        _, _, body, _ = await self._req("DELETE", self._path(key), node=node)
        return bool(_json(body)["deleted"])

    async def state(self, key: str, node: str = "all", via: str | None = None) -> dict[str, Any]:
        """Line states of `key` (`node`: a member id, or "all" with the home's directory)."""
        _, _, body, _ = await self._req("GET", self._path(key) + "/state",
                                        params={"node": node}, node=via)
        return _json(body)

    async def stats(self, node: str | None = None) -> dict[str, Any]:
        _, _, body, _ = await self._req("GET", "/v1/cache", node=node)
        return _json(body)


def _json(body: bytes) -> dict[str, Any]:
    obj = json.loads(body)
    if not isinstance(obj, dict):
        raise DistSyncError(502, "bad_response", "expected a JSON object")
    return obj


class BlockingCache:
    """`CacheClient`'s methods for ordinary threads (runs them on the BlockingClient's loop)."""

    def __init__(self, bc: BlockingClient):
        self._bc = bc
        self._cache = CacheClient(bc._client)

    def __getattr__(self, name: str) -> Any:
        return blocking_attr(self._cache, name, self._bc._run)

    def get_item(self, key: str, node: str | None = None) -> CacheItem | None:
        return self._bc._run(self._cache.get_item(key, node))

    def get(self, key: str, default: Any = None, node: str | None = None, *,
            codec: Codec | None = None) -> Any:
        """bytes (or decoded with `codec`), or `default` if absent."""
        if codec is None:
            return self._bc._run(self._cache.get(key, default, node))
        return self._bc._run(self._cache.get(key, default, node, codec=codec))

    def set(self, key: str, value: Any, ttl: float | None = None, node: str | None = None,
            *, codec: Codec | None = None, nx: bool = False,
            if_version: int | None = None) -> int | None:
        """As CacheClient.set (None only for nx=True when the key exists)."""
        if nx:
            return self._bc._run(self._cache.set(key, value, ttl, node, codec=codec, nx=True))
        return self._bc._run(self._cache.set(key, value, ttl, node, codec=codec,
                                             if_version=if_version))

    def get_or_set(self, key: str, loader: Callable[[], Any], ttl: float | None = None, *,
                   codec: Codec | None = None, wait: float | None = 30.0,
                   lease: float = 10.0) -> Any:
        """As CacheClient.get_or_set; `loader` is a plain function here (run on the
        client's event loop thread, so keep it short or hand it a cached result)."""
        return self._bc._run(self._cache.get_or_set(key, loader, ttl, codec=codec, wait=wait,
                                                    lease=lease))

    def delete(self, key: str, node: str | None = None) -> bool:
        return self._bc._run(self._cache.delete(key, node))

    def mget(self, keys: Iterable[str], node: str | None = None) -> dict[str, bytes | None]:
        return self._bc._run(self._cache.mget(keys, node))

    def mset(self, items: Mapping[str, Any], ttl: float | None = None, node: str | None = None,
             *, codec: Codec | None = None) -> dict[str, int]:
        return self._bc._run(self._cache.mset(items, ttl, node, codec=codec))

    def state(self, key: str, node: str = "all", via: str | None = None) -> dict[str, Any]:
        return self._bc._run(self._cache.state(key, node, via))

    def stats(self, node: str | None = None) -> dict[str, Any]:
        return self._bc._run(self._cache.stats(node))

