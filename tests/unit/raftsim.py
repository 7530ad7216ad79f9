"""A seeded, deterministic network simulator for the pure Raft core (`distsync.raft.core`).

The simulator plays the role of every node's driver. For each node it keeps a simulated disk
(`Disk`: hard state, snapshot, the entries after the snapshot) and an in-memory state machine
(the sequence of applied entries), and it follows the driver contract of `Raft.ready()`:

1. persist `hard_state`, `snapshot` (replacing the whole log) and `entries` (truncating from
   `entries[0].index`, then appending) to the node's `Disk`;
2. put `messages` on the simulated network;
3. apply `snapshot.data` and then `committed` to the state machine;
4. call `advance()`.

A crash throws the `Raft` object and the state machine away; a restart rebuilds both from the
`Disk` only (a founding member whose disk is empty bootstraps again, as node.py does). A crash
can also happen in the middle of a `Ready`: the leader-pipelined message types
(APPEND/HEARTBEAT/SNAPSHOT/TIMEOUT_NOW) have been sent, nothing has been persisted.

The network is a list of in-flight messages. Tests deliver them in order (`stabilize`) or
one by one, through partitions (`cut` links) and drop filters.

This is the step-by-step harness of the paper-section tests (test_raft_paper.py) only, like
etcd's `network` in raft_test.go: those tests fix the order of single messages inside one
step, which the real driver (node.py, time-driven) cannot be asked to do. Random schedules
run through the real driver, in the whole-cluster simulation (distsync/testing/sim.py),
which checks the same invariants; this module's own random scheduler is gone.

Every action that touches a node is followed by incremental safety checks, so a violation is
reported at the step that caused it:

* election safety: at most one leader per term over the whole history;
* log matching: an (index, term) pair always denotes the same entry with the same predecessor
  term, in every node's log, ever (which by induction gives the Log Matching Property);
* leader completeness: a new leader holds every entry committed in an earlier term, and an entry
  committed in term T is in the log of every current leader of a later term;
* state machine safety: no two nodes apply different entries at one index (snapshots included);
  each node applies indexes contiguously and only committed entries;
* durability: a node's durable commit never decreases, entries at or below it are never
  truncated or changed on disk, a persisted vote never changes within a term, and a restart comes
  back to exactly the durable commit; in memory, commit never decreases;
* ReadIndex: a read state covers every entry committed anywhere before the read was requested.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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
    Ready,
    Role,
    Snapshot,
    StorageFault,
)

# Messages a leader may send before its Ready is durable (Raft thesis, section 10.2.1).
PIPELINED_TYPES = frozenset(
    {MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT, MsgType.TIMEOUT_NOW}
)


class InvariantViolation(AssertionError):
    """A Raft safety property does not hold; the message says which one and where."""


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
class Disk:
    """One node's simulated stable storage."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    # A storage fault the next load reports (set by a test that damages the disk).
    fault: StorageFault | None = None

    def snap_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    def last_index(self) -> int:
        return self.snap_index() + len(self.entries)

    def load(self) -> PersistedState:
        return PersistedState(self.hard_state, self.snapshot, list(self.entries), self.fault)


class SimNode:
    def __init__(self, node_id: str, disk: Disk):
        self.id = node_id
        self.disk = disk
        self.raft: Raft | None = None
        # The state machine: sm[i - 1] is the entry applied at index i.
        self.sm: list[Entry] = []
        self.incarnation = 0
        # Founding membership this node bootstraps with whenever its storage is empty; None
        # for a node that joins through a membership change.
        self.founders: dict[str, str] | None = None
        # The highest commit index seen in memory in this incarnation.
        self.mem_commit = 0
        self.read_states: list[ReadState] = []

    @property
    def alive(self) -> bool:
        return self.raft is not None

    def applied_data(self) -> list[bytes]:
        """Payloads of the NORMAL entries applied so far, in order."""
        return [e.data for e in self.sm if e.type == EntryType.NORMAL]


class Cluster:
    """Nodes, their disks and state machines, a network, and the safety checker."""

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
        # Founding members bootstrap with discover=True (as node.py does): an empty disk
        # asks its peers whether the cluster is new before it votes.
        self.discover = discover
        self.cfg = config or Config()
        self.nodes: dict[str, SimNode] = {}
        self.inflight: list[Message] = []
        # Directed links (src, dst) on which every message is lost.
        self.cut: set[tuple[str, str]] = set()
        # Predicates; a message for which one returns True is dropped at delivery.
        self.filters: list[Callable[[Message], bool]] = []
        # Every delivered message, when `record` is set (tests count round trips with it).
        self.record = record
        self.delivered: list[Message] = []
        self.delivered_types: Counter[MsgType] = Counter()
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
        ids = list(ids)
        if persisted is None:
            members = {i: addr_of(i) for i in ids}
            for i in ids:
                self._new_node(i, Disk(), members)
        else:
            for i in ids:
                ps = persisted.get(i, PersistedState())
                if ps.snapshot is not None:
                    self.snap_registry.setdefault(ps.snapshot.data, ())
                self._new_node(i, Disk(ps.hard_state, ps.snapshot, list(ps.entries)))

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

    # -- nodes ---------------------------------------------------------------------------

    def _rng(self, node: SimNode) -> random.Random:
        return random.Random(f"{self.seed}/{node.id}/{node.incarnation}")

    def _new_node(
        self, node_id: str, disk: Disk, founders: dict[str, str] | None = None
    ) -> SimNode:
        node = SimNode(node_id, disk)
        node.founders = founders
        self.nodes[node_id] = node
        self._start(node)
        return node

    def _start(self, node: SimNode) -> None:
        disk = node.disk
        r = node.raft = Raft(node.id, disk.load(), self.cfg, self._rng(node))
        disk.fault = None  # reported once; the core keeps it in its hard state
        expect = max(disk.snap_index(), disk.hard_state.commit)
        if r.log.committed != expect:
            self._fail(f"{node.id} restarted with commit {r.log.committed}, durable {expect}")
        node.mem_commit = r.log.committed
        snap = disk.snapshot
        node.sm = list(self.snap_registry[snap.data]) if snap and snap.meta.index else []
        self._check_log(node, r.log.first_index())
        # What the disk says is committed must agree with everything committed so far (and
        # seeds the record for clusters built from hand-made persisted states).
        self._record_commit(node.id, r, 1, r.log.committed)
        if node.founders is not None and r.is_empty():
            # Like the real node (node.py): a founding member whose storage is empty
            # bootstraps, also after a crash that came before its first Ready was persisted.
            r.bootstrap(node.founders, discover=self.discover)
        self._after(node)

    def add_node(self, node_id: str, persisted: PersistedState | None = None) -> SimNode:
        """A new, not bootstrapped node (it joins through a membership change)."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} exists")
        ps = persisted or PersistedState()
        return self._new_node(node_id, Disk(ps.hard_state, ps.snapshot, list(ps.entries)))

    def raft(self, node_id: str) -> Raft:
        r = self.nodes[node_id].raft
        if r is None:
            raise ValueError(f"{node_id} is down")
        return r

    def alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

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
        """Lose the node's memory. With `midway`, it dies in the middle of handling a Ready:
        the pipelined leader messages went out, nothing was persisted."""
        node = self.nodes[node_id]
        r = node.raft
        if r is None:
            return
        if midway and r.has_ready():
            rd = r.ready()
            for m in rd.messages:
                if m.type in PIPELINED_TYPES:
                    self.inflight.append(m)
        self.trace.append(f"crash {node_id}{' midway' if midway else ''}")
        node.raft = None
        node.sm = []
        node.read_states = []

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.raft is not None:
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
        """ReadIndex at `node_id`; the answer must cover everything committed by now."""
        self.raft(node_id).read_index(ctx)
        self.read_floor[ctx] = self.max_committed
        self.trace.append(f"read_index {node_id} {ctx!r} floor={self.max_committed}")
        self._after(self.nodes[node_id])

    def transfer_leader(self, node_id: str, target: str) -> None:
        self.raft(node_id).transfer_leader(target)
        self.trace.append(f"transfer {node_id} -> {target}")
        self._after(self.nodes[node_id])

    def campaign(self, node_id: str) -> None:
        self.raft(node_id).campaign()
        self.trace.append(f"campaign {node_id}")
        self._after(self.nodes[node_id])

    def compact(self, node_id: str, index: int | None = None) -> Snapshot | None:
        """Snapshot the node's state machine at `index` (default: applied), persist the snapshot
        and compact the log. Returns None if there is nothing new to compact."""
        node = self.nodes[node_id]
        r = self.raft(node_id)
        if index is None:
            index = r.log.applied
        if index <= r.log.snap.index:
            return None
        if len(node.sm) < index:
            self._fail(f"{node_id}: snapshot at {index} but applied only {len(node.sm)}")
        self._snap_seq += 1
        key = b"snap-%d" % self._snap_seq
        snap = r.make_snapshot(index, key)  # may raise ValueError; nothing changed then
        self.snap_registry[key] = tuple(node.sm[:index])
        disk = node.disk
        if disk.last_index() < index:
            self._fail(f"{node_id}: compacting to {index} past the disk end {disk.last_index()}")
        disk.entries = [e for e in disk.entries if e.index > index]
        disk.snapshot = snap
        r.compact(snap)
        self.trace.append(f"compact {node_id} @{index}")
        self._after(node)
        return snap

    # -- time and network ----------------------------------------------------------------

    def tick(self, *node_ids: str, n: int = 1) -> None:
        targets = node_ids or tuple(x.id for x in self.alive())
        for _ in range(n):
            for i in targets:
                node = self.nodes[i]
                if node.raft is None:
                    continue
                node.raft.tick()
                self.trace.append(("tick", i))
                self._after(node)

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
        """Deliver one message now (unless a cut or a filter drops it)."""
        if (m.src, m.dst) in self.cut or any(f(m) for f in self.filters):
            return False
        node = self.nodes.get(m.dst)
        if node is None or node.raft is None:
            return False
        self.delivered_types[m.type] += 1
        if self.record:
            self.delivered.append(m)
        self.trace.append(("deliver", m))
        node.raft.step(m)
        self._after(node)
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
        """Handle one Ready of the node, as its driver would. False if it had none."""
        node = self.nodes[node_id]
        r = node.raft
        if r is None or not r.has_ready():
            return False
        rd = r.ready()
        self.trace.append(("ready", node_id))
        self._persist(node, rd)
        self.inflight.extend(rd.messages)
        self._apply(node, rd)
        r.advance(rd)
        self._after(node)
        return True

    def process_all(self) -> bool:
        done = False
        for node_id in list(self.nodes):
            done |= self.process(node_id)
        return done

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Handle Readies and deliver messages until nothing is left to do (no ticks)."""
        for _ in range(max_rounds):
            progressed = self.process_all()
            if self.inflight:
                self.deliver_all()
                progressed = True
            if not progressed:
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

    # -- driver --------------------------------------------------------------------------

    def _persist(self, node: SimNode, rd: Ready) -> None:
        disk = node.disk
        nid = node.id
        old = disk.hard_state
        if rd.hard_state is not None:
            hs = rd.hard_state
            if hs.term < old.term:
                self._fail(f"{nid}: durable term goes back {old.term} -> {hs.term}")
            if hs.term == old.term and old.vote is not None and hs.vote != old.vote:
                self._fail(f"{nid}: durable vote in term {hs.term} changes {old.vote}->{hs.vote}")
            if hs.commit < old.commit:
                self._fail(f"{nid}: durable commit goes back {old.commit} -> {hs.commit}")
            disk.hard_state = hs
        if rd.snapshot is not None:
            if rd.snapshot.meta.index < old.commit:
                self._fail(
                    f"{nid}: snapshot at {rd.snapshot.meta.index} below durable commit "
                    f"{old.commit} would drop committed entries"
                )
            disk.snapshot = rd.snapshot
            disk.entries = []
        if rd.entries:
            first = rd.entries[0].index
            if first <= old.commit:
                self._fail(f"{nid}: persisting from {first} overwrites durable commit {old.commit}")
            si = disk.snap_index()
            if first <= si or first > disk.last_index() + 1:
                self._fail(f"{nid}: entries from {first} do not fit disk ({si}, {disk.last_index()}]")
            del disk.entries[first - si - 1 :]
            disk.entries.extend(rd.entries)
        new_commit = disk.hard_state.commit
        if new_commit > disk.last_index():
            self._fail(f"{nid}: durable commit {new_commit} past disk end {disk.last_index()}")
        for i in range(old.commit + 1, new_commit + 1):
            e = self._disk_entry(disk, i)
            if self.committed.get(i) != e:
                self._fail(f"{nid}: durable committed entry {i} is {e}, committed {self.committed.get(i)}")

    def _disk_entry(self, disk: Disk, i: int) -> Entry | None:
        si = disk.snap_index()
        if i > si:
            k = i - si - 1
            return disk.entries[k] if k < len(disk.entries) else None
        assert disk.snapshot is not None
        return self.snap_registry[disk.snapshot.data][i - 1]

    def _apply(self, node: SimNode, rd: Ready) -> None:
        nid = node.id
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            seq = self.snap_registry[rd.snapshot.data]
            if len(seq) != meta.index or (seq and seq[-1].term != meta.term):
                self._fail(f"{nid}: snapshot data does not match its meta {meta}")
            if len(node.sm) > len(seq):
                self._fail(f"{nid}: snapshot at {meta.index} behind applied {len(node.sm)}")
            for e in seq:
                if self.applied_at.get(e.index, e) != e:
                    self._fail(f"{nid}: snapshot holds {e}, applied elsewhere {self.applied_at[e.index]}")
            node.sm = list(seq)
        for e in rd.committed:
            if e.index != len(node.sm) + 1:
                self._fail(f"{nid}: applies {e.index} after {len(node.sm)}")
            prior = self.applied_at.setdefault(e.index, e)
            if prior != e:
                self._fail(f"{nid}: applies {e} where another node applied {prior}")
            if self.committed.get(e.index) != e:
                self._fail(f"{nid}: applies {e}, committed is {self.committed.get(e.index)}")
            node.sm.append(e)
        for rs in rd.read_states:
            floor = self.read_floor.pop(rs.ctx, None)
            if floor is not None and rs.index < floor:
                self._fail(f"{nid}: read {rs.ctx!r} at {rs.index} misses commit {floor}")
            node.read_states.append(rs)

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
        # Commit monotonic; record what became committed.
        c = log.committed
        if c < node.mem_commit:
            self._fail(f"{node.id}: commit went back {node.mem_commit} -> {c}")
        if c > node.mem_commit:
            self._record_commit(node.id, r, node.mem_commit + 1, c)
            node.mem_commit = c
        # Log matching for entries not yet on disk (every entry is new while unstable).
        if log.stable < log.last_index():
            self._check_log(node, log.stable + 1)
        if log.applied != len(node.sm):
            self._fail(f"{node.id}: core applied {log.applied}, state machine {len(node.sm)}")

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
