"""Several cache services in one process over direct calls: the protocol without sockets,
for unit tests and for measuring the in-process path (benchmarks/cache_bench.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .backend import Backend, MemoryBackend
from .service import CacheConfig, CacheService
from .transport import LocalPeers


class _Conf:
    def __init__(self, members: frozenset[str], index: int):
        self.members, self.index = members, index


class StaticView:
    def __init__(self, node_id: str, cluster: InProcCluster):
        self.id = node_id
        self.cluster = cluster

    def members(self) -> frozenset[str]:
        return self.cluster.conf.members

    def conf_token(self) -> object:
        return self.cluster.conf

    def conf_index(self) -> int:
        return self.cluster.conf.index

    async def wait_conf(self, index: int, timeout: float) -> bool:
        return self.cluster.conf.index >= index

    # Membership changes reach every node at once here: every node is its own leader.
    def leader(self) -> str | None:
        return self.id

    def applied_index(self) -> int:
        return self.cluster.conf.index

    async def wait_applied(self, index: int, timeout: float) -> bool:
        return self.cluster.conf.index >= index

    async def read_index(self, timeout: float) -> int | None:
        return self.cluster.conf.index


class InProcCluster:
    def __init__(self, ids: list[str], backend: Backend | None = None,
                 cfg: CacheConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, roundtrip: bool = True):
        self.backend = backend or MemoryBackend(clock)
        self.cfg = cfg or CacheConfig()
        self.clock = clock
        self.conf = _Conf(frozenset(ids), 1)
        self.peers = LocalPeers(roundtrip=roundtrip)
        self.nodes: dict[str, CacheService] = {}
        for nid in ids:
            self.add(nid)

    def add(self, nid: str) -> CacheService:
        svc = CacheService(StaticView(nid, self), self.backend, self.peers, self.cfg,
                           clock=self.clock)
        self.nodes[nid] = svc
        self.peers.add(nid, svc.dispatch)
        return svc

    def set_members(self, ids: list[str]) -> None:
        """A membership change, applied at once on every node (as after the Raft entry)."""
        self.conf = _Conf(frozenset(ids), self.conf.index + 1)
        for nid in ids:
            if nid not in self.nodes:
                self.add(nid)

    def restart(self, nid: str) -> CacheService:
        """A crashed and restarted node: a new service, nothing remembered."""
        return self.add(nid)

    def __getitem__(self, nid: str) -> CacheService:
        return self.nodes[nid]

    def states(self, key: str) -> dict[str, str]:
        return {nid: s.near.state(key) for nid, s in self.nodes.items()}

    def home(self, key: str) -> str:
        return next(iter(self.nodes.values())).home_of(key)

    def key_homed_at(self, home: str, prefix: str = "k") -> str:
        for i in range(10_000):
            k = f"{prefix}{i}"
            if self.home(k) == home:
                return k
        raise LookupError(home)

    def info(self) -> dict[str, Any]:
        return {nid: s.stats() for nid, s in self.nodes.items()}
