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

    async def confirm(self, timeout: float) -> bool:
        """True once everything committed before the call is applied here, so a removal of
        this node committed before it would show in `members()` now."""
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

    async def confirm(self, timeout: float) -> bool:
        # A ReadIndex round: a node that was removed, or cannot reach a leader, never gets
        # through it (nobody sends a removed node the entries up to the read index).
        try:
            await self.node.read_barrier(timeout)
        except Exception:  # noqa: BLE001 - unavailable, stopped, not a member: not proved
            return False
        return True
