"""How the cache sees the cluster: its own id, the current Raft members, the applied
configuration (a new ring whenever it changes), and a way to prove that configuration is
still current (a home must, before it serves its own lines: see service.py)."""

from __future__ import annotations

from typing import Any, Protocol


class ClusterView(Protocol):
    id: str

    def members(self) -> frozenset[str]: ...

    def conf_token(self) -> object: ...

    def conf_index(self) -> int: ...

    async def wait_conf(self, index: int, timeout: float) -> bool: ...

    def leader(self) -> str | None: ...

    def applied_index(self) -> int: ...

    async def wait_applied(self, index: int, timeout: float) -> bool: ...

    async def read_index(self, timeout: float) -> int | None:
        """On the leader: an index that covers everything committed before the call, once
        applied here (ReadIndex); None when this node cannot give one (not the leader)."""
        ...


class NodeView:
    """The Raft node as the cache sees it: membership and its applied configuration."""

    def __init__(self, node: Any):
        self.node = node
        self.id = node.id

    def members(self) -> frozenset[str]:
        return frozenset(self.node.conf.members())

    def conf_token(self) -> object:
        return self.node.conf

    def conf_index(self) -> int:
        return self.node.conf_index

    async def wait_conf(self, index: int, timeout: float) -> bool:
        return await self.node.wait_until(lambda: self.node.conf_index >= index, timeout)

    def leader(self) -> str | None:
        return self.node.leader_id

    def applied_index(self) -> int:
        return self.node.applied_index

    async def wait_applied(self, index: int, timeout: float) -> bool:
        return await self.node.wait_until(lambda: self.node.applied_index >= index, timeout)

    async def read_index(self, timeout: float) -> int | None:
        if not self.node.is_leader():
            return None
        try:
            await self.node.read_barrier(timeout)
        except Exception:  # noqa: BLE001 - unavailable, stopped, deposed: no index
            return None
        return self.node.applied_index
