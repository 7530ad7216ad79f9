"""The small interfaces through which the driver (node.py) reaches the world.

The driver touches disk, network, time and threads only through these, so the code that
runs in production is the code the simulator runs: `realparts.py` gives the real
implementations (SQLite storage, websocket transport, the OS clock, worker threads), and
`testing/` gives in-memory ones with faults (see testing/sim.py). In the manner of
FoundationDB's simulator and hashicorp/raft's `LogStore`/`Transport`/`FSM` seams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .raft.core import Config
from .raft.types import Entry, HardState, Message, PersistedState, Snapshot

if TYPE_CHECKING:
    import ssl

    from .node import Node
    from .security.peer_auth import PeerAuthenticator


class LogStore(Protocol):
    """Durable Raft state. `save` and `compact` return only once what they wrote survives a
    crash; an exception from them means the store can no longer be trusted (the node stops)."""

    def load(self) -> PersistedState: ...

    def save(
        self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None
    ) -> None: ...

    def compact(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class PeerTransport(Protocol):
    """Best-effort delivery of Raft messages to peers: it may drop, delay, duplicate or
    reorder them, which Raft tolerates. Received messages go to the callback the node gave
    the factory that built it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def send(self, msgs: list[Message]) -> bool | None:
        """Queue `msgs`; True when all of them were written to their sockets before
        returning (the caller then need not yield to writer tasks for them to leave)."""

    def learned_address(self, peer_id: str) -> str | None: ...


class Clock(Protocol):
    """The node's time. `monotonic` paces ticks, deadlines and timers (seconds, on the same
    scale as the event loop's timers); `wall_ms` is the leader's notion of time handed to
    services in expiry commands (README: time-based behaviour is leader-proposed)."""

    def monotonic(self) -> float: ...

    def wall_ms(self) -> int: ...


class IORunner(Protocol):
    """Runs a blocking storage call off the event loop (a worker thread for real, a delay in
    virtual time in the simulator). `inline` says whether small saves may run on the loop
    itself (see Node._handle_ready)."""

    inline: bool

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def close(self) -> None: ...


@dataclass
class NodeParts:
    """Everything the driver needs from outside, handed in by a composition root
    (server.py for a real node, testing/sim.py for a simulated one)."""

    storage: LogStore
    # Builds the transport once the node exists (it needs the node's receive callback and
    # address book).
    transport: Callable[[Node], PeerTransport]
    clock: Clock
    rng: Any  # random.Random: election timeouts
    io: IORunner  # log saves
    snap_io: IORunner  # snapshot writes (a thread of their own, see Node._maybe_snapshot)
    # Called when the Raft loop dies (a storage error, a bug): the real node exits so that
    # its supervisor restarts it from disk; the simulator marks the node crashed.
    on_fatal: Callable[[BaseException | None], None]
    # TLS and peer authentication (README "Security"), from the node's config: the real
    # transport uses them, and so do the node's other HTTP calls and its listener. None in
    # an open cluster and in the simulator.
    ssl_server: ssl.SSLContext | None = None
    ssl_client: ssl.SSLContext | None = None
    peer_auth: PeerAuthenticator | None = None
    # The Raft core's tuning; None: the node's defaults (from its NodeConfig). The simulator
    # varies it per seed (flow control, pre-vote, check-quorum), as its old core-only
    # scheduler did.
    raft_config: Config | None = None
