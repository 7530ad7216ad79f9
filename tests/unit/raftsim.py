"""The step-by-step harness of the paper-section tests (test_raft_paper.py and
test_raft_recovery.py): real `Node`s, one message at a time.

Each simulated node is a real `distsync.node.Node`, the driver that runs in production, built
from in-memory seams (seams.py): its disk is a `Disk` (simdisk.py's `DiskImage`, with the real
store's write rules) behind a `SimDisk`, its clock a `SimClock`, and its transport puts what it
sends on this harness's network, a list of in-flight messages. The harness never persists,
sends, applies or advances anything itself: the node's own Ready cycle (`Node._handle_ready`)
does, with everything it does in production (a leader's appends sent before its fsync,
committed entries applied before it, the hard state not rewritten when only the commit index
moved, commit notices held back, small saves inline and large ones through the I/O runner).
One driver, tested one way: the whole-cluster simulation (distsync/testing/sim.py) runs the
same nodes under random schedules and virtual time.

What this harness adds is control. Like etcd's `network` in raft_test.go, a test fixes the
order of single messages inside one step, through the node's deterministic stepping API
(node.py: `step` takes in one message, `tick` one tick, `process` runs one pass of the loop
without its wait): `deliver` one message, `process` one node, `stabilize` until nothing is
left to do, `cut` links, drop messages with `filters`, `crash`, `restart`, `wipe`. Nodes run
on a private virtual-time event loop (simloop.py); time moves only when the harness says so
(a tick, or the few milliseconds after which held commit notices go out), so every run is
deterministic.

A crash drops the Node object: what its disk kept is all a restart sees. Saves complete
within the Ready cycle that makes them, so a crash between steps loses nothing fsynced; a
crash `midway` cuts the power during the next Ready's save: the leader's pipelined messages
went out and its committed entries were applied in memory, and the write is lost or leaves
a torn prefix of its entries (SimDisk.crash). Client inputs (propose, campaign, a leadership
transfer, a membership change) go to the node's core between two passes, as the node's
queued operations do; reads go through the node's ReadIndex path (Node.read_index).

Where the tests see the real driver differ from the old harness's own driver (which
persisted everything, then sent, then applied): the commit index is volatile (the hard state
is not rewritten when only it moved, so a restarted node replays only the commit of its last
hard-state write and learns the rest from the leader), and commit notices go out a few
milliseconds late, or not at all when an append overtakes them. A founding member whose disk
is empty bootstraps as node.py does (`discover=True`: it asks its peers first); without
`discover` the cluster starts founded. A node that joins starts with `join` (node.py: it
recovers as an empty data directory until a leader has repaired it).

Every action that touches a node is followed by incremental safety checks on the real node's
state (its core, its state machine, its disk), so a violation is reported at the step that
caused it:

* election safety: at most one leader per term over the whole history;
* log matching: an (index, term) pair always denotes the same entry with the same predecessor
  term, in every node's log, ever (which by induction gives the Log Matching Property);
* leader completeness: a new leader holds every entry committed in an earlier term, and an entry
  committed in term T is in the log of every current leader of a later term;
* state machine safety: no two nodes apply different entries at one index (snapshots included);
  each node applies indexes contiguously and only committed entries;
* durability (checked on every write the driver makes): a node's durable commit never
  decreases, entries at or below it are never truncated or changed on disk, a persisted vote
  never changes within a term, and a restart comes back to exactly the durable commit; in
  memory, commit never decreases;
* promises are durable: a node acknowledges only entries on its disk and grants a vote only
  once it is in its durable hard state (checked as the messages leave it);
* ReadIndex: a read is answered with an index that covers every entry committed anywhere
  before it was requested, and only once the node has applied up to it.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from distsync.config import NodeConfig
from distsync.node import Node
from distsync.raft import conf as confmod
from distsync.raft.core import Config, Raft
from distsync.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    PersistedState,
    ReadState,
    Role,
    Snapshot,
    StorageFault,
)
from distsync.seams import NodeParts
from distsync.services.kv import KVStore
from distsync.services.registry import Registry
from distsync.testing.simclock import SimClock
from distsync.testing.simdisk import DiskFaults, DiskImage, SimDisk
from distsync.testing.simloop import VirtualLoop


class InvariantViolation(AssertionError):
    """A Raft safety property does not hold; the message says which one and where."""


class PowerCut(Exception):
    """The power failed during a save (`Cluster.crash(midway=True)`): nothing was written."""


def addr_of(node_id: str) -> str:
    return f"{node_id}.sim:7000"


def fmt_msg(m: Message) -> str:
    s = f"{m.type.name} {m.src}->{m.dst} t{m.term} i{m.index} lt{m.log_term} c{m.commit}"
    if m.entries:
        s += f" ents[{m.entries[0].index}..{m.entries[-1].index}]"
    if m.reject:
        s += f" REJECT hint{m.reject_hint}"
    if m.snapshot is not None:
        s += f" snap@{m.snapshot.meta.index}t{m.snapshot.meta.term}"
    if m.context:
        s += f" ctx={m.context!r}"
    return s


@dataclass
class Disk(DiskImage):
    """One node's stable storage: simdisk's image (the real store's write rules), plus a
    storage fault the next load reports, set by a test that damages the disk by hand."""

    fault: StorageFault | None = None

    def take_fault(self) -> StorageFault | None:
        fault, self.fault = self.fault, None  # reported once; the core keeps it
        return fault


class _Store(SimDisk):
    """The node's LogStore: a SimDisk (no random faults) whose every write is checked first
    (durability), and whose power a test can cut during the next save."""

    def __init__(self, cluster: Cluster, sn: SimNode) -> None:
        super().__init__(sn.disk, random.Random(0), DiskFaults(), cluster.trace.append)
        self.cluster = cluster
        self.sn = sn
        self.power_cut = False

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        if self.power_cut:
            self.in_flight = (hard_state, list(entries), snapshot)
            raise PowerCut(self.sn.id)
        self.cluster._check_save(self.sn, hard_state, entries, snapshot)
        super().save(hard_state, entries, snapshot)

    def compact(self, snapshot: Snapshot) -> None:
        disk = self.sn.disk
        if disk.last_index() < snapshot.meta.index:
            self.cluster._fail(f"{self.sn.id}: compacting to {snapshot.meta.index} past the "
                               f"disk end {disk.last_index()}")
        super().compact(snapshot)


class _IO:
    """The IORunner: a save runs at once (the harness decides when time passes); `inline`
    as in production, so both of the driver's save paths run."""

    inline = True

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def close(self) -> None:
        pass


class _Wire:
    """The node's PeerTransport: what it sends goes on the harness's network."""

    def __init__(self, cluster: Cluster, sn: SimNode) -> None:
        self.cluster = cluster
        self.sn = sn

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def send(self, msgs: list[Message]) -> None:
        self.cluster._check_sent(self.sn, msgs)
        self.cluster.inflight.extend(msgs)

    def learned_address(self, peer_id: str) -> str | None:
        return None


class _StateMachine(Registry):
    """The node's state machine: the real Registry, taking the tests' raw payloads rather
    than service commands, and telling the checker about every apply, snapshot and restore
    the driver makes (checked after the step, once the commits it saw are recorded)."""

    def __init__(self, sn: SimNode, new_key: Callable[[], bytes]) -> None:
        super().__init__([KVStore()])
        self.sn = sn
        self.new_key = new_key
        self.want_snapshot = False

    def apply(self, data: bytes, index: int) -> Any:
        self.sn.events.append(("apply", index, data))
        return None

    def snapshot_due(self, entries: int, threshold: int) -> bool:
        return self.want_snapshot

    def snapshot(self) -> bytes:
        self.want_snapshot = False
        key = self.new_key()
        self.sn.events.append(("snapshot", key))
        return key

    def snapshot_taken(self, size: int) -> None:
        pass

    def restore(self, data: bytes, index: int = 0) -> None:
        self.sn.events.append(("restore", data))


class SimNode:
    def __init__(self, node_id: str, disk: Disk):
        self.id = node_id
        self.disk = disk
        self.node: Node | None = None
        self.store: _Store | None = None
        self.clock: SimClock | None = None
        # The state machine as the checker saw the node apply it: sm[i - 1] is the entry
        # applied at index i (NORMAL entries reach the node's state machine, the others only
        # its core).
        self.sm: list[Entry] = []
        # What the node's state machine was asked to do since the last check.
        self.events: list[tuple[Any, ...]] = []
        self.incarnation = 0
        # Founding membership this node bootstraps with whenever its storage is empty; None
        # for a node that joins through a membership change.
        self.founders: dict[str, str] | None = None
        # The highest commit index seen in memory in this incarnation.
        self.mem_commit = 0
        # Answered reads, and reads asked but not answered yet.
        self.read_states: list[ReadState] = []
        self.reads: list[tuple[bytes, asyncio.Future[int]]] = []

    @property
    def raft(self) -> Raft | None:
        """The node's Raft core, None while it is down."""
        return self.node.core if self.node is not None else None

    @property
    def alive(self) -> bool:
        return self.node is not None

    def applied_data(self) -> list[bytes]:
        """Payloads of the NORMAL entries applied so far, in order."""
        return [e.data for e in self.sm if e.type == EntryType.NORMAL]


class Cluster:
    """Real nodes on in-memory disks, a network, and the safety checker."""

    def __init__(
        self,
        ids: Iterable[str],
        *,
        seed: int = 0,
        config: Config | None = None,
        persisted: dict[str, PersistedState] | None = None,
        record: bool = False,
        discover: bool = False,
    ):
        self.seed = seed
        # Founding members with an empty disk: with `discover` the node bootstraps itself
        # (node.py: it asks its peers whether the cluster is new before it votes); without,
        # the cluster was founded already (the founding entries are on every disk, as
        # `Raft.bootstrap` writes them), so that a test can start an election at once.
        self.discover = discover
        self.cfg = config or Config()
        self.loop = VirtualLoop()
        weakref.finalize(self, self.loop.close)
        self.nodes: dict[str, SimNode] = {}
        self.inflight: list[Message] = []
        # Directed links (src, dst) on which every message is lost.
        self.cut: set[tuple[str, str]] = set()
        # Predicates; a message for which one returns True is dropped at delivery.
        self.filters: list[Callable[[Message], bool]] = []
        # Every delivered message, when `record` is set (tests count round trips with it).
        self.record = record
        self.delivered: list[Message] = []
        self.delivered_types: Counter[Any] = Counter()
        # Recent actions, newest last (formatted only when a check fails).
        self.trace: deque[str | tuple[str, object]] = deque(maxlen=80)
        # -- checker state --
        self.leaders: dict[int, str] = {}
        self.log_ids: dict[tuple[int, int], tuple[Entry, int]] = {}
        self.committed: dict[int, Entry] = {}
        self.commit_term: dict[int, int] = {}
        self.max_committed = 0
        self.applied_at: dict[int, Entry] = {}
        self.snap_registry: dict[bytes, tuple[Entry, ...]] = {}
        self.read_floor: dict[bytes, int] = {}
        # (leader, term, follower) -> (match, the follower's disk when it was reached): a
        # leader's match of a follower never goes back unless that disk was replaced (wiped).
        self.matches: dict[tuple[str, int, str], tuple[int, Disk]] = {}
        self._snap_seq = 0
        self._hand_made: set[bytes] = set()
        ids = list(ids)
        if persisted is None:
            members = {i: addr_of(i) for i in ids}
            for i in ids:
                self._new_node(i, Disk(), members)
        else:
            for i in ids:
                ps = persisted.get(i, PersistedState())
                if ps.snapshot is not None and ps.snapshot.data not in self.snap_registry:
                    # Content unknown to the checker: a hand-made snapshot.
                    self.snap_registry[ps.snapshot.data] = ()
                    self._hand_made.add(ps.snapshot.data)
                self._new_node(i, Disk(hard_state=ps.hard_state, snapshot=ps.snapshot,
                                       entries=list(ps.entries)))

    def format_trace(self) -> str:
        lines = []
        for t in self.trace:
            if isinstance(t, str):
                lines.append(t)
            elif isinstance(t[1], Message):
                lines.append(f"{t[0]} {fmt_msg(t[1])}")
            else:
                lines.append(f"{t[0]} {t[1]}")
        return "\n".join(lines)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    # -- nodes ---------------------------------------------------------------------------

    def _rng(self, node: SimNode) -> random.Random:
        return random.Random(f"{self.seed}/{node.id}/{node.incarnation}")

    def _new_key(self) -> bytes:
        self._snap_seq += 1
        return b"snap-%d" % self._snap_seq

    def _new_node(
        self, node_id: str, disk: Disk, founders: dict[str, str] | None = None
    ) -> SimNode:
        node = SimNode(node_id, disk)
        node.founders = founders
        self.nodes[node_id] = node
        self._start(node)
        return node

    def _start(self, sn: SimNode) -> None:
        disk = sn.disk
        empty = disk.last_index() == 0 and disk.hard_state.term == 0 and disk.snapshot is None
        if empty and sn.founders is not None and not self.discover:
            # A founded cluster: the founding entries and hard state `Raft.bootstrap` makes,
            # on disk (without discovery, see __init__).
            founder = Raft(sn.id, PersistedState(), self.cfg, random.Random(0))
            founder.bootstrap(sn.founders)
            rd = founder.ready()
            disk.write(rd.hard_state, rd.entries, None)
            empty = False
        expect = max(disk.snap_index(), disk.hard_state.commit)
        sn.sm, sn.events, sn.reads, sn.read_states = [], [], [], []
        sn.clock = SimClock(self.loop)
        store = sn.store = _Store(self, sn)
        parts = NodeParts(
            storage=store,
            transport=lambda node: _Wire(self, sn),
            clock=sn.clock,
            rng=self._rng(sn),
            io=_IO(),
            snap_io=_IO(),
            on_fatal=lambda exc: None,  # the loop never runs: process() raises instead
            raft_config=self.cfg,
        )
        cfg = NodeConfig(node_id=sn.id, listen=addr_of(sn.id), peers=dict(sn.founders or {}),
                         data_dir=f"(simulated {sn.id})", join=sn.founders is None)
        node = sn.node = Node(cfg, parts=parts, registry=_StateMachine(sn, self._new_key))
        r = node.core
        if not empty and r.log.committed != expect:
            self._fail(f"{sn.id} restarted with commit {r.log.committed}, durable {expect}")
        sn.mem_commit = r.log.committed
        self._check_log(sn, r.log.first_index())
        # What the disk says is committed must agree with everything committed so far (and
        # seeds the record for clusters built from hand-made persisted states).
        self._record_commit(sn.id, r, 1, r.log.committed)
        self._after(sn)

    def add_node(self, node_id: str, persisted: PersistedState | None = None) -> SimNode:
        """A new, not bootstrapped node (it joins through a membership change)."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} exists")
        ps = persisted or PersistedState()
        return self._new_node(node_id, Disk(hard_state=ps.hard_state, snapshot=ps.snapshot,
                                            entries=list(ps.entries)))

    def raft(self, node_id: str) -> Raft:
        r = self.nodes[node_id].raft
        if r is None:
            raise ValueError(f"{node_id} is down")
        return r

    def node(self, node_id: str) -> Node:
        n = self.nodes[node_id].node
        if n is None:
            raise ValueError(f"{node_id} is down")
        return n

    def alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.node is not None]

    def leader(self) -> str | None:
        """The live node that is leader in the highest term, if any."""
        best: tuple[int, str] | None = None
        for n in self.alive():
            r = n.raft
            assert r is not None
            if r.role == Role.LEADER and (best is None or r.term > best[0]):
                best = (r.term, n.id)
        return best[1] if best else None

    def leaders_now(self) -> list[str]:
        return [n.id for n in self.alive() if n.raft.role == Role.LEADER]  # type: ignore[union-attr]

    def crash(self, node_id: str, midway: bool = False) -> None:
        """Lose the node's memory. With `midway`, the power fails during the save of its
        next Ready: what the driver does before its fsync (a leader's appends sent, committed
        entries applied) happened, the write did not."""
        sn = self.nodes[node_id]
        node, store = sn.node, sn.store
        if node is None or store is None:
            return
        if midway and node.core.has_ready():
            store.power_cut = True
            try:
                self._run(node.process())
            except PowerCut:
                pass
        self.trace.append(f"crash {node_id}{' midway' if midway else ''}")
        store.crash()
        for _, fut in sn.reads:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a crashed node's failed reads are no news
        sn.node = sn.store = None
        sn.sm, sn.events, sn.reads, sn.read_states = [], [], [], []

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.node is not None:
            self.crash(node_id)
        node.incarnation += 1
        self.trace.append(f"restart {node_id}")
        self._start(node)

    def wipe(self, node_id: str, rebootstrap: bool = False) -> None:
        """Crash and lose the disk too (the machine was replaced). The node comes back empty
        and catches up from the leader, or with `rebootstrap` (what node.py does for a founding
        member started without --join) writes the founding entries again first."""
        self.crash(node_id)
        node = self.nodes[node_id]
        node.disk = Disk()
        if not rebootstrap:
            node.founders = None
        self.restart(node_id)

    # -- client requests -----------------------------------------------------------------

    def propose(self, node_id: str, *payloads: bytes) -> int:
        idx = self.raft(node_id).propose(list(payloads))
        self.trace.append(f"propose {node_id} -> {idx}")
        self._after(self.nodes[node_id])
        return idx

    def propose_conf(self, node_id: str, cc: confmod.ConfChange) -> int:
        idx = self.raft(node_id).propose_conf(cc)
        self.trace.append(f"propose_conf {node_id} {cc.op.name} {cc.node_id} -> {idx}")
        self._after(self.nodes[node_id])
        return idx

    def read_index(self, node_id: str, ctx: bytes) -> None:
        """ReadIndex at `node_id` through the node (Node.read_index); the answer must cover
        everything committed by now. Raises what the core refuses the read with."""
        node = self.node(node_id)

        async def ask() -> asyncio.Future[int]:
            fut = node.read_index(ctx)
            node.take_in()
            return fut

        fut = self._run(ask())
        self.read_floor[ctx] = self.max_committed
        self.trace.append(f"read_index {node_id} {ctx!r} floor={self.max_committed}")
        if fut.done() and fut.exception() is not None:
            raise fut.exception()  # type: ignore[misc]
        self.nodes[node_id].reads.append((ctx, fut))
        self._after(self.nodes[node_id])

    def transfer_leader(self, node_id: str, target: str) -> None:
        self.raft(node_id).transfer_leader(target)
        self.trace.append(f"transfer {node_id} -> {target}")
        self._after(self.nodes[node_id])

    def campaign(self, node_id: str) -> None:
        self.raft(node_id).campaign()
        self.trace.append(f"campaign {node_id}")
        self._after(self.nodes[node_id])

    def compact(self, node_id: str) -> Snapshot | None:
        """Have the node snapshot its state machine at its applied index, as its driver does
        when a snapshot is due (written to disk, then the core compacted). Returns the new
        snapshot, or None if there was nothing new to compact."""
        sn = self.nodes[node_id]
        node = self.node(node_id)
        before = sn.disk.snapshot
        assert isinstance(node.registry, _StateMachine)
        node.registry.want_snapshot = True
        self._run(node.process())  # takes and writes the snapshot
        self._run(node.process())  # compacts the core to it
        node.registry.want_snapshot = False
        self.trace.append(f"compact {node_id} @{node.core.log.snap.index}")
        self._after(sn)
        snap = sn.disk.snapshot
        return snap if snap is not before else None

    # -- time and network ----------------------------------------------------------------

    def tick(self, *node_ids: str, n: int = 1) -> None:
        """Tick each node `n` times; a tick's worth of time passes on its clock first (held
        commit notices go out then)."""
        targets = node_ids or tuple(x.id for x in self.alive())
        for _ in range(n):
            for i in targets:
                sn = self.nodes[i]
                if sn.node is None:
                    continue
                assert sn.clock is not None
                sn.clock.offset += sn.node.cfg.tick_ms / 1000
                sn.node.tick()
                self.trace.append(("tick", i))
                self._after(sn)

    def isolate(self, node_id: str) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between nodes of different groups (nodes in no group keep theirs)."""
        gs = [set(g) for g in groups]
        for a in range(len(gs)):
            for b in range(len(gs)):
                if a != b:
                    for x in gs[a]:
                        for y in gs[b]:
                            self.cut.add((x, y))

    def heal(self) -> None:
        self.cut.clear()
        self.filters.clear()

    def deliver(self, m: Message) -> bool:
        """Deliver one message now (unless a cut or a filter drops it): the node takes it
        in (Node.step); its Ready cycle runs when it is processed."""
        if (m.src, m.dst) in self.cut or any(f(m) for f in self.filters):
            return False
        sn = self.nodes.get(m.dst)
        if sn is None or sn.node is None:
            return False
        self.delivered_types[m.type] += 1
        if self.record:
            self.delivered.append(m)
        self.trace.append(("deliver", m))
        sn.node.step(m)
        self._after(sn)
        return True

    def deliver_all(self) -> int:
        """Deliver everything in flight, in send order; returns how many were delivered."""
        msgs, self.inflight = self.inflight, []
        return sum(self.deliver(m) for m in msgs)

    def take(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the in-flight messages matching `pred`."""
        keep, out = [], []
        for m in self.inflight:
            (out if pred(m) else keep).append(m)
        self.inflight = keep
        return out

    def process(self, node_id: str) -> bool:
        """One pass of the node's driver loop (Node.process: its Ready cycles, each one
        persist, send, apply, advance as node.py does them). False if it had no Ready."""
        sn = self.nodes[node_id]
        if sn.node is None:
            return False
        self.trace.append(("ready", node_id))
        had = self._run(sn.node.process())
        self._after(sn)
        return bool(had)

    def process_all(self) -> bool:
        done = False
        for node_id in list(self.nodes):
            done |= self.process(node_id)
        return done

    def flush_notices(self) -> bool:
        """Move the clock of each node holding commit notices to when they are due, and let
        it send them (node.py's NoticeHold: a few milliseconds, no tick). False if none."""
        sent = False
        for sn in self.alive():
            assert sn.node is not None and sn.clock is not None
            due = sn.node.notices_due()
            if due is None:
                continue
            sn.clock.offset += max(0.0, due - sn.clock.monotonic())
            self.trace.append(("notices", sn.id))
            self.process(sn.id)
            sent = True
        return sent

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Handle Readies, deliver messages and let held commit notices go out until nothing
        is left to do (no ticks)."""
        for _ in range(max_rounds):
            progressed = self.process_all()
            if self.inflight:
                self.deliver_all()
                progressed = True
            if not progressed and not self.flush_notices():
                return
        raise AssertionError("the cluster did not stabilize")

    def run(self, ticks: int) -> None:
        """`ticks` rounds of: tick every live node once, then stabilize."""
        for _ in range(ticks):
            self.tick()
            self.stabilize()

    def elect(self, node_id: str) -> None:
        """Make `node_id` campaign and let the election finish; asserts that it won."""
        self.campaign(node_id)
        self.stabilize()
        r = self.raft(node_id)
        assert r.role == Role.LEADER, f"{node_id} did not win: {r.status()}"

    # -- what the driver does, checked ----------------------------------------------------

    def _check_save(self, sn: SimNode, hs: HardState | None, entries: list[Entry],
                    snapshot: Snapshot | None) -> None:
        """Durability, on each write the node's driver makes, before it lands."""
        # The commits the core made before this write (within the same pass) first, and
        # log matching for what is written (the core's unstable entries).
        self._note_commits(sn)
        if entries:
            self._check_log(sn, entries[0].index)
        disk = sn.disk
        nid = sn.id
        old = disk.hard_state
        if hs is not None:
            if hs.term < old.term:
                self._fail(f"{nid}: durable term goes back {old.term} -> {hs.term}")
            if hs.term == old.term and old.vote is not None and hs.vote != old.vote:
                self._fail(f"{nid}: durable vote in term {hs.term} changes {old.vote}->{hs.vote}")
            if hs.commit < old.commit:
                self._fail(f"{nid}: durable commit goes back {old.commit} -> {hs.commit}")
        if snapshot is not None and snapshot.meta.index < old.commit:
            self._fail(
                f"{nid}: snapshot at {snapshot.meta.index} below durable commit "
                f"{old.commit} would drop committed entries"
            )
        si = snapshot.meta.index if snapshot is not None else disk.snap_index()
        last = si if snapshot is not None and disk.term_at(si) != snapshot.meta.term \
            else max(disk.last_index(), si)
        if entries:
            first = entries[0].index
            if first <= old.commit:
                self._fail(f"{nid}: persisting from {first} overwrites durable commit {old.commit}")
            if first <= si or first > last + 1:
                self._fail(f"{nid}: entries from {first} do not fit disk ({si}, {last}]")
            last = entries[-1].index
        new_commit = hs.commit if hs is not None else old.commit
        if new_commit > last:
            self._fail(f"{nid}: durable commit {new_commit} past disk end {last}")
        for i in range(old.commit + 1, new_commit + 1):
            if i <= si and snapshot is not None:
                e = self.snap_registry[snapshot.data][i - 1]
            elif entries and i >= entries[0].index:
                e = entries[i - entries[0].index]
            else:
                e = self._disk_entry(disk, i)
            if self.committed.get(i) != e:
                self._fail(f"{nid}: durable committed entry {i} is {e}, committed {self.committed.get(i)}")

    def _check_sent(self, sn: SimNode, msgs: list[Message]) -> None:
        """What a node promises, it has on disk when the promise leaves it: an acknowledged
        entry is in its durable log, a granted vote in its durable hard state (only a
        leader's own messages may go out before its fsync)."""
        disk = sn.disk
        for m in msgs:
            if m.type == MsgType.APPEND_RESP and not m.reject and m.index > disk.last_index():
                self._fail(f"{sn.id} acknowledges {m.index} to {m.dst}, its disk ends at "
                           f"{disk.last_index()}")
            if m.type == MsgType.VOTE_RESP and not m.reject and (
                    disk.hard_state.term, disk.hard_state.vote) != (m.term, m.dst):
                self._fail(f"{sn.id} grants {m.dst} its vote in term {m.term}, its disk says "
                           f"{disk.hard_state.term}/{disk.hard_state.vote}")

    def _disk_entry(self, disk: Disk, i: int) -> Entry | None:
        si = disk.snap_index()
        if i > si:
            k = i - si - 1
            return disk.entries[k] if k < len(disk.entries) else None
        assert disk.snapshot is not None
        return self.snap_registry[disk.snapshot.data][i - 1]

    def _fill_applied(self, sn: SimNode, upto: int) -> None:
        """The core applied up to `upto`: entries the state machine was not given must be
        the ones it never gets (not NORMAL)."""
        while len(sn.sm) < upto:
            i = len(sn.sm) + 1
            e = self.committed.get(i)
            if e is None:
                self._fail(f"{sn.id}: applies {i}, which is not committed")
            assert e is not None
            if e.type == EntryType.NORMAL:
                self._fail(f"{sn.id}: applied past {e} without handing it to the state machine")
            self._applied(sn, e)

    def _applied(self, sn: SimNode, e: Entry) -> None:
        prior = self.applied_at.setdefault(e.index, e)
        if prior != e:
            self._fail(f"{sn.id}: applies {e} where another node applied {prior}")
        sn.sm.append(e)

    def _check_applies(self, sn: SimNode) -> None:
        """State machine safety, on what the driver handed the node's state machine."""
        nid = sn.id
        events, sn.events = sn.events, []
        for ev in events:
            if ev[0] == "apply":
                _, index, data = ev
                if index <= len(sn.sm):
                    self._fail(f"{nid}: applies {index} after {len(sn.sm)}")
                self._fill_applied(sn, index - 1)
                e = self.committed.get(index)
                if e is None or e.type != EntryType.NORMAL or e.data != data:
                    self._fail(f"{nid}: applies {data!r} at {index}, committed is {e}")
                assert e is not None
                self._applied(sn, e)
            elif ev[0] == "restore":
                data = ev[1]
                seq = self.snap_registry[data]
                snap = sn.disk.snapshot
                if snap is not None and snap.data == data and data not in self._hand_made:
                    meta = snap.meta
                    if len(seq) != meta.index or (seq and seq[-1].term != meta.term):
                        self._fail(f"{nid}: snapshot data does not match its meta {meta}")
                if len(sn.sm) > len(seq):
                    self._fail(f"{nid}: snapshot at {len(seq)} behind applied {len(sn.sm)}")
                for e in seq:
                    if self.applied_at.get(e.index, e) != e:
                        self._fail(f"{nid}: snapshot holds {e}, applied elsewhere "
                                   f"{self.applied_at[e.index]}")
                sn.sm = list(seq)
            elif ev[0] == "snapshot":
                key = ev[1]
                snap = sn.disk.snapshot
                if snap is None or snap.data != key:
                    continue  # nothing new to snapshot: the driver made none
                self._fill_applied(sn, snap.meta.index)
                self.snap_registry[key] = tuple(sn.sm[: snap.meta.index])
        r = sn.raft
        assert r is not None
        self._fill_applied(sn, r.log.applied)
        if r.log.applied != len(sn.sm):
            self._fail(f"{nid}: core applied {r.log.applied}, state machine {len(sn.sm)}")
        pending = []
        for ctx, fut in sn.reads:
            if not fut.done():
                pending.append((ctx, fut))
            elif not fut.cancelled() and fut.exception() is None:
                idx = fut.result()
                floor = self.read_floor.pop(ctx, None)
                if floor is not None and idx < floor:
                    self._fail(f"{nid}: read {ctx!r} at {idx} misses commit {floor}")
                if idx > r.log.applied:
                    self._fail(f"{nid}: read {ctx!r} at {idx} answered at applied "
                               f"{r.log.applied}")
                sn.read_states.append(ReadState(idx, ctx))
        sn.reads = pending

    # -- checker -------------------------------------------------------------------------

    def _fail(self, msg: str) -> None:
        raise InvariantViolation(msg)

    def _mem_entry(self, r: Raft, i: int) -> Entry | None:
        log = r.log
        si = log.snap.index
        if i > si:
            k = i - si - 1
            return log.entries[k] if k < len(log.entries) else None
        snap = log.pending_snapshot or r.snapshot
        if snap is None or snap.meta.index != si:
            return None
        return self.snap_registry[snap.data][i - 1]

    def _check_log(self, node: SimNode, start: int) -> None:
        """Log matching for the node's in-memory entries from index `start` on."""
        r = node.raft
        assert r is not None
        log = r.log
        si = log.snap.index
        ents = log.entries
        ids = self.log_ids
        for k in range(max(start - si - 1, 0), len(ents)):
            e = ents[k]
            pt = ents[k - 1].term if k else log.snap.term
            key = (e.index, e.term)
            seen = ids.get(key)
            if seen is None:
                ids[key] = (e, pt)
            elif seen[0] != e or seen[1] != pt:
                self._fail(
                    f"log matching: {node.id} has {e} after term {pt}; "
                    f"elsewhere {seen[0]} after term {seen[1]}"
                )

    def _after(self, node: SimNode) -> None:
        r = node.raft
        if r is None:
            return
        log = r.log
        # Election safety.
        if r.role == Role.LEADER:
            who = self.leaders.get(r.term)
            if who is None:
                self.leaders[r.term] = node.id
                self._check_new_leader(node.id, r)
            elif who != node.id:
                self._fail(f"election safety: {who} and {node.id} both lead term {r.term}")
            self._check_matches(node.id, r)
        self._note_commits(node)
        # Log matching for entries not yet on disk (every entry is new while unstable; what
        # the driver writes is checked as it writes it, _check_save).
        if log.stable < log.last_index():
            self._check_log(node, log.stable + 1)
        self._check_applies(node)

    def _note_commits(self, node: SimNode) -> None:
        """Commit monotonic; record what became committed."""
        r = node.raft
        assert r is not None
        c = r.log.committed
        if c < node.mem_commit:
            self._fail(f"{node.id}: commit went back {node.mem_commit} -> {c}")
        if c > node.mem_commit:
            self._record_commit(node.id, r, node.mem_commit + 1, c)
            node.mem_commit = c

    def _check_matches(self, nid: str, r: Raft) -> None:
        for p, pr in r.prs.items():
            if p == nid or p not in self.nodes:
                continue
            disk = self.nodes[p].disk
            key = (nid, r.term, p)
            prev = self.matches.get(key)
            if prev is not None and pr.match < prev[0] and prev[1] is disk:
                self._fail(f"{nid} (term {r.term}) lowered {p}'s match {prev[0]} -> "
                           f"{pr.match}, but {p} kept its disk")
            if prev is None or pr.match != prev[0]:  # the disk that held it when it was reached
                self.matches[key] = (pr.match, disk)

    def _record_commit(self, nid: str, r: Raft, lo: int, hi: int) -> None:
        later_leaders = [
            (n.id, n.raft)
            for n in self.alive()
            if n.raft is not None and n.raft.role == Role.LEADER and n.raft.term > r.term
        ]
        for i in range(lo, hi + 1):
            e = self._mem_entry(r, i)
            if e is None:
                self._fail(f"{nid}: commit {hi} covers missing entry {i}")
            prior = self.committed.get(i)
            if prior is None:
                self.committed[i] = e
                self.commit_term[i] = r.term
                for lid, lr in later_leaders:
                    if self._mem_entry(lr, i) != e:
                        self._fail(
                            f"leader completeness: {e} committed in term {r.term} by {nid}, "
                            f"leader {lid} of term {lr.term} lacks it"
                        )
            elif prior != e:
                self._fail(f"{nid}: commits {e} at {i}, but {prior} was committed there")
        self.max_committed = max(self.max_committed, hi)

    def _check_new_leader(self, nid: str, r: Raft) -> None:
        for i, e in self.committed.items():
            if self.commit_term[i] < r.term and self._mem_entry(r, i) != e:
                self._fail(
                    f"leader completeness: new leader {nid} of term {r.term} lacks "
                    f"{e} committed in term {self.commit_term[i]}"
                )

    def check_all(self) -> None:
        """Full (non-incremental) check of every node's memory and disk."""
        for node in self.nodes.values():
            disk = node.disk
            prev = disk.snapshot.meta.index if disk.snapshot else 0
            for e in disk.entries:
                if e.index != prev + 1:
                    self._fail(f"{node.id}: disk log has a gap before {e.index}")
                prev = e.index
            if disk.hard_state.commit > disk.last_index():
                self._fail(f"{node.id}: durable commit past disk end")
            for i in range(1, disk.hard_state.commit + 1):
                if self._disk_entry(disk, i) != self.committed.get(i):
                    self._fail(f"{node.id}: durable committed entry {i} differs")
            r = node.raft
            if r is None:
                continue
            self._check_log(node, r.log.first_index())
            for i in range(1, r.log.committed + 1):
                if self._mem_entry(r, i) != self.committed.get(i):
                    self._fail(f"{node.id}: committed entry {i} differs in memory")
            for e in node.sm:
                if self.applied_at.get(e.index) != e:
                    self._fail(f"{node.id}: applied {e} differs")
            if r.role == Role.LEADER:
                self._check_new_leader(node.id, r)
