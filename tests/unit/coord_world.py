"""A lock service with the semaphore and barrier services bound to it, as server.py's
node_services wires them, behind a real Registry: commands go in as encoded log entries at
increasing indexes, and snapshots go through the registry's msgpack bytes."""

from __future__ import annotations

from typing import Any

from distsync.services.barriers import BarrierService
from distsync.services.locks import LockService
from distsync.services.registry import Registry, encode_command
from distsync.services.semaphores import SemaphoreService


class World:
    def __init__(self) -> None:
        self.locks = LockService(clock=lambda: 0.0)
        self.sems = SemaphoreService()
        self.barriers = BarrierService()
        self.sems.bind(self.locks)
        self.barriers.bind(self.locks)
        self.reg = Registry([self.locks, self.sems, self.barriers])
        self.index = 0

    def do(self, service: str, op: str, **args: Any) -> Any:
        self.index += 1
        return self.reg.apply(encode_command(service, op, args, None), self.index)

    def open(self, ttl_ms: int = 10_000) -> str:
        sid: str = self.do("locks", "open", ttl_ms=ttl_ms)["session"]
        return sid

    def close(self, sid: str) -> Any:
        return self.do("locks", "close", session=sid)

    def expire(self, sid: str) -> Any:
        return self.do("locks", "expire", session=sid, idle_ms=10**9)

    def acquire(self, sid: str, name: str, permits: int, count: int = 1, wait_ms: int = 0,
                deadline_ms: int = 100) -> Any:
        return self.do("semaphores", "acquire", session=sid, semaphore=name, permits=permits,
                       count=count, wait_ms=wait_ms, deadline_ms=deadline_ms)

    def release(self, sid: str, name: str) -> Any:
        return self.do("semaphores", "release", session=sid, semaphore=name)

    def snapshot(self) -> bytes:
        return self.reg.snapshot()

    def restored(self) -> World:
        """A fresh world restored from this one's snapshot, at the same index."""
        w = World()
        w.reg.restore(self.snapshot(), self.index)
        w.index = self.index
        return w
