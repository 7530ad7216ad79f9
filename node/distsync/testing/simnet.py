"""An in-memory network for the simulator: delay, reorder, drop, duplicate, and
partitions, symmetric or one-way.

Every message is encoded and decoded with the real codec on its way (nodes never share
objects, and whatever the codec cannot carry fails here as it would on the wire). Delays
are drawn per message, so messages overtake each other (reorder); a link cut when a message
is sent or when it arrives drops it (a partition); `cut(a, b)` alone is one-way.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..raft.codec import decode_messages, encode_messages
from ..raft.types import Message, MsgType
from .simproc import PROCESS, Process

RETRANSMIT_S = 0.2  # TCP's minimum retransmission timeout (Linux)


@dataclass
class NetFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_min: float = 0.0002
    delay_max: float = 0.003
    slow: float = 0.0  # chance that a message is held up to `slow_max` (reordering it)
    slow_max: float = 0.3


class SimNetwork:
    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random,
                 faults: NetFaults, trace: Callable[[str], None]) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self.trace = trace
        self.receivers: dict[str, Callable[[Message], None]] = {}
        self.processes: dict[str, Process] = {}  # the receiver's process (simproc.py)
        self._wire = contextvars.Context()
        self._seq = 0  # send order, to count reordered deliveries
        self._last_seq: dict[tuple[str, str], int] = {}
        self.cut_links: set[tuple[str, str]] = set()
        self.sent = self.delivered = self.dropped = 0
        self.counts: collections.Counter[str] = collections.Counter()
        # Messages whose delivery a test wants to hold back or inspect (see sim.py's plant).
        self.filter: Callable[[Message], bool] | None = None

    def attach(self, node_id: str, receive: Callable[[Message], None]) -> None:
        """Called from inside the node's process: its deliveries wait out its pauses."""
        self.receivers[node_id] = receive
        proc = PROCESS.get()
        if proc is not None:
            self.processes[node_id] = proc

    def detach(self, node_id: str) -> None:
        self.receivers.pop(node_id, None)
        self.processes.pop(node_id, None)

    def cut(self, a: str, b: str) -> None:
        self.cut_links.add((a, b))

    def heal(self) -> None:
        self.cut_links.clear()

    def isolate(self, node: str, others: list[str], one_way: bool = False) -> None:
        for o in others:
            if o != node:
                self.cut(node, o)
                if not one_way:
                    self.cut(o, node)

    def rpc_delay(self, a: str, b: str) -> float | None:
        """The delay of one request or reply from a to b (the cache's RPCs, simcache.py),
        or None if it is lost: a cut link or a drop; a slow one is held up as `send` holds
        a message up."""
        f = self.faults
        if (a, b) in self.cut_links or self.rng.random() < f.drop:
            return None
        if f.slow and self.rng.random() < f.slow:
            return self.rng.uniform(f.delay_max, f.slow_max)
        return self.rng.uniform(f.delay_min, f.delay_max)

    def stream_delay(self, a: str, b: str) -> float | None:
        """The delay of one request or reply from a to b on a TCP connection (a follower's
        forward to the leader): a dropped packet is sent again after a retransmission
        timeout rather than lost, but across a cut link nothing arrives (the connection
        times out): None."""
        if (a, b) in self.cut_links:
            return None
        f, late = self.faults, 0.0
        while self.rng.random() < f.drop:
            late += RETRANSMIT_S
        if f.slow and self.rng.random() < f.slow:
            return late + self.rng.uniform(f.delay_max, f.slow_max)
        return late + self.rng.uniform(f.delay_min, f.delay_max)

    def send(self, msgs: list[Message]) -> None:
        f, rng = self.faults, self.rng
        for m in msgs:
            self.sent += 1
            if (m.src, m.dst) in self.cut_links:
                self.counts["net.partitioned"] += 1
                continue
            if rng.random() < f.drop:
                self.counts["net.dropped"] += 1
                continue
            if m.type == MsgType.SNAPSHOT:
                self.counts["raft.install_snapshot"] += 1
            data = encode_messages([m])
            copies = 2 if rng.random() < f.duplicate else 1
            if copies == 2:
                self.counts["net.duplicated"] += 1
            for _ in range(copies):
                delay = rng.uniform(f.delay_min, f.delay_max)
                if f.slow and rng.random() < f.slow:
                    delay = rng.uniform(f.delay_max, f.slow_max)
                    self.counts["net.delayed"] += 1
                # In nobody's process: a packet on the wire outlives its sender.
                self._seq += 1
                self.loop.call_later(delay, self._arrive, data, self._seq, context=self._wire)

    def _arrive(self, data: bytes, seq: int) -> None:
        (m,) = decode_messages(data)
        recv = self.receivers.get(m.dst)
        proc = self.processes.get(m.dst)
        if proc is not None and proc.paused():
            # The receiver is stopped: the packet waits in its socket buffer.
            self.loop.call_at(proc.paused_until, self._arrive, data, seq, context=self._wire)
            return
        if recv is None or (m.src, m.dst) in self.cut_links:
            self.counts["net.partitioned"] += 1
            return
        if self.filter is not None and not self.filter(m):
            self.dropped += 1
            return
        self.delivered += 1
        link = (m.src, m.dst)
        if seq < self._last_seq.get(link, 0):
            self.counts["net.reordered"] += 1  # overtaken by a later message on its link
        else:
            self._last_seq[link] = seq
        recv(m)


class SimTransport:
    """A node's PeerTransport on a SimNetwork."""

    def __init__(self, net: SimNetwork, node_id: str,
                 receive: Callable[[Message], None]) -> None:
        self.net = net
        self.id = node_id
        self.receive = receive

    async def start(self) -> None:
        self.net.attach(self.id, self.receive)

    async def close(self) -> None:
        self.net.detach(self.id)

    def send(self, msgs: list[Message]) -> None:
        if self.net.receivers.get(self.id) is self.receive:  # a crashed node sends nothing
            self.net.send(msgs)

    def learned_address(self, peer_id: str) -> str | None:
        return None

    def add_routes(self, app: object) -> None:
        """The real transport mounts its Raft stream on the API app (api/app.py calls this);
        here the Raft messages go over the SimNetwork, so there is nothing to mount."""
