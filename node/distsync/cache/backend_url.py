"""Which backing store a backend URL names (the node's `--redis-url`).

Apart from backend.py because the embedded store's client (embedded.py) is built on
backend.py's pieces: the choice among them sits above both, so neither imports the other
back.
"""

from __future__ import annotations

import logging

from .backend import Backend, MemoryBackend, RedisBackend
from .embedded import EmbeddedBackend

log = logging.getLogger("distsync.cache")


def make_backend(url: str | None) -> Backend:
    """`redis://...` / `rediss://...` / `unix://...`: Redis; `embedded://host:port`: the
    store `distsync up` serves when there is no redis-server (embedded.py); `memory://` or
    nothing: a store inside this process (one node only: other nodes cannot see it)."""
    if url and url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisBackend(url)
    if url and url.startswith("embedded://"):
        return EmbeddedBackend(url)
    if url and url != "memory://":
        raise ValueError(f"unsupported backend URL {url!r} (redis://host:port/db or memory://)")
    log.warning("cache: no --redis-url; using an embedded in-process store (one node only)")
    return MemoryBackend()
