"""Coherent near caches over a Redis backend: MESI lines per node, a directory per key at
its home node (chosen by the consistent-hash ring over the Raft members), write-through.

Modules: near.py (lines, LRU, TTL), directory.py (the home's knowledge), protocol.py (the
messages), home.py and service.py (the protocol's two sides), view.py (membership as the
cache sees it), backend.py (Redis, in-memory), embedded.py (the store `distsync up` serves
without Redis), backend_url.py (which of them a URL names), transport.py (HTTP between
nodes, direct calls in one process), metrics.py, inproc.py (several services in one
process: tests, benchmark), redis_proc.py (a local redis-server).
"""

from .backend import BackendUnavailable, MemoryBackend, RedisBackend
from .backend_url import make_backend
from .near import E, I, M, S
from .protocol import HomeUnavailable
from .service import CacheConfig, CacheService, Contention, Got
from .view import NodeView

__all__ = [
    "BackendUnavailable", "CacheConfig", "CacheService", "Contention", "E", "Got",
    "HomeUnavailable", "I", "M", "MemoryBackend", "NodeView", "RedisBackend", "S",
    "make_backend",
]
