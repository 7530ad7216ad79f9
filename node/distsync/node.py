"""The event loop that drives the pure Raft core with real time, disk and network.

One asyncio task owns the core. Everything that wants to touch it (peer messages, proposals,
reads, membership changes) is queued and handled between two Ready cycles, never during one.
A Ready cycle is: send the leader's pipelined messages, write everything to disk in ONE
transaction (one fsync for however many entries and proposals arrived meanwhile: group
commit), send the remaining messages, apply committed entries, advance. Proposals that arrive
during an fsync are batched into the next one, so throughput rises with load.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import NodeConfig
from .metrics import NodeMetrics
from .raft import conf as confmod
from .raft.core import Config, DivergentLog, NotLeader, ProposalDropped, Raft
from .raft.types import ConfState, EntryType, HardState, Message, MsgType, Ready, Role
from .seams import NodeParts
from .services.kv import KVStore
from .services.registry import Registry, encode_command

if TYPE_CHECKING:
    import ssl

    from .security.peer_auth import PeerAuthenticator
    from .starts import PeerStarts

__all__ = ["Node", "NodeConfig", "NoticeHold", "Unavailable"]

log = logging.getLogger("distsync.node")

# Messages only a leader sends; safe to put on the wire before the leader's own fsync,
# because the leader counts itself toward a commit only after its write is durable.
_EARLY = (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT, MsgType.TIMEOUT_NOW)


# Batches up to this many entries are written on the event loop itself (see _handle_ready).
INLINE_SAVE_ENTRIES = 4
# How long a commit notice is held back (see NoticeHold).
NOTICE_DELAY_S = 0.005


class NoticeHold:
    """Commit notices (appends without entries: they only move a follower's commit index)
    held back for `delay` seconds, the latest per peer, and dropped when an append with
    entries to that peer goes out first, since it carries the newer commit index.

    Under a steady stream of writes a notice is then never sent. At one request at a time,
    sending it at once cost each request about a millisecond on a 2-core machine: both
    followers woken to apply, then the leader woken by their acknowledgements, all competing
    with the client's next request for the CPUs (benchmarks/README.md, "Where a c=1 write's
    time goes"). Followers apply at most `delay` later (heartbeats carry the commit index
    too). Dropping a notice is safe in Raft: it is a lost message that a later one makes up
    for."""

    __slots__ = ("delay", "held", "due")

    def __init__(self, delay: float):
        self.delay = delay
        self.held: dict[str, Message] = {}
        self.due = 0.0

    def hold(self, notices: list[Message], now: float) -> None:
        if not self.held:
            self.due = now + self.delay
        for m in notices:
            self.held[m.dst] = m

    def sent(self, msgs: list[Message]) -> None:
        """`msgs` are going out now: their appends make held notices to the same peer moot."""
        if self.held:
            for m in msgs:
                if m.type == MsgType.APPEND:
                    self.held.pop(m.dst, None)

    def take_due(self, now: float, leading_term: int | None) -> list[Message]:
        """The notices due at `now`; with `leading_term` (None: we do not lead), only those
        of the term we lead now: a leader that stepped down drops the rest."""
        if not self.held or now < self.due:
            return []
        out, self.held = list(self.held.values()), {}
        return [m for m in out if m.term == leading_term]


class _Wake:
    """What asyncio.Event + wait_for(timeout) do for the Raft loop, without the task that
    wait_for creates per wait: the loop waits once per cycle, and that cost showed up as
    one of the larger items in the leader's profile."""

    def __init__(self) -> None:
        self._fut: asyncio.Future | None = None
        self._set = False

    def set(self) -> None:
        self._set = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        if self._set:
            return
        self._fut = fut = loop.create_future()
        timer = loop.call_later(timeout, self._expire, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._fut = None

    @staticmethod
    def _expire(fut: asyncio.Future) -> None:
        if not fut.done():
            fut.set_result(None)


# How often a leader asks LeaderDriven services for due commands (expiries, timeouts).
LEADER_TIMER_MS = 100


def _ignore_result(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()  # mark retrieved; a lost timer proposal is simply made again


def _must_sync(hs: HardState) -> tuple[Any, ...]:
    """The hard state's fields whose change must reach the disk before the Ready's messages
    leave: all but the commit index (see `_handle_ready`)."""
    return hs.term, hs.vote, hs.recovering, hs.finished, hs.heard, hs.heard_term


def _iso(wall_ms: int) -> str:
    return datetime.datetime.fromtimestamp(wall_ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class Unavailable(Exception):
    """No leader, or the request could not complete in time; safe to retry (with the same
    request id for writes)."""


class _Expired(Exception):
    """A request's deadline passed before the loop answered it."""


@dataclass
class _Waiter:
    term: int
    future: asyncio.Future
    started: float


class Node:
    """The driver. Everything it touches outside the core (disk, network, clock, threads)
    comes in `parts` (seams.py), and the replicated state machine as a whole (`registry`,
    its services including a KVStore named "kv") is handed in too: the composition root
    builds both (server.py: `build_node` for a real node; the simulator, testing/sim.py,
    from in-memory parts with faults, through the same `assemble_node`)."""

    def __init__(
        self, cfg: NodeConfig, *, parts: NodeParts, registry: Registry,
        metrics: NodeMetrics | None = None,
    ):
        self.cfg = cfg
        self.id = cfg.node_id
        self.metrics = metrics or NodeMetrics(cfg.node_id)
        self.registry = registry
        self.kv: KVStore = registry.services["kv"]  # type: ignore[assignment]
        self.parts = parts
        self.clock = parts.clock
        self.storage = parts.storage
        self._io = parts.io
        self._snap_io = parts.snap_io
        # TLS and peer authentication of this node's HTTP calls and listener (README
        # "Security"): None in an open cluster and in the simulator. Node-to-node HTTP calls
        # (/v1/internal/..., forwarding) sign with `peer_auth.request_headers(target)`.
        self.ssl_server: ssl.SSLContext | None = parts.ssl_server
        self.ssl_client: ssl.SSLContext | None = parts.ssl_client
        self.peer_auth: PeerAuthenticator | None = parts.peer_auth
        self._snap_task: asyncio.Task | None = None
        self._snap_done: Any = None  # a Snapshot written to disk, to compact the core to
        persisted = self.storage.load()
        hs0 = persisted.hard_state
        self._synced = _must_sync(hs0)
        self.core = Raft(
            self.id,
            persisted,
            parts.raft_config or Config(election_ticks=cfg.election_ticks, heartbeat_ticks=1),
            rng=parts.rng,
        )
        if persisted.snapshot is not None:
            self.registry.restore(persisted.snapshot.data, persisted.snapshot.meta.index)
        if self.core.is_empty() and not cfg.join:
            peers = dict(cfg.peers) or {self.id: cfg.address}
            peers.setdefault(self.id, cfg.address)
            # An empty data dir may be a new cluster or a replaced disk: the core asks its
            # founding peers before it votes (README "Replacing a disk").
            self.core.bootstrap(peers, discover=True)
        elif self.core.is_empty():
            self.core.recover_empty()
        self._fault_since: int | None = None
        self._told_conflict: bytes | None = None  # the core's cluster_id_conflict, logged
        self._seen_recovery: tuple[str, bool, bool] | None = None
        self._note_recovery()
        # Start chains (starts.py), set by the real transport's factory; None in simulation.
        self.start_chains: PeerStarts | None = None
        self.transport = parts.transport(self)
        self._inbox: list[Message] = []
        # Operations for the loop to run, each with its caller's future (stop() fails those).
        self._ops: list[tuple[Callable[[], None], asyncio.Future]] = []
        self._wake = _Wake()
        self._task: asyncio.Task | None = None
        self._waiters: dict[int, _Waiter] = {}
        self._props: list[tuple[bytes, asyncio.Future, float]] = []
        self._read_q: list[asyncio.Future] = []
        self._reads: dict[bytes, list[asyncio.Future]] = {}
        self._read_waits: list[tuple[int, asyncio.Future]] = []
        self._apply_watch: list[asyncio.Future] = []  # woken after the next apply/Ready
        self._ctx = itertools.count(1)
        self._seq = itertools.count()
        # (deadline, seq, future) of every pending proposal and read; see _expire_after.
        self._deadlines: list[tuple[float, int, asyncio.Future]] = []
        self._proposal_ok = self.metrics.proposals.labels("ok")
        self._read_ok = self.metrics.reads.labels("ok")
        self._next_timer = 0.0
        self._tick_s = cfg.tick_ms / 1000
        self._next_tick = 0.0  # set when the loop starts
        self._timer_term = -1
        self._hb_sent: dict[str, float] = {}  # peer -> send time of the latest heartbeat
        self._notices = NoticeHold(NOTICE_DELAY_S)
        self._closing = False
        # The soft state last seen, to notice leader changes and a lost leadership.
        self._seen_leader: str | None = None
        self._seen_role = Role.FOLLOWER
        # The Raft gauges are read when scraped rather than set after every Ready: seven
        # gauge writes per Ready were a visible share of every node's CPU per request.
        m = self.metrics
        m.term.set_function(lambda: self.core.term)
        m.is_leader.set_function(lambda: 1 if self.core.role == Role.LEADER else 0)
        m.commit_index.set_function(lambda: self.core.log.committed)
        m.applied_index.set_function(lambda: self.core.log.applied)
        m.last_index.set_function(lambda: self.core.log.last_index())
        m.snapshot_index.set_function(lambda: self.core.log.snap.index)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start()
        self._task = asyncio.create_task(self._run(), name=f"raft-{self.id}")
        self._task.add_done_callback(self._on_loop_exit)

    def _on_loop_exit(self, task: asyncio.Task) -> None:
        """Fail fast: a node whose Raft loop died (a storage error, a bug) must not linger
        answering health checks; exiting lets the supervisor restart it from its disk."""
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        if isinstance(exc, DivergentLog):  # says all there is to say; no traceback
            log.critical("%s", exc)
        else:
            log.critical("%s: raft loop died: %r; exiting", self.id, exc, exc_info=exc)
        self.parts.on_fatal(exc)

    async def stop(self) -> None:
        self._closing = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        # Everything still queued for the loop is answered now: the loop that would have
        # taken it in, or swept its deadline, is gone, and the HTTP server's graceful
        # shutdown (after this) would wait out its 60 s timeout on every such handler.
        gone = Unavailable("node shutting down")
        queued = [f for _, f, _ in self._props] + self._read_q + [f for _, f in self._ops]
        queued += [f for _, _, f in self._deadlines]
        self._props, self._read_q, self._ops = [], [], []
        self._deadlines.clear()
        for fut in queued:
            if not fut.done():
                fut.set_exception(gone)
        self._fail_all(gone)
        self._wake_watchers()  # long polls see _closing now, not after their next timeout
        await self.transport.close()
        if self._snap_task is not None:
            await asyncio.wait([self._snap_task])
        self._io.close()
        self._snap_io.close()
        self.storage.close()

    # -- queries: a read-only view of the Raft state (the API and the cache use these, ---
    # -- never the core itself) -----------------------------------------------------------

    @property
    def leader_id(self) -> str | None:
        """The leader this node knows of, or None."""
        return self.core.leader

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def conf(self) -> ConfState:
        """The applied membership (immutable: a new value at every change, so its identity
        tells a reader whether it changed)."""
        return self.core.conf

    @property
    def conf_index(self) -> int:
        """The log index of the applied membership."""
        return self.core.conf_index

    @property
    def applied_index(self) -> int:
        """The last log index applied to the services here."""
        return self.core.log.applied


    def addr_of(self, node_id: str | None) -> str | None:
        if node_id is None:
            return None
        if node_id == self.id:
            return self.cfg.address
        return self.core.conf.addr_map().get(node_id) or self.cfg.peers.get(node_id)

    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    def status(self) -> dict[str, Any]:
        st = self.core.status()
        addrs = self.core.conf.addr_map()
        members = [
            {"id": m, "addr": addrs.get(m, ""), "voter": m in self.core.conf.voters}
            for m in sorted(self.core.conf.members())
        ]
        st.update(
            {
                "addr": self.cfg.address,
                "leader_addr": self.addr_of(self.core.leader),
                "members": members,
                "ready": self.is_ready(),
                "storage_fault": self.storage_fault(),
                **({"start_refusals": self.start_chains.status()}
                   if self.start_chains is not None else {}),
                **self.registry.quota.status(),
            }
        )
        if self.core.leader is None and self.core.recovering_peers:
            st["no_leader_reason"] = (
                f"{', '.join(sorted(self.core.recovering_peers))} refused to vote: recovering "
                "from a storage fault until a leader repairs them (or, on an empty data "
                "directory, still asking whether the cluster is new); a leader needs a "
                "majority of voters with intact disks"
            )
        return st

    def storage_fault(self) -> dict[str, Any] | None:
        """The storage fault this node is recovering from (README "Storage faults"), or
        None: what it lost, since when, and how far a leader has repaired it."""
        r = self.core.recovery
        if r is None:
            return None
        return {
            "kind": r.kind,
            "detail": r.detail,
            "since": _iso(self._fault_since or 0),
            "durable_index": r.durable_index,
            "repaired_up_to": self.core.log.stable,
            "repair_point": r.repair_point or None,
            "discovering": r.discovering,
        }

    def _note_recovery(self) -> None:
        """Log each change of the recovery state, once, and keep the metric in step."""
        r = self.core.recovery
        now = (r.kind, r.discovering, r.announcing) if r is not None else None
        if now == self._seen_recovery:
            return
        before, self._seen_recovery = self._seen_recovery, now
        self.metrics.set_storage_fault(r.kind if r is not None else None)
        if r is not None:
            if before is None:
                self._fault_since = self.clock.wall_ms()
            if r.discovering:
                log.info("%s: %s; not voting until they answer", self.id, r.detail)
            else:
                log.warning("%s: storage fault %s: %s; not voting, campaigning or counting "
                            "towards commits until a leader repairs it", self.id, r.kind,
                            r.detail)
        elif before is not None and before[1] and self.core.repaired is None:
            log.info("%s: every peer asked holds only the founding entries: a new cluster",
                     self.id)
        else:
            rep = self.core.repaired
            log.warning("%s: repaired from storage fault %s: holds the leader's log up to its "
                        "repair point %s; voting again", self.id, before and before[0],
                        rep[1] if rep else "?")
            self._fault_since = None

    def is_ready(self) -> bool:
        """Has a leader, is a member, and has applied everything it knows to be committed;
        a leader also has its configured quotas in force (it puts them into the log within
        a timer tick of its election, services/quotas.py), so that a cluster reported ready
        enforces the limits it was started with."""
        c = self.core
        return (
            c.leader is not None
            and c.recovery is None
            and self.id in c.conf.members()
            and c.log.applied >= c.log.committed
            and not (c.role == Role.LEADER and self.registry.quota.config_pending())
        )

    # -- requests (called from HTTP handlers) --------------------------------------------

    async def propose(
        self, service: str, op: str, args: dict[str, Any], request_id: str | None = None,
        timeout: float | None = None, fingerprint: bytes | None = None,
        bind: str | None = None,
    ) -> Any:
        """Replicate one command and return its result once it is applied here. Commands
        that arrive while the loop is busy go into the log together, as one batch.
        `request_id` (scoped) and `fingerprint` make a retry apply at most once (Registry);
        the command carries this leader's clock only for the id table's metrics."""
        self._check_open()
        data = encode_command(
            service, op, args, request_id, fingerprint,
            self.clock.wall_ms() if request_id is not None or bind is not None else None,
            bind,
        )
        fut = asyncio.get_running_loop().create_future()
        self._props.append((data, fut, self.clock.monotonic()))
        self._wake.set()
        return await self._await_result(self._expire_after(fut, timeout))

    async def read_barrier(self, timeout: float | None = None) -> None:
        """Wait until local state reflects every write committed before this call
        (ReadIndex); after it, local reads are linearizable. Reads that arrive together
        share one ReadIndex round (one heartbeat broadcast)."""
        self._check_open()
        fut = asyncio.get_running_loop().create_future()
        self._read_q.append(fut)
        self._wake.set()
        try:
            await self._expire_after(fut, timeout)
            self._read_ok.inc()
        except _Expired:
            self.metrics.reads.labels("timeout").inc()
            raise Unavailable("read index timed out") from None

    def read_index(self, ctx: bytes) -> asyncio.Future[int]:
        """One ReadIndex round under the caller's own context (read_barrier shares one of
        the node's among its callers), so that a step-by-step test can follow its messages;
        resolves to the read's index once this node has applied up to it."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._call(lambda: self._start_read(ctx, [fut]), fut)
        return fut

    async def add_member(self, node_id: str, addr: str, learner: bool = False) -> None:
        """Add as learner, wait until it has caught up, then promote (section 4.2.1).

        Idempotent for the same id and address, so that a client retrying after a timeout
        (catching up can take longer than one attempt) gets success, and a retry of an add
        interrupted before the promotion completes it, instead of a 409 "already a member"."""
        conf = self.core.conf
        same = conf.addr_map().get(node_id) == addr
        if same and node_id in conf.voters and not learner:
            return
        if same and node_id in conf.learners:
            if learner:
                return
        else:
            cc = confmod.ConfChange(confmod.ConfOp.ADD_LEARNER, node_id, addr)
            await self._await_conf_ready()
            await self._submit(lambda: self.core.propose_conf(cc), None)
            if learner:
                return
        def caught_up() -> bool:
            pr = self.core.prs.get(node_id)
            return pr is not None and pr.match >= self.core.log.committed

        await self.wait_until(lambda: not self.is_leader() or caught_up(), 60)
        if not self.is_leader():
            raise NotLeader(self.core.leader)
        if not caught_up():
            raise Unavailable(f"{node_id} did not catch up; it stays a learner")
        promote = confmod.ConfChange(confmod.ConfOp.PROMOTE, node_id, addr)
        try:
            await self._submit(lambda: self.core.propose_conf(promote), None)
        except confmod.ConfChangeError:
            if node_id not in self.core.conf.voters:  # a concurrent retry may have promoted it
                raise

    async def remove_member(self, node_id: str) -> None:
        cc = confmod.ConfChange(confmod.ConfOp.REMOVE, node_id)
        await self._await_conf_ready()
        await self._submit(lambda: self.core.propose_conf(cc), None)

    async def _await_conf_ready(self, timeout: float | None = None) -> None:
        """A newly elected leader refuses membership changes until it has applied an entry of
        its own term. Removing the leader hands leadership over and forwards the request to
        the successor at once, which would otherwise answer 409 (not retried by clients) to a
        perfectly valid request. Wait that window out; a real conflict (another change still
        in progress) is still reported by propose_conf."""
        c = self.core
        await self.wait_until(
            lambda: not self.is_leader() or c.log.term(c.log.applied) == c.term,
            timeout or self.cfg.request_timeout,
        )

    async def transfer_leader(self, target: str | None, timeout: float = 5.0) -> str:
        if target is None:
            cands = [
                (pr.match, p) for p, pr in self.core.prs.items()
                if p != self.id and p in self.core.conf.voters and not pr.recovering
            ]
            if not cands:
                raise ValueError("no other voter to transfer to")
            target = max(cands)[1]
        fut = asyncio.get_running_loop().create_future()
        tgt = target

        def op() -> None:
            self.core.transfer_leader(tgt)
            fut.set_result(None)

        self._call(op, fut)
        await fut
        if not await self.wait_until(
            lambda: self.core.leader == tgt and not self.is_leader(), timeout
        ):
            raise Unavailable("leadership transfer timed out")
        return target

    def service(self, name: str) -> Any:
        return self.registry.services[name]

    async def wait_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Re-check `pred` after every Ready cycle (applies, heartbeats) until it holds or
        `timeout` passes; returns its last value. For long polls such as a lock wait.
        Raises Unavailable once the node is stopping: its state will not change again, and
        the client should ask another node rather than wait out its timeout here."""
        deadline = self.clock.monotonic() + timeout
        while not pred():
            self._check_open()
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return pred()
            await self.wait_applied_change(min(left, 0.5))
        return True

    async def wait_applied_change(self, timeout: float) -> None:
        """Wait for the next Ready cycle (or the timeout); used for polling conditions."""
        fut = asyncio.get_running_loop().create_future()
        self._apply_watch.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass

    # -- internals: queueing work for the loop -------------------------------------------

    async def _submit(self, propose: Callable[[], int], timeout: float | None) -> Any:
        fut = asyncio.get_running_loop().create_future()
        started = self.clock.monotonic()

        def op() -> None:
            idx = propose()
            self._waiters[idx] = _Waiter(self.core.term, fut, started)

        self._call(op, fut)
        return await self._await_result(self._expire_after(fut, timeout))

    def _expire_after(self, fut: asyncio.Future, timeout: float | None) -> asyncio.Future:
        """Fail `fut` with _Expired if it is still pending after `timeout`. The loop sweeps
        these deadlines once per tick: a timer per request (asyncio.timeout / wait_for) was
        a visible share of the leader's CPU at high request rates."""
        deadline = self.clock.monotonic() + (timeout or self.cfg.request_timeout)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), fut))
        return fut

    def _expire_due(self, now: float) -> None:
        dl = self._deadlines
        while dl and (dl[0][0] <= now or dl[0][2].done()):
            _, _, fut = heapq.heappop(dl)
            if not fut.done():
                fut.set_exception(_Expired())

    async def _await_result(self, fut: asyncio.Future) -> Any:
        try:
            result = await fut
        except _Expired:
            self.metrics.proposals.labels("timeout").inc()
            raise Unavailable("proposal timed out; retry with the same request id") from None
        except (NotLeader, ProposalDropped, Unavailable):
            self.metrics.proposals.labels("rejected").inc()
            raise
        self._proposal_ok.inc()
        return result

    def _flush_proposals(self) -> None:
        props, self._props = self._props, []
        live = [p for p in props if not p[1].done()]  # skip callers that timed out
        if not live:
            return
        try:
            last = self.core.propose([data for data, _, _ in live])
        except Exception as e:  # noqa: BLE001 - NotLeader / ProposalDropped to the callers
            for _, fut, _ in live:
                if not fut.done():
                    fut.set_exception(e)
            return
        first = last - len(live) + 1
        for i, (_, fut, started) in enumerate(live):
            self._waiters[first + i] = _Waiter(self.core.term, fut, started)

    def _flush_reads(self) -> None:
        futs = [f for f in self._read_q if not f.done()]
        self._read_q = []
        if not futs:
            return
        self._start_read(f"{self.id}/{next(self._ctx)}".encode(), futs)

    def _start_read(self, ctx: bytes, futs: list[asyncio.Future]) -> None:
        self._reads[ctx] = futs
        try:
            self.core.read_index(ctx)
        except Exception as e:  # noqa: BLE001
            del self._reads[ctx]
            for f in futs:
                if not f.done():
                    f.set_exception(e)

    def _check_open(self) -> None:
        """Refuse work once stop() has begun: no loop would ever take it in."""
        if self._closing:
            raise Unavailable("node shutting down")

    def _call(self, op: Callable[[], None], fut: asyncio.Future) -> None:
        self._check_open()

        def guarded() -> None:
            try:
                op()
            except Exception as e:  # noqa: BLE001 - handed to the caller
                if not fut.done():
                    fut.set_exception(e)

        self._ops.append((guarded, fut))
        self._wake.set()

    def rolled_back(self, peer: str, detail: str) -> None:
        """`peer` refused this node's stream: the data directory is older than a start of
        this node that the peer saw (starts.py). Recover as from a damaged disk, in the Raft
        loop's next pass; the transport dials again, then as recovering."""
        if self.core.recovery is not None or self._closing:
            return
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_ignore_result)

        def op() -> None:
            self.core.enter_recovery("rolled_back", f"{peer} refused this node: {detail}")
            self._note_recovery()
            fut.set_result(None)

        self._call(op, fut)

    def peer_replaced(self, peer: str) -> None:
        """`peer` runs on a data directory that replaced one in use (starts.py), seen as it
        dials: told to the core at once, not in the loop's next pass, because the core takes
        the messages queued before the operations and the peer's first message may be the
        probe this answers."""
        self.core.note_replaced(peer)

    def _on_message(self, m: Message) -> None:
        if m.type == MsgType.HEARTBEAT_RESP:
            sent = self._hb_sent.pop(m.src, None)
            if sent is not None:
                self.metrics.peer_rtt.labels(m.src).observe(self.clock.monotonic() - sent)
        self._inbox.append(m)
        self._wake.set()

    def _resolve(self, peer: str) -> str | None:
        # A node that just joined has an empty log: until it has replicated the membership it
        # knows only its founding peers, so it reaches any other leader at the address that
        # leader advertised when it dialled us.
        return self.addr_of(peer) or self.transport.learned_address(peer)

    def _on_peer_state(self, peer: str, connected: bool) -> None:
        self.metrics.peer_connected.labels(peer).set(1 if connected else 0)

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick = self.clock.monotonic() + self._tick_s
        while True:
            delay = self._next_tick - self.clock.monotonic()
            if self._notices.held:
                delay = min(delay, self._notices.due - self.clock.monotonic())
            busy = self._inbox or self._ops or self._props or self._read_q
            if delay > 0 and not (busy or self.core.has_ready()):
                await self._wake.wait(loop, delay)
            self._wake.clear()
            self._intake(None)
            await self._output(loop)

    def _intake(self, tick: bool | None) -> None:
        """The first half of one pass of the loop: hand the core what was queued since the
        last pass (messages, operations, proposals, reads), send the commit notices now due,
        tick, and start the leader's timers. `tick`: None ticks when a tick is due by the
        clock (the loop); True or False ticks or not (deterministic stepping, below)."""
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            self.core.step(m)
        ops, self._ops = self._ops, []
        for op, _ in ops:
            op()
        self._flush_proposals()
        self._flush_reads()
        now = self.clock.monotonic()
        due = self._notices.take_due(now, self.core.term if self.is_leader() else None)
        if due:
            self.transport.send(due)
        if (now >= self._next_tick) if tick is None else tick:
            self.core.tick()
            self._next_tick = now + self._tick_s
            self._expire_due(now)
        if self.is_leader() and now >= self._next_timer:
            self._next_timer = now + LEADER_TIMER_MS / 1000
            self._leader_timers()

    async def _output(self, loop: asyncio.AbstractEventLoop) -> None:
        """The second half: every Ready cycle the core has (persist, send, apply, advance),
        then a snapshot if one is due."""
        while self.core.has_ready():
            await self._handle_ready(self.core.ready(), loop)
        self._maybe_snapshot(loop)

    # -- deterministic stepping ------------------------------------------------------------
    # For step-by-step tests (tests/unit/raftsim.py, in the manner of etcd's `network` in
    # raft_test.go): the caller decides when each message arrives, when time passes, and
    # when the node runs, instead of start()'s loop. The same two halves of the loop's pass
    # run, so what is tested is the driver itself. Never mixed with start().

    def take_in(self) -> None:
        """Hand the core what is queued (operations, proposals, reads) now, without the
        Ready cycle that follows."""
        self._intake(False)

    def step(self, m: Message) -> None:
        """Take in one message now, as the loop's next pass would, without the Ready cycle
        that follows it (`process` runs that)."""
        self._on_message(m)
        self._intake(False)

    def tick(self) -> None:
        """One tick of the core (the caller moves the clock, if it wants held notices due),
        without the Ready cycle that follows it."""
        self._intake(True)

    def notices_due(self) -> float | None:
        """When the held commit notices go out (the loop wakes for them then), or None."""
        return self._notices.due if self._notices.held else None

    async def process(self) -> bool:
        """One pass of the loop without its wait and without a tick: take in what is
        queued, then run every Ready cycle; a snapshot write it starts is awaited, so the
        next pass compacts the core. Returns whether there was a Ready."""
        self._intake(False)
        had = self.core.has_ready()
        loop = asyncio.get_running_loop()
        await self._output(loop)
        if self._snap_task is not None:
            await asyncio.wait([self._snap_task])
        return had

    def _leader_timers(self) -> None:
        """Propose the time-based commands services ask for (see LeaderDriven). Only once
        this leader has applied an entry of its own term, so it judges up-to-date state."""
        c = self.core
        if c.log.term(c.log.applied) != c.term:
            return
        now_ms = self.clock.wall_ms()
        for svc in self.registry.services.values():
            due = getattr(svc, "due_commands", None)
            if due is None:
                continue
            if self._timer_term != c.term:
                start = getattr(svc, "on_leader_start", None)
                if start is not None:
                    start(now_ms, c.term)
            for op, args in due(now_ms):
                data = encode_command(svc.name, op, args, None)
                fut = asyncio.get_running_loop().create_future()
                fut.add_done_callback(_ignore_result)
                self._props.append((data, fut, self.clock.monotonic()))
        self._timer_term = c.term
        self._flush_proposals()

    async def _handle_ready(self, rd: Ready, loop: asyncio.AbstractEventLoop) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        # Appends carrying entries go out before our own fsync (the followers write in
        # parallel with us). Commit notices (appends without entries) only tell followers
        # what to apply: they are held back briefly, and usually made redundant by the next
        # append (see NoticeHold).
        early, notices, late = [], [], []
        early_out = True  # whether this cycle's appends are on the wire already
        for m in rd.messages:
            if m.type == MsgType.APPEND and not m.entries:
                notices.append(m)
            elif m.type in _EARLY:
                early.append(m)
            else:
                late.append(m)
        if early:
            now = self.clock.monotonic()
            for m in early:
                if m.type == MsgType.HEARTBEAT:
                    self._hb_sent[m.dst] = now
            self._notices.sent(early)
            early_out = self.transport.send(early)
        # Committed entries are already durable on a majority (a leader counts itself only
        # after its own fsync), so when clients wait for them, apply them and answer now
        # rather than after this cycle's fsync, which belongs to other, newer entries. With
        # nobody waiting (a follower), this append's acknowledgement goes first: applying
        # the previous write before this one's fsync put that apply on every write's path.
        apply_first = bool(self._waiters) or rd.snapshot is not None
        conf_waiters: list[_Waiter] = []
        if apply_first:
            conf_waiters = self._apply(rd)
            # Long polls (a lock wait, a dequeue) see the new state now, not after the fsync.
            self._wake_watchers()
        hs = rd.hard_state
        if hs is not None and rd.snapshot is None and (
            _must_sync(hs) == self._synced
        ) and not any(e.type == EntryType.CONF or (e.type == EntryType.NOOP and e.data)
                      for e in rd.committed):
            # Only the commit index moved. It is volatile in Raft (a restarted node learns
            # it again from the leader), so it is not worth an fsync of its own (etcd's
            # MustSync rule), nor a second page in every save of entries (the hard state's
            # row: about a fifth of a small save on this disk). It is written whenever the
            # term or vote changes, with every snapshot, and when a membership change or a
            # leader's no-op commits: a restarted node rebuilds its membership and knows its
            # cluster's id (raft/core.py, `_noop`) from the committed entries, and must not
            # come back with a configuration older than one it has applied, nor without an
            # id it has shown its peers.
            hs = None
        if notices:
            self._notices.hold(notices, self.clock.monotonic())
        saving = hs is not None or rd.entries or rd.snapshot is not None
        if apply_first and rd.committed and not saving:
            # Nothing to persist (an acknowledgement moved the commit): let the handlers
            # answered above write their responses before this cycle's bookkeeping.
            await asyncio.sleep(0)
        if saving:
            t0 = time.perf_counter()
            if (self._io.inline and rd.snapshot is None
                    and (len(rd.entries) <= INLINE_SAVE_ENTRIES or not self._waiters)):
                # A small write is cheaper done here than handed to the I/O thread and back
                # (two thread switches, each as slow as the fsync itself on a busy machine);
                # large batches keep overlapping their fsync with the next requests, where
                # clients wait on this node (the leader). A node nobody waits on (a
                # follower) has nothing to overlap but its own HTTP, which then waits at most
                # one fsync: it saves every batch here (PUT c=64, A/B: a follower's CPU per
                # write 10-26 % lower, the thread hand-off was a tenth of its profile). The
                # loop is blocked during it, so first let the peer senders put this cycle's
                # appends on the wire, unless send() wrote them itself (followers then write
                # in parallel with us), and the requests answered above write their
                # responses.
                if not early_out or (apply_first and rd.committed):
                    await asyncio.sleep(0)
                self.storage.save(hs, rd.entries, rd.snapshot)
            else:
                await self._io.run(self.storage.save, hs, rd.entries, rd.snapshot)
            self.metrics.fsync_latency.observe(time.perf_counter() - t0)
            if hs is not None:
                self._synced = _must_sync(hs)
            if rd.entries:
                self.metrics.batch_entries.observe(len(rd.entries))
        late_out = self.transport.send(late) if late else True
        if not apply_first and rd.committed:
            if not late_out:
                await asyncio.sleep(0)  # the acknowledgements leave before the apply
            conf_waiters = self._apply(rd)
            self._wake_watchers()
        for rs in rd.read_states:
            for fut in self._reads.pop(rs.ctx, []):
                if not fut.done():
                    self._read_waits.append((rs.index, fut))
        self.core.advance(rd)
        if self.core.cluster_id_conflict is not self._told_conflict:
            self._told_conflict = self.core.cluster_id_conflict
            log.error("%s: a committed no-op carries cluster id %s, not %s, which this node "
                      "applied first (a log that is not this cluster's?); keeping %s",
                      self.id, (self._told_conflict or b"").hex(),
                      self.core.cluster_id.hex(), self.core.cluster_id.hex())
        for w in conf_waiters:  # membership takes effect in advance(); answer after it
            if not w.future.done():
                w.future.set_result(None)
        self._release_reads()
        self._update_gauges()
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        if self._apply_watch:
            watch, self._apply_watch = self._apply_watch, []
            for fut in watch:
                if not fut.done():
                    fut.set_result(None)

    def _apply(self, rd: Ready) -> list[_Waiter]:
        """Apply committed entries and answer their waiters; returns the waiters of
        membership changes, which are answered only once the core has applied them."""
        conf_waiters = []
        if rd.snapshot is not None:
            self.registry.restore(rd.snapshot.data, rd.snapshot.meta.index)
        for e in rd.committed:
            result: Any = None
            if e.type == EntryType.NORMAL:
                result = self.registry.apply(e.data, e.index)
            w = self._waiters.pop(e.index, None)
            if w is not None and not w.future.done():
                if e.term == w.term and e.type == EntryType.CONF:
                    conf_waiters.append(w)
                elif e.term == w.term:
                    w.future.set_result(result)
                    self.metrics.apply_latency.observe(self.clock.monotonic() - w.started)
                else:
                    w.future.set_exception(Unavailable("leadership changed; retry"))
        return conf_waiters

    def _release_reads(self) -> None:
        applied = self.core.log.applied
        keep = []
        for idx, fut in self._read_waits:
            if fut.done():
                continue
            if idx <= applied:
                fut.set_result(idx)
            else:
                keep.append((idx, fut))
        self._read_waits = keep

    def _on_soft_state(self, rd: Ready) -> None:
        ss = rd.soft_state
        assert ss is not None
        if ss.leader != self._seen_leader:
            self.metrics.leader_changes.inc()
            log.info("%s: leader is now %s (term %d)", self.id, ss.leader, ss.term)
        was_leader = self._seen_role == Role.LEADER
        self._seen_leader, self._seen_role = ss.leader, ss.role
        if was_leader and ss.role != Role.LEADER:
            # Our proposals may still commit under the next leader; the client retries with
            # the same request id and the dedupe table answers without applying twice.
            self._fail_all(NotLeader(ss.leader))

    def _fail_all(self, exc: Exception) -> None:
        for w in self._waiters.values():
            if not w.future.done():
                w.future.set_exception(exc)
        self._waiters.clear()
        for futs in self._reads.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        self._reads.clear()
        for _, fut in self._read_waits:
            if not fut.done():
                fut.set_exception(exc)
        self._read_waits = []

    def _maybe_snapshot(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take a snapshot when the Registry says one is due (its log-to-state ratio). The
        state is encoded here, on the loop, between Ready cycles (services cache their
        encoded pieces, so this is cheap); writing it (seconds for a big state on a slow
        disk) runs in the background, and the core forgets the covered entries only once
        it is durable."""
        c = self.core
        if self._snap_done is not None:
            snap, self._snap_done = self._snap_done, None
            c.compact(snap)
            self.registry.snapshot_taken(len(snap.data))
            log.info("%s: snapshot at %d, log compacted", self.id, snap.meta.index)
        if self._snap_task is not None or not self.registry.snapshot_due(
            c.log.applied - c.log.snap.index, self.cfg.snapshot_threshold
        ):
            return
        try:
            snap = c.make_snapshot(c.log.applied, self.registry.snapshot())
        except ValueError:
            return
        self._snap_task = loop.create_task(self._write_snapshot(snap, loop))

    async def _write_snapshot(self, snap: Any, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._snap_io.run(self.storage.compact, snap)
        except Exception:  # noqa: BLE001 - the store is poisoned; the next save fails fast
            log.exception("%s: writing the snapshot at %d failed", self.id, snap.meta.index)
        else:
            self._snap_done = snap
            self._wake.set()
        finally:
            self._snap_task = None

    def _update_gauges(self) -> None:
        c, m = self.core, self.metrics
        if c.recovery is not None or self._seen_recovery is not None:
            self._note_recovery()
        m.set_role(int(c.role))  # the others are read at scrape time (see __init__)
