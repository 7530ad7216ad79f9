"""How the cache sees the cluster: its own id, the current Raft members, and the applied
configuration (a new ring whenever it changes)."""

from __future__ import annotations

from typing import Any, Protocol


class ClusterView(Protocol):
    id: str

    def members(self) -> frozenset[str]: ...

    def conf_token(self) -> object: ...

    def conf_index(self) -> int: ...

    async def wait_conf(self, index: int, timeout: float) -> bool: ...


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
