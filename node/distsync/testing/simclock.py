"""A node's clock in the simulator: its own rate (slow timers: its clock runs ahead of
the loop's, so a timer it sets for d seconds of its time fires after more than d of its own
time has passed), its own offset (skew between nodes), and wall-clock jumps (an NTP step,
forward or back) that the leader's expiry commands see."""

from __future__ import annotations

import asyncio


class SimClock:
    def __init__(self, loop: asyncio.AbstractEventLoop, offset: float = 0.0,
                 rate: float = 1.0, wall_offset_ms: int = 1_700_000_000_000) -> None:
        if rate < 1.0:
            # A clock slower than the loop's would wake its owner before its own deadline
            # again and again (the driver re-waits for the remainder); real timers only fire
            # late, never early.
            raise ValueError("rate must be >= 1.0")
        self._loop = loop
        self.offset = offset
        self.rate = rate
        self.wall_offset_ms = wall_offset_ms

    def monotonic(self) -> float:
        return self.offset + self._loop.time() * self.rate

    def wall_ms(self) -> int:
        return self.wall_offset_ms + int(self._loop.time() * self.rate * 1000)

    def jump_wall(self, delta_ms: int) -> None:
        """Step the wall clock (monotonic time is unaffected, as on a real machine)."""
        self.wall_offset_ms += delta_ms
