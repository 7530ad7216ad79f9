"""How cache messages travel: HTTP between node processes, direct calls inside one process.

`call` returns the reply map or raises PeerUnreachable; a reply carrying `err` is turned back
into the exception the remote handler raised (see `raise_for`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .backend import BackendUnavailable
from .protocol import HomeUnavailable, NotHome, PeerUnreachable, decode, encode

Dispatch = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
PATH = "/v1/internal/cache/"


async def dispatch_safe(dispatch: Dispatch, op: str, msg: dict[str, Any]) -> dict[str, Any]:
    """Run a handler and turn the protocol's exceptions into an `err` reply."""
    try:
        return await dispatch(op, msg)
    except NotHome as e:
        return {"err": "not_home", "key": e.key, "home": e.home}
    except BackendUnavailable as e:
        return {"err": "backend_unavailable", "message": str(e), "untouched": e.untouched}
    except HomeUnavailable as e:
        return {"err": "home_unavailable", "key": e.key, "home": e.home}
    except PeerUnreachable as e:
        return {"err": "unreachable", "message": str(e)}


def raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    err = reply.get("err")
    if err is None:
        return reply
    if err == "not_home":
        raise NotHome(reply.get("key", ""), reply.get("home"))
    if err == "backend_unavailable":
        raise BackendUnavailable(reply.get("message", "backend unavailable at the peer"),
                                 bool(reply.get("untouched")))
    if err == "home_unavailable":
        raise HomeUnavailable(reply.get("key", ""), reply.get("home", "?"))
    raise PeerUnreachable(f"peer answered {err}: {reply.get('message', '')}")


class HttpPeers:
    """One pooled aiohttp session for all cache traffic of a node (keep-alive connections:
    no connection setup per message).

    Messages are not batched per peer here: coalescing those issued in one loop turn found
    one message per request even at c=64 (concurrent PUTs rarely meet in one turn), and
    holding messages back while a request to the peer is out deadlocks: A's PUTX waits at
    H for an invalidation of A queued behind H's own PUTX to A, which waits for A. What is
    batched is what meets: invalidations per holder (home.py) and Redis commands."""

    def __init__(self, addr_of: Callable[[str], str | None], timeout: float = 1.0,
                 ssl: Any = None, headers_for: Callable[[str], dict[str, str]] | None = None):
        self.addr_of = addr_of
        self.timeout = timeout
        self.ssl = ssl  # a client SSLContext when the cluster runs TLS
        self.scheme = "https" if ssl else "http"
        self.headers_for = headers_for  # peer authentication (signed per target)
        self._session: aiohttp.ClientSession | None = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(
                    use_dns_cache=False, limit=256, ssl=self.ssl or True
                ),
            )
        return self._session

    async def call(self, node: str, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        addr = self.addr_of(node)
        if addr is None:
            raise PeerUnreachable(f"no address for {node}")
        headers = {"Content-Type": "application/msgpack"}
        if self.headers_for is not None:
            headers.update(self.headers_for(node))
        try:
            async with self._sess().post(
                f"{self.scheme}://{addr}{PATH}{op}", data=encode(msg), headers=headers
            ) as r:
                body = await r.read()
                if r.status != 200:
                    raise PeerUnreachable(f"{node} answered HTTP {r.status}")
                return raise_for(decode(body))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise PeerUnreachable(f"{node} at {addr}: {e!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class LocalPeers:
    """Services in one process calling each other directly; `down` holds unreachable ids
    (a crashed or partitioned node), for tests. `roundtrip` passes every message through
    msgpack, as the wire would."""

    def __init__(self, roundtrip: bool = True):
        self.nodes: dict[str, Dispatch] = {}
        self.down: set[str] = set()
        self.roundtrip = roundtrip
        self.sent: list[tuple[str, str, str]] = []  # (src, dst, op), for tests
        self.record = False

    def add(self, node: str, dispatch: Dispatch) -> None:
        self.nodes[node] = dispatch

    async def call(self, node: str, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        if self.record:
            self.sent.append((str(msg.get("src")), node, op))
        if node in self.down or msg.get("src") in self.down or node not in self.nodes:
            raise PeerUnreachable(f"{node} is down")
        if self.roundtrip:
            msg = decode(encode(msg))
        reply = await dispatch_safe(self.nodes[node], op, msg)
        if self.roundtrip:
            reply = decode(encode(reply))
        return raise_for(reply)

    async def close(self) -> None:
        pass
