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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from .client import DistSyncError, Unavailable, _error, blocking_attr

if TYPE_CHECKING:
    from .client import BlockingClient, Client


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
                   ) -> tuple[int, dict[str, str], bytes, str]:
        deadline = time.monotonic() + self.c.timeout
        delay = 0.02
        headers = self.c._auth_headers()
        while True:
            addr = self._addr(node)
            try:
                async with self.c._sess().request(
                    method, f"{self.c.scheme}://{addr}{path}", data=data, params=params,
                    headers=headers,
                ) as r:
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
                    err = _error(r.status, info)
                    if r.status != 503 or time.monotonic() > deadline:
                        raise err
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                if node is None:
                    self._seed += 1
                if time.monotonic() > deadline:
                    raise Unavailable(503, "unreachable", f"{addr}: {e!r}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    @staticmethod
    def _path(key: str) -> str:
        return f"/v1/cache/{quote(key, safe='')}"

    async def get_item(self, key: str, node: str | None = None) -> CacheItem | None:
        status, h, body, addr = await self._req("GET", self._path(key), node=node)
        if status == 404:
            return None
        return CacheItem(key, body, int(h.get("X-Cache-Version", "0")),
                         h.get("X-Cache") == "hit", h.get("X-Cache-State", "I"), addr)

    async def get(self, key: str, default: bytes | None = None,
                  node: str | None = None) -> bytes | None:
        item = await self.get_item(key, node)
        return default if item is None else item.value

    async def set(self, key: str, value: bytes | str, ttl: float | None = None,
                  node: str | None = None) -> int:
        """Store `value` (str is UTF-8 encoded) with an optional TTL in seconds; returns the
        new version once every other copy is invalidated and the backend has it."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        params = {"ttl": repr(float(ttl))} if ttl is not None else None
        _, _, body, _ = await self._req("PUT", self._path(key), data=data, params=params,
                                        node=node)
        return int(_json(body)["version"])

    async def delete(self, key: str, node: str | None = None) -> bool:
        _, _, body, _ = await self._req("DELETE", self._path(key), node=node)
        return bool(_json(body)["deleted"])

    async def state(self, key: str, node: str = "all", via: str | None = None) -> dict[str, Any]:
        """Line states of `key` (`node`: a member id, or "all" with the home's directory)."""
        _, _, body, _ = await self._req("GET", self._path(key) + "/state",
                                        params={"node": node}, node=via)
        return _json(body)

    async def stats(self, node: str | None = None) -> dict[str, Any]:
        _, _, body, _ = await self._req("GET", "/v1/cache/stats", node=node)
        return _json(body)


def _json(body: bytes) -> dict[str, Any]:
    import json

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
