"""The Raft protocol as one deterministic state machine (after etcd-io/raft's raft.go).

Nothing here reads a clock, opens a socket or touches a disk. Time enters as `tick()`, the
network as `step(message)`, requests as `propose()` / `read_index()` / `propose_conf()` /
`transfer_leader()`, and randomness from a seeded `random.Random`. The driver takes the work
out with `ready()` and reports it done with `advance()`. This is what lets the simulator replay
any failing schedule from its seed.

Section numbers refer to the Raft paper (Ongaro and Ousterhout, 2014) and, for pre-vote,
check-quorum, leadership transfer and membership, Ongaro's dissertation.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass

from . import conf as confmod
from .log import RaftLog
from .progress import Progress, ProgressState
from .quorum import VoteResult, committed_index, has_quorum, majority, vote_result
from .recovery import Recovery
from .types import (
    ConfState,
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
    SnapshotMeta,
    SoftState,
)

TRANSFER_CTX = b"transfer"
# What an empty founding member says while it asks (bootstrap, _on_probe_resp).
_ASKING = ("empty data directory: asking the founding members whether the cluster is new or "
           "this is a replaced disk")
# On a rejected PROBE_RESP: the asker had told us it finished asking (HardState.finished), so
# the directory asking now replaced the one that did.
REPLACED_CTX = b"replaced"
# On a PROBE: the asker found the cluster new and tells us so before it votes; the answer,
# sent once that is on our disk, carries FINISHED_CTX.
FINISH_CTX = b"finish"
FINISHED_CTX = b"finished"
# On every other PROBE and PROBE_RESP from this version: one without a context comes from a
# version before FINISH_CTX, which neither tells that it finished nor keeps who did.
ASK_CTX = b"ask"
ANSWER_CTX = b"answer"
# HardState.recovering while announcing (the Recovery's kind stays "empty_data_dir").
_NEW_CLUSTER = "new_cluster"
_ANNOUNCING = ("empty data directory: the founding members say the cluster is new; telling "
               "them before voting")


class DivergentLog(Exception):
    """A leader's log differs from this node's at an index this node holds as committed.
    Raft never lets that happen to a cluster's own logs (a committed entry is in every later
    leader's log, at the same index and term), so this log is another cluster's (a data
    directory restored from one with the same names) or corrupt past what checksums see. The
    node stops rather than follow, vote or serve it (stop 35's adversarial run: one such
    member was taken for repaired, voted, and served the other cluster's keys)."""


class NotLeader(Exception):
    """The request needs the leader; `leader` is who this node believes it is (or None)."""

    def __init__(self, leader: str | None):
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class ProposalDropped(Exception):
    """The leader cannot take proposals right now (a leadership transfer is under way)."""


@dataclass(slots=True)
class Config:
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_append_entries: int = 512
    max_inflight: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    # A follower in SNAPSHOT state that has not answered within this many ticks is probed
    # again (the snapshot message may have been lost).
    snapshot_retry_ticks: int = 20


@dataclass(slots=True)
class _ReadRequest:
    index: int
    ctx: bytes
    acks: set[str]


class Raft:
    def __init__(
        self,
        node_id: str,
        persisted: PersistedState,
        config: Config | None = None,
        rng: random.Random | None = None,
    ):
        """Rebuild a node from what its storage holds. Membership comes only from the log and
        the snapshot; a founding member of a new cluster calls `bootstrap` once."""
        self.id = node_id
        self.cfg = config or Config()
        self.rng = rng or random.Random(0)
        snap = persisted.snapshot
        entries = persisted.entries
        if entries and entries[0].index != (snap.meta.index if snap else 0) + 1:
            # The snapshot these entries follow is lost: without it they hang in the air.
            entries = []
        self.log = RaftLog(snap.meta if snap else None, entries)
        self.snapshot: Snapshot | None = snap
        hs = persisted.hard_state
        # Protocol-aware recovery: a node whose disk lost what it had made durable does not
        # vote, campaign or count towards a commit until a leader has repaired it. A
        # recovery under way when the node stopped is on disk too (HardState.recovering).
        self.recovery: Recovery | None = None
        if persisted.fault is not None:
            f = persisted.fault
            self.recovery = Recovery(f.kind, f.detail, durable_index=f.durable_index)
        elif hs.recovering == _NEW_CLUSTER:
            # Stopped while telling its peers that it found the cluster new: tell them again
            # (asking again, it would be a replaced disk to the peers that heard it).
            self.recovery = Recovery("empty_data_dir", _ANNOUNCING, discovering=True,
                                     announcing=True)
        elif hs.recovering:
            self.recovery = Recovery(
                hs.recovering, "a repair was under way when the node stopped"
            )
        # Peers that refused us a vote because they are recovering (status says why an
        # election cannot succeed).
        self.recovering_peers: set[str] = set()
        # The last repair: (fault kind, repair point), for the driver to report.
        self.repaired: tuple[str, int] | None = None
        self.term = hs.term
        self.vote = hs.vote
        self.finished: tuple[str, ...] | None = hs.finished
        self.log.committed = max(self.log.committed, min(hs.commit, self.log.last_index()))
        # Membership in force: the snapshot's, plus every committed change after it.
        self.conf = snap.meta.conf if snap else ConfState()
        self.conf_index = snap.meta.index if snap else 0
        # The cluster's id, once a no-op that carries it is committed here (`_noop`); the
        # driver makes the commit index durable when one commits, as for a membership change.
        self.cluster_id = snap.meta.cluster_id if snap else b""
        # A committed cluster id other than `cluster_id` (see `_learn_cluster_id`).
        self.cluster_id_conflict: bytes | None = None
        # What each peer's latest accepted stream said of the cluster id (note_peer_id): b""
        # for none; a peer missing here said nothing, as a version before cluster ids does.
        self.peer_ids: dict[str, bytes] = {}
        for e in self.log.slice(self.log.first_index(), self.log.committed + 1):
            if e.type == EntryType.CONF:
                self.conf = confmod.apply(self.conf, confmod.ConfChange.decode(e.data))
                self.conf_index = e.index
            elif e.type == EntryType.NOOP and e.data:
                self._learn_cluster_id(e.data)
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.prs: dict[str, Progress] = {}
        # Stamped on what a leader sends and echoed in answers; rises each time a follower's
        # match does, so an answer tells whether it was sent after that (see Progress).
        self._seq = 1
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_ticks
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self.reads: deque[_ReadRequest] = deque()
        self.pending_reads: list[bytes] = []
        # Members known to run on a data directory that replaced one in use (note_replaced).
        self.replaced: set[str] = set()
        self._prev_soft = SoftState(None, Role.FOLLOWER, self.term)
        self._prev_hard = HardState(self.term, self.vote, self.log.committed,
                                    finished=self.finished)
        self._reset(self.term)
        r = self.recovery
        if r is not None and r.kind == "empty_data_dir" and persisted.fault is None \
                and not r.announcing:
            # Stopped while asking whether the cluster is new: ask again if nothing
            # happened since, counting the answers heard before (HardState.heard).
            r.discovering = True
            if not self._fresh():
                r.discovering = False
            else:
                r.fresh, r.seen_term = set(hs.heard), hs.heard_term
                r.detail = self._asking_detail(r) if r.fresh else _ASKING

    # -- public API ----------------------------------------------------------------------

    def is_empty(self) -> bool:
        return self.log.last_index() == 0 and self.term == 0 and self.snapshot is None

    def bootstrap(self, members: dict[str, str], discover: bool = False) -> None:
        """Found a new cluster. Every founding member writes the same entries at indexes 1..n
        in term 1, so their logs agree from the start, and a node that joins later learns the
        founding membership by replicating them. Each entry carries the WHOLE membership, so
        a node replaying the log takes it in one step: replaying one voter at a time, a node
        that had applied only the first entry could see itself as the sole voter and elect
        itself."""
        if not self.is_empty():
            raise ValueError("bootstrap needs an empty log")
        founding = tuple(sorted(members.items()))
        data = confmod.ConfChange(confmod.ConfOp.BOOTSTRAP, "", "", founding).encode()
        ents = [Entry(i + 1, 1, EntryType.CONF, data) for i in range(len(founding))]
        self.log.append(ents)
        self.log.stable = 0
        self.term = 1
        self.finished = ()  # this directory keeps who finished asking (`_on_probe`)
        self.log.commit_to(len(ents))
        for e in ents:
            self.conf = confmod.apply(self.conf, confmod.ConfChange.decode(e.data))
            self.conf_index = e.index
        if discover and len(founding) > 1 and self.recovery is None:
            # An empty data directory is a new cluster or a replaced disk: the node cannot
            # tell which on its own, and a replaced member that voted as if new could vote
            # twice in a term or elect a leader without committed entries. It stays
            # non-voting until its peers answer (see _probe / _on_probe_resp). Not a store
            # that reported a fault with nothing readable left (every segment head lost):
            # files outlived what indexed them, so this member held data and the cluster is
            # not new whatever its peers say; it stays damaged until a leader repairs it
            # (asking, it took a wiped peer and one that never got past the founding
            # entries for a new cluster, and a second leader was elected in term 2).
            self.recovery = Recovery(
                "empty_data_dir", _ASKING, discovering=True,
            )
        self._reset(self.term)

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (used to bootstrap quickly; tests use it too)."""
        self._hup(transfer=False)

    def propose(self, payloads: list[bytes]) -> int:
        """Append client commands; returns the index of the last one. The commands are
        committed once `Ready.committed` hands them out."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee is not None:
            raise ProposalDropped("leadership transfer in progress")
        return self._append([(EntryType.NORMAL, p) for p in payloads])

    def propose_conf(self, cc: confmod.ConfChange) -> int:
        """Propose one membership change. Refused while another is unapplied, and until the
        leader has committed an entry of its own term (the fix to the single-server change
        bug described on the raft-dev list in 2015)."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee is not None:
            raise ProposalDropped("leadership transfer in progress")
        if self.pending_conf_index > self.log.applied:
            raise confmod.ConfChangeError("another membership change is in progress")
        if self.log.term(self.log.committed) != self.term:
            raise confmod.ConfChangeError("leader has not committed an entry in its term yet")
        confmod.check(self.conf, cc)
        idx = self._append([(EntryType.CONF, cc.encode())])
        self.pending_conf_index = idx
        return idx

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point (section 6.4 of the dissertation). A ReadState
        with this ctx appears in a later Ready once a quorum has confirmed leadership."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.log.term(self.log.committed) != self.term:
            # Our commit index may lag until the first entry of this term commits.
            self.pending_reads.append(ctx)
            return
        self._start_read(ctx)

    def transfer_leader(self, target: str) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self.conf.voters:
            raise ValueError(f"{target} is not a voter")
        self.lead_transferee = target
        self.election_elapsed = 0
        pr = self.prs[target]
        if pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, target, self.term))
        else:
            self._send_append(target)

    def make_snapshot(self, index: int, data: bytes) -> Snapshot:
        """Describe the state machine at applied `index` as a snapshot (for compaction)."""
        if index > self.log.applied:
            raise ValueError("cannot snapshot past the applied index")
        if self.conf_index > index:
            raise ValueError("membership changed after this index; snapshot later")
        term = self.log.term(index)
        if term is None:
            raise ValueError(f"index {index} is compacted")
        return Snapshot(SnapshotMeta(index, term, self.conf, self.cluster_id), data)

    def compact(self, snapshot: Snapshot) -> None:
        """Forget entries covered by a snapshot the driver has persisted."""
        if snapshot.meta.index <= self.log.snap.index:
            return
        self.log.compact(snapshot.meta)
        self.snapshot = snapshot

    def status(self) -> dict:
        return {
            "id": self.id,
            "role": self.role.name.lower(),
            "term": self.term,
            "leader": self.leader,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "snapshot_index": self.log.snap.index,
            "voters": sorted(self.conf.voters),
            "learners": sorted(self.conf.learners),
            "progress": {
                p: {"match": pr.match, "next": pr.next, "state": pr.state.name.lower(),
                    **({"recovering": True} if pr.recovering else {})}
                for p, pr in self.prs.items()
            } if self.role == Role.LEADER else {},
            # Who refused us a vote because it is recovering: why no leader can be elected.
            "recovering_peers": sorted(self.recovering_peers) if self.leader is None else [],
            "cluster_id": self.cluster_id.hex() or None,
        }

    # -- Ready / advance -----------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.read_states
            or self.log.pending_snapshot
            or self.log.stable < self.log.last_index()
            or self.log.committed > self.log.applied
            or self._soft_changed()
            or self._hard_changed()
        )

    def ready(self) -> Ready:
        rd = Ready()
        if self._soft_changed():
            rd.soft_state = self._soft()
        if self._hard_changed():
            rd.hard_state = self._hard()
        rd.snapshot = self.log.pending_snapshot
        rd.entries = self.log.unstable_entries()
        rd.committed = self.log.next_committed()
        rd.messages, self.msgs = self.msgs, []
        rd.read_states, self.read_states = self.read_states, []
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied everything in `rd`."""
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            self.log.pending_snapshot = None
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
            if rd.snapshot.meta.cluster_id:
                self._learn_cluster_id(rd.snapshot.meta.cluster_id)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if self.recovery is not None:
            self._check_repaired()
        for e in rd.committed:
            if e.type == EntryType.CONF and e.index > self.conf_index:
                self._apply_conf(confmod.ConfChange.decode(e.data), e.index)
            elif e.type == EntryType.NOOP and e.data:
                self._learn_cluster_id(e.data)
            self.log.applied = max(self.log.applied, e.index)
        if self.role == Role.LEADER:
            # The leader counts itself towards a commit only once the entry is on its disk.
            self.prs[self.id].maybe_update(self.log.stable)
            if self._maybe_commit():
                self._bcast_append()

    # -- stepping ------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.type == MsgType.PROBE:
            self._on_probe(m)
            return
        if m.type == MsgType.PROBE_RESP:
            self._on_probe_resp(m)
            return
        if m.term > self.term:
            if m.type == MsgType.VOTE and self.recovery is not None and self.recovery.discovering:
                # Still asking whether the cluster is new: refuse without taking the term.
                # Taken, it would make us look "not new" to the other members' probes, who
                # would then wait, non-voting, for a leader nobody can elect (found by the
                # long simulation run, seed 1065: two of five lost their first write, three
                # ended up waiting for a repair). We vote for no one and lead nothing, so an
                # older term here decides nothing.
                self._send(Message(MsgType.VOTE_RESP, self.id, m.src, self.term, reject=True,
                                   repair=1))
                return
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                force = m.context == TRANSFER_CTX
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader is not None
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if not force and in_lease:
                    # Section 4.2.3: a server that heard from a live leader within the
                    # minimum election timeout ignores a disruptive candidate.
                    return
            if m.type == MsgType.PRE_VOTE:
                pass
            elif m.type == MsgType.PRE_VOTE_RESP and not m.reject:
                pass
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.repair and m.reject and m.type in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP):
                self.recovering_peers.add(m.src)  # (its term is behind: it lost it)
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT) and (
                self.cfg.check_quorum or self.cfg.pre_vote or self.recovery is not None
            ):
                # A stale leader cut off by a partition learns our term and steps down;
                # without this it would keep disrupting us once pre-vote blocks its votes.
                # Without either option a member's campaign tells the leader of its newer
                # term, as in etcd; but one that recovers cannot campaign, and a leader
                # that never learnt its term would never repair it (simulation, seed 1079).
                self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term))
            elif m.type == MsgType.PRE_VOTE:
                self._send(
                    Message(MsgType.PRE_VOTE_RESP, self.id, m.src, self.term, reject=True)
                )
            return

        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
        if self._refuses_votes():
            # Our log (or our memory of our votes) is not what we promised: a vote from us
            # could elect a leader without committed entries, or twice in one term.
            self._send(Message(resp, self.id, m.src, self.term, reject=True, repair=1))
            return
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.leader is None)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, self.id, m.src, m.term))
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(Message(resp, self.id, m.src, self.term, reject=True))

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return
        if m.type in (MsgType.APPEND_RESP, MsgType.HEARTBEAT_RESP) and m.src != self.id:
            self._note_recovering(pr, bool(m.repair))
        if m.type == MsgType.APPEND_RESP:
            pr.recent_active = True
            if m.reject:
                if m.reject_hint < pr.match and m.seq > pr.match_seq:
                    # The follower lost entries it had acknowledged (its disk was wiped): the
                    # append it rejects left after its match rose (an older answer, late or
                    # duplicated, proves nothing). Forget what we knew and probe it afresh.
                    pr.match = m.reject_hint
                    pr.become_probe()
                    self._send_append(m.src)
                    return
                hint = m.reject_hint
                if m.log_term > 0:
                    hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, hint):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.src)
                return
            old_paused = pr.is_paused(self.cfg.max_inflight)
            if pr.maybe_update(m.index):
                pr.match_seq = self._seq
                self._seq += 1
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                if self._maybe_commit():
                    self._bcast_append()
                elif old_paused or pr.next <= self.log.last_index():
                    self._send_append(m.src)
                # Keep filling the pipeline while the follower is behind.
                while pr.state == ProgressState.REPLICATE and pr.next <= self.log.last_index():
                    if not self._send_append(m.src):
                        break
                if m.src == self.lead_transferee and pr.match == self.log.last_index():
                    self._send(Message(MsgType.TIMEOUT_NOW, self.id, m.src, self.term))
            elif pr.state == ProgressState.SNAPSHOT and m.index >= pr.pending_snapshot:
                pr.become_probe()
                self._send_append(m.src)
        elif m.type == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if m.index < pr.match and m.seq > pr.match_seq:
                # The follower holds less than it acknowledged, in answer to a heartbeat sent
                # after it acknowledged: its disk was wiped. Start over. (An answer that was
                # on its way meanwhile is stale: match never goes back for it.)
                pr.match = m.index
                pr.become_probe()
            if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
                pr.inflight.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.src)
            if m.context and not pr.learner and not pr.recovering:
                self._ack_read(m.context, m.src)

    def _step_candidate(self, m: Message) -> None:
        my_resp = MsgType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif m.type == my_resp:
            if m.reject and m.repair:
                self.recovering_peers.add(m.src)
            self.votes.setdefault(m.src, not m.reject)
            res = vote_result(self.conf.voters, self.votes)
            if res == VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif res == VoteResult.LOST:
                self._become_follower(self.term, None)

    def _step_follower(self, m: Message) -> None:
        if self.recovery is not None and m.repair and m.type in (
            MsgType.APPEND, MsgType.HEARTBEAT
        ):
            self.recovery.repair_term, self.recovery.repair_point = m.term, m.repair
        if m.type == MsgType.APPEND:
            self.election_elapsed = 0
            self.leader = m.src
            self._handle_append(m)
        elif m.type == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.leader = m.src
            self.log.commit_to(min(m.commit, self.log.last_index()))
            # Report our last index so a leader notices at once that we lost our log (a
            # replaced disk), instead of at its next append.
            self._send(
                Message(
                    MsgType.HEARTBEAT_RESP, self.id, m.src, self.term, context=m.context,
                    index=self.log.last_index(), seq=m.seq,
                )
            )
        elif m.type == MsgType.SNAPSHOT:
            self.election_elapsed = 0
            self.leader = m.src
            self._handle_snapshot(m)
        elif m.type == MsgType.TIMEOUT_NOW:
            self._hup(transfer=True)
        if self.recovery is not None:
            self._check_repaired()

    def _handle_append(self, m: Message) -> None:
        self._check_committed(m)
        if m.index < self.log.committed:
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term,
                               index=self.log.committed, seq=m.seq))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=last_new,
                               seq=m.seq))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            Message(
                MsgType.APPEND_RESP, self.id, m.src, self.term, index=m.index, reject=True,
                reject_hint=hint_index, log_term=hint_term, seq=m.seq,
            )
        )

    def _check_committed(self, m: Message) -> None:
        """What the leader sends at or below our commit index must be what we hold there
        (DivergentLog)."""
        c = self.log.committed
        if m.index > c:
            return
        for index, term in ((m.index, m.log_term), *((e.index, e.term) for e in m.entries)):
            if index > c:
                break
            t = self.log.term(index)
            if t is not None and t != term:
                raise DivergentLog(self._divergence(m.src, index, t, term))

    def _divergence(self, leader: str, index: int, ours: int, theirs: int) -> str:
        return (f"{self.id}: committed entry {index} is of term {ours} here and of term "
                f"{theirs} at the leader {leader}: this data directory's log is not this "
                f"cluster's (restored from another cluster with the same names?) or is "
                f"corrupt; stopping. Empty it to rejoin as a replaced disk")

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        meta = snap.meta
        if meta.index <= self.log.committed:
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term,
                               index=self.log.committed, seq=m.seq))
            return
        if self.log.match_term(meta.index, meta.term):
            # We already have the snapshot's entries: just commit up to it. Acknowledge only
            # meta.index (as etcd does), not our last index: entries after it may be a stale
            # tail from an older term, and the leader would count them as replicated.
            self.log.commit_to(meta.index)
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=meta.index,
                               seq=m.seq))
            return
        self.log.restore(snap)
        self.snapshot = snap
        self.conf = meta.conf
        self.conf_index = meta.index
        self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=meta.index,
                           seq=m.seq))

    # -- roles ---------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_ticks + self.rng.randrange(
            self.cfg.election_ticks
        )
        self.lead_transferee = None
        self.votes = {}
        self.reads.clear()
        self.pending_reads = []
        last = self.log.last_index()
        # sorted(): iterating a frozenset of str follows PYTHONHASHSEED, which made the order of
        # broadcast messages (and so a seeded replay) differ from one process to the next.
        self.prs = {
            p: Progress(match=0, next=last + 1, learner=p in self.conf.learners)
            for p in sorted(self.conf.members())
        }
        if self.id in self.prs:
            self.prs[self.id].match = self.log.stable

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self.recovering_peers.clear()
        for pr in self.prs.values():
            pr.recent_active = True
        # Conservatively assume an unapplied membership change may sit in our log.
        self.pending_conf_index = self.log.last_index()
        self._append([self._noop()])

    # -- cluster ids ---------------------------------------------------------------------
    #
    # Two clusters founded alike under the same names can hold the same term at every index
    # (DivergentLog sees only terms), so a data directory from one passes in the other. Each
    # cluster's first leader therefore gives it a random id, carried by its no-op; the
    # driver's transport compares the committed ids of two members at every handshake and
    # refuses a mismatch (etcd compares its cluster id in every peer request the same way).

    def note_peer_id(self, peer: str, cid: bytes | None) -> None:
        """What `peer` said of the cluster id as it dialled: its committed id, b"" for none,
        None for nothing (a version before cluster ids). Told by the driver at the
        handshake (see Node.peer_replaced for why outside the loop's pass)."""
        if cid is None:
            self.peer_ids.pop(peer, None)
        else:
            self.peer_ids[peer] = cid

    def _maybe_name_cluster(self) -> None:
        """A leader of a cluster from before cluster ids (see `_noop`) gives it one once
        every other voter has dialled it running a version that keeps ids, and knowing none:
        from then on every snapshot has a place for the id, and no member holds one that a
        snapshot of the old version could have hidden. (A member that does hold one says so,
        and then this leader makes none: a cluster downgraded and upgraded again keeps
        comparing nothing rather than risk two ids.)"""
        if self.recovery is not None or any(
                self.peer_ids.get(p) != b"" for p in self.conf.voters if p != self.id):
            return
        if not self._held_cluster_id():  # else named already, not committed yet
            self._append([(EntryType.NOOP, self._new_id())])

    def _held_cluster_id(self) -> bytes:
        """The latest cluster id a no-op in the log carries, else the compacted prefix's
        (b"" if neither has one), committed or not."""
        for e in reversed(self.log.entries):
            if e.type == EntryType.NOOP and e.data:
                return e.data
        return self.log.snap.cluster_id

    def _new_id(self) -> bytes:
        # Derived from the generator's state rather than drawn from it: a draw would shift
        # every later election timeout, and so what each simulator seed replays. A real
        # node's generator is seeded from os.urandom.
        state = repr((self.rng.getstate(), self.id, self.term, self.log.last_index())).encode()
        return hashlib.blake2b(state, digest_size=16).digest()

    def _noop(self) -> tuple[EntryType, bytes]:
        """A leader's no-op, carrying the latest cluster id its log holds (a committed one is
        in every later leader's log, and each leader since carried the same, so committed
        no-ops never disagree), or the compacted prefix's. A new one only from a leader
        whose log holds nothing past the founding entries: no entry, so no id, was ever
        committed (Leader Completeness), and this is the cluster's first leader. Any other
        leader without one leads a cluster from before cluster ids, whose id may be hidden
        in a snapshot taken by a node that predates them (stop 36's adversarial run: a
        rolling upgrade made two ids, and members refused each other): it carries none, and
        names the cluster later if it can (`_maybe_name_cluster`)."""
        cid = self._held_cluster_id() or self.cluster_id
        if not cid and self.log.last_term() <= 1:
            cid = self._new_id()
        return EntryType.NOOP, cid

    def _learn_cluster_id(self, cid: bytes) -> None:
        if not self.cluster_id:
            self.cluster_id = cid
        elif cid != self.cluster_id:
            # Committed no-ops never disagree (`_noop`): a second id is a bug or a log that
            # is not this cluster's. Keep the first, and say so (the driver logs it).
            self.cluster_id_conflict = cid

    def _promotable(self) -> bool:
        return (
            self.id in self.conf.voters
            and self.log.pending_snapshot is None
            and self.recovery is None
        )

    def _hup(self, transfer: bool) -> None:
        if self.role == Role.LEADER or not self._promotable():
            return
        # Do not lead with a stale membership: apply committed changes first.
        for e in self.log.slice(
            max(self.log.applied + 1, self.log.first_index()), self.log.committed + 1
        ):
            if e.type == EntryType.CONF:
                return
        self._campaign(pre=self.cfg.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.votes = {}
            self.leader = None
            # A pre-candidate keeps its term: a failed pre-vote disturbs nobody.
            self.election_elapsed = 0
            self.randomized_timeout = self.cfg.election_ticks + self.rng.randrange(
                self.cfg.election_ticks
            )
            term, mtype = self.term + 1, MsgType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            term, mtype = self.term, MsgType.VOTE
        self.votes[self.id] = True
        if vote_result(self.conf.voters, self.votes) == VoteResult.WON:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = TRANSFER_CTX if transfer else b""
        for p in sorted(self.conf.voters):
            if p == self.id:
                continue
            self._send(
                Message(
                    mtype, self.id, p, term, index=self.log.last_index(),
                    log_term=self.log.last_term(), context=ctx,
                )
            )

    # -- ticking -------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.recovery is not None and self.recovery.discovering:
            self._probe()
        if self._promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for pid, pr in self.prs.items():
            if pr.state == ProgressState.SNAPSHOT and pid != self.id:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.cfg.snapshot_retry_ticks:
                    pr.become_probe()
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = [p for p, pr in self.prs.items()
                          if (pr.recent_active and not pr.recovering) or p == self.id]
                for p, pr in self.prs.items():
                    if p != self.id:
                        pr.recent_active = False
                if not has_quorum(self.conf.voters, active):
                    # Section 6.2: a leader that cannot reach a majority steps down, so
                    # clients stop waiting on it.
                    self._become_follower(self.term, None)
                    return
            if self.lead_transferee is not None:
                self.lead_transferee = None  # the transfer timed out
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            ctx = self.reads[-1].ctx if self.reads else b""
            self._bcast_heartbeat(ctx)
        if not self.cluster_id:
            self._maybe_name_cluster()

    # -- replication ---------------------------------------------------------------------

    def _append(self, items: list[tuple[EntryType, bytes]]) -> int:
        last = self.log.last_index()
        ents = [Entry(last + i + 1, self.term, t, d) for i, (t, d) in enumerate(items)]
        self.log.append(ents)
        self._bcast_append()
        return self.log.last_index()

    def _maybe_commit(self) -> bool:
        mci = committed_index(
            self.conf.voters, {p: pr.match for p, pr in self.prs.items() if not pr.recovering}
        )
        # Section 5.4.2: only entries of the current term commit by counting replicas.
        if mci > self.log.committed and self.log.term(mci) == self.term:
            self.log.commit_to(mci)
            if self.pending_reads:
                pending, self.pending_reads = self.pending_reads, []
                for ctx in pending:
                    self._start_read(ctx)
            return True
        return False

    def _bcast_append(self) -> None:
        for p in self.prs:
            if p != self.id:
                self._send_append(p)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        for p, pr in self.prs.items():
            if p == self.id:
                continue
            self._send(
                Message(
                    MsgType.HEARTBEAT, self.id, p, self.term,
                    commit=min(pr.match, self.log.committed), context=ctx, seq=self._seq,
                    repair=pr.repair_point if pr.recovering else 0,
                )
            )

    def _send_append(self, to: str) -> bool:
        pr = self.prs[to]
        if pr.is_paused(self.cfg.max_inflight):
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None or pr.next < self.log.first_index():
            if self.snapshot is None:
                return False
            self._send(Message(MsgType.SNAPSHOT, self.id, to, self.term, snapshot=self.snapshot,
                               seq=self._seq))
            pr.become_snapshot(self.snapshot.meta.index)
            return True
        ents = self.log.slice(pr.next, min(self.log.last_index() + 1, pr.next + self.cfg.max_append_entries))
        self._send(
            Message(
                MsgType.APPEND, self.id, to, self.term, index=prev, log_term=prev_term,
                entries=ents, commit=self.log.committed, seq=self._seq,
                repair=pr.repair_point if pr.recovering else 0,
            )
        )
        if pr.state == ProgressState.REPLICATE:
            if ents:
                pr.next = ents[-1].index + 1
                pr.inflight.append(ents[-1].index)
        else:
            pr.probe_sent = True
        return True

    def _send(self, m: Message) -> None:
        if self.recovery is not None and m.type in (MsgType.APPEND_RESP,
                                                    MsgType.HEARTBEAT_RESP):
            m.repair = 1  # do not count me (see raft/recovery.py)
        self.msgs.append(m)

    # -- recovery (raft/recovery.py) -----------------------------------------------------

    def recover_empty(self) -> None:
        """A node that starts with an empty data directory and joins an existing cluster
        (no founding entries of its own): if it was a voter whose disk was replaced, it
        must not vote as if it remembered its votes and log, so it recovers like any
        damaged node until a leader has repaired it (a new member pays one extra entry)."""
        if self.is_empty() and self.recovery is None:
            self.recovery = Recovery(
                "empty_data_dir", "empty data directory: waiting for a leader to repair it"
            )

    def enter_recovery(self, kind: str, detail: str) -> None:
        """A fault found after start (a peer saw that this node's directory is older than
        a start of its own, starts.py): from now on it acts as a node whose store reported
        the fault at start. What it lost is not known, so it takes everything again from
        the repair on."""
        if self.recovery is not None:
            return
        self.recovery = Recovery(kind, detail)
        if self.role != Role.FOLLOWER:
            self._become_follower(self.term, None)

    def note_replaced(self, peer: str) -> None:
        """`peer`'s data directory replaced one that was in use: a peer saw a start of it
        that its chain does not continue (starts.py). A directory that keeps who finished
        asking (HardState.finished) goes by that instead: a member emptied before it finished
        asking lost nothing a vote or a commit counted on. One founded before those records
        answers its probes "not new", whatever our log holds: two members that held every
        write, back on empty disks beside a third that never saw one, must not found a new
        cluster."""
        self.replaced.add(peer)

    def _refuses_votes(self) -> bool:
        return self.recovery is not None

    def _fresh(self) -> bool:
        """We never heard of a term past 1 and never voted: as a cluster that has not
        elected anyone yet looks (the first election is in term 2, and every entry past the
        founding ones comes from a leader). Our term and vote say so only if our hard state
        is the one we wrote: not after it was lost, nor from an empty disk not yet known to
        be new."""
        r = self.recovery
        return (
            self.term <= 1 and self.vote is None and self.log.last_term() <= 1
            and (r is None or r.discovering
                 or r.kind not in ("lost_hard_state", "empty_after_use", "empty_data_dir"))
        )

    def _fresh_log(self) -> bool:
        """Our log holds only the founding entries, and we can vouch for it: what a probe
        asks. Unlike `_fresh`, our term and vote may have moved (we campaigned, or heard a
        candidate): that says some member campaigned, not that any entry was acknowledged;
        the asker takes the terms up to ours as ones it may have voted in (seed 3508: a
        member that finished asking and campaigned made both others take their new disks
        for replaced ones, and nobody could be elected)."""
        r = self.recovery
        return self.log.last_term() <= 1 and (
            r is None or r.discovering
            or r.kind not in ("lost_hard_state", "empty_after_use", "empty_data_dir"))

    def _probe(self) -> None:
        r = self.recovery
        assert r is not None
        done, ctx = (r.acked, FINISH_CTX) if r.announcing else (r.fresh, ASK_CTX)
        for p in sorted(self.conf.voters):
            if p != self.id and p not in done:
                # (A "finish" carries what an answer would: `_on_probe`.)
                self._send(Message(MsgType.PROBE, self.id, p, self.term, context=ctx,
                                   index=self.log.last_index(),
                                   log_term=self.log.last_term()))

    def _on_probe(self, m: Message) -> None:
        """Answered in any role and term, without touching ours: a probe only asks what we
        hold. Two kinds of it say more.

        FINISH: the asker found the cluster new and will vote from now on. We keep that on
        our disk (HardState.finished) before we answer (the answer goes out after this
        Ready's save), so that this member's lost votes and acknowledgements can always be
        told from none: it votes only once enough peers keep it that every majority of
        answers it could get later includes one of them (`_on_probe_resp`).

        A plain probe from a member that told us it finished: it asks again, so the directory
        that finished, and may have voted and acknowledged entries since, is gone. We say
        so. A member that never told us it finished, even one whose directory we know was in
        use (its start chain, `note_replaced`), lost nothing a vote or a commit counted on,
        and is answered as any other; unless this directory keeps no such records (founded
        by a version before them) or the asker runs such a version (its probe is not marked
        ASK_CTX): then start chains decide, as in that version."""
        if m.context == FINISH_CTX:
            # (A directory founded before these records keeps none: it never kept those of
            # the members that finished before, so start chains go on deciding there.)
            if self.finished is not None and m.src not in self.finished:
                self.finished = tuple(sorted({*self.finished, m.src}))
            self._send(Message(MsgType.PROBE_RESP, self.id, m.src, self.term,
                               context=FINISHED_CTX))
            r = self.recovery
            if r is not None and r.discovering and not r.announcing \
                    and m.src in self.conf.voters and m.log_term <= 1:
                # Its answer to our question, had it come first: it found the cluster new
                # with a log of founding entries only. Emptied before that answer reached
                # us, it could never give it again (the simulator's seed 888).
                self._heard_new(r, m.src, m.term)
            return
        gone = self.finished is not None and m.src in self.finished
        if self.finished is None or m.context != ASK_CTX:
            # A directory founded before these records, or an asker of a version that does
            # not tell when it finished: start chains (`note_replaced`) are all there is to
            # tell a directory that was in use (stop 34's adversarial run).
            gone = gone or m.src in self.replaced
        self._send(Message(MsgType.PROBE_RESP, self.id, m.src, self.term,
                           index=self.log.last_index(), log_term=self.log.last_term(),
                           reject=gone or not self._fresh_log(),
                           context=REPLACED_CTX if gone else ANSWER_CTX))

    def _on_probe_resp(self, m: Message) -> None:
        r = self.recovery
        if r is None or not r.discovering or m.src not in self.conf.voters:
            return
        if r.announcing:
            # An answer without a context is a version that keeps no record: it cannot be
            # waited for, and the older rules hold for it. Any other answer is to a question
            # asked before we decided.
            if m.context == FINISHED_CTX or (m.context == b"" and not m.reject):
                r.acked.add(m.src)
                if len(r.acked) >= self._answers_needed():
                    self._finish_asking()
                else:
                    r.detail = self._asking_detail(r)
            return
        if m.reject and m.context != REPLACED_CTX and m.log_term <= 1:
            # Only the founding entries, which it cannot vouch for (it recovers itself): no
            # answer either way. Taken as "not new", it made the asker a replaced disk too,
            # which then answered the same, until no member could lead (stop 35's adversarial
            # run: one directory emptied while five members were forming their cluster).
            if m.src not in r.unsure:
                r.unsure.add(m.src)
                r.detail = self._asking_detail(r)
            return
        if m.reject:
            r.discovering = False
            if m.context == REPLACED_CTX:
                why = (f"{m.src} knows this data directory replaced one in use (that one "
                       f"finished asking whether the cluster was new, or its start chain "
                       f"began again)")
            else:
                why = f"{m.src} holds a cluster's log (term {m.term}, last index {m.index})"
            r.detail = (f"replaced disk: {why}; this node rejoins without voting until a "
                        f"leader repairs it")
            return
        self._heard_new(r, m.src, m.term)

    def _heard_new(self, r: Recovery, src: str, term: int) -> None:
        """`src` holds only the founding entries, and answered from `term`."""
        if src not in r.fresh:
            r.fresh.add(src)
            r.detail = self._asking_detail(r)
        r.seen_term = max(r.seen_term, term)
        # A vote or an acknowledgement we may have lost was given to some majority. Hearing
        # "no entry past the founding ones" from enough peers that every majority's other
        # members include one of them proves no entry was acknowledged: the cluster is new.
        # Before voting we tell as many peers, who keep it (`_on_probe`). A directory that
        # replaces ours later needs as many answers again; twice that count exceeds the
        # other members, so one answer comes from a peer that kept it and says "replaced".
        if len(r.fresh) >= self._answers_needed():
            if self.term < r.seen_term:
                # A vote we may have given (before a disk replacement) went to a candidate
                # that asked us before we asked it: if we asked it, it answered from that
                # term or a later one. Take the highest term heard, now (on disk with the
                # decision), as one we may have voted in (`_finish_asking`).
                self._become_follower(r.seen_term, None)
            r.announcing = True
            r.detail = self._asking_detail(r)
            self._probe()

    def _asking_detail(self, r: Recovery) -> str:
        """What an operator needs while the cluster forms: who answered, and who not yet."""
        if r.announcing:
            parts = [_ANNOUNCING]
            if r.acked:
                parts.append(f"kept by {', '.join(sorted(r.acked))}")
            parts.append(f"{self._answers_needed()} needed")
            return "; ".join(parts)
        parts = [_ASKING]
        if r.fresh:
            parts.append(f"new to {', '.join(sorted(r.fresh))}")
        if r.unsure:
            parts.append(f"{', '.join(sorted(r.unsure))} cannot say (recovering)")
        parts.append(f"{self._answers_needed()} answers needed")
        return "; ".join(parts)

    def _answers_needed(self) -> int:
        n = len(self.conf.voters)
        return min(n - 1, n - majority(n) + 1)

    def _finish_asking(self) -> None:
        """Enough peers keep on their disks that we found the cluster new: we may vote from
        now on, but not again in the term we are in, if past the first: it is the highest a
        peer answered from (or a leader's), and before a disk replacement we may have voted
        in it."""
        self.recovery = None
        if self.term > 1 and self.vote is None:
            self.vote = self.id

    def _note_recovering(self, pr: Progress, recovering: bool) -> None:
        if not recovering:
            if pr.recovering:
                pr.recovering, pr.repair_point = False, 0
                if self._maybe_commit():  # its acknowledgements count again
                    self._bcast_append()
            return
        pr.recovering = True
        if pr.repair_point == 0:
            # The repair point: an entry of our term written after we heard of the fault.
            # Its commit (without the damaged node) proves our term is current.
            pr.repair_point = self.log.last_index() + 1
            self._append([self._noop()])

    def _check_repaired(self) -> None:
        r = self.recovery
        if r is None or r.discovering or not r.repair_point or r.repair_term != self.term:
            return
        p = r.repair_point
        if (
            self.leader is None or self.log.pending_snapshot is not None
            or self.log.committed < p or self.log.stable < p
            # the leader's entry, not one of ours that happens to sit at its index (a log
            # longer than the leader's held it: stop 35, F1)
            or self.log.term(p) not in (r.repair_term, None)
        ):
            return
        if self.vote is None:
            # We may have voted in this term before the fault; the leader is the one
            # candidate whose vote cannot elect a second leader in it.
            self.vote = self.leader
        self.recovery = None
        self.repaired = (r.kind, p)

    # -- ReadIndex -----------------------------------------------------------------------

    def _start_read(self, ctx: bytes) -> None:
        req = _ReadRequest(self.log.committed, ctx, {self.id})
        if has_quorum(self.conf.voters, req.acks):
            self.read_states.append(ReadState(req.index, ctx))
            return
        self.reads.append(req)
        self._bcast_heartbeat(ctx)

    def _ack_read(self, ctx: bytes, src: str) -> None:
        pos = next((i for i, r in enumerate(self.reads) if r.ctx == ctx), None)
        if pos is None:
            return
        self.reads[pos].acks.add(src)
        if not has_quorum(self.conf.voters, self.reads[pos].acks):
            return
        # A quorum confirmed us as leader after every earlier request too.
        for _ in range(pos + 1):
            r = self.reads.popleft()
            self.read_states.append(ReadState(r.index, r.ctx))

    # -- membership ----------------------------------------------------------------------

    def _apply_conf(self, cc: confmod.ConfChange, index: int) -> None:
        self.conf = confmod.apply(self.conf, cc)
        self.conf_index = index
        if self.role == Role.LEADER:
            last = self.log.last_index()
            for p in sorted(self.conf.members()):  # sorted: deterministic order (see _reset)
                if p not in self.prs:
                    self.prs[p] = Progress(match=0, next=last + 1, recent_active=True)
                self.prs[p].learner = p in self.conf.learners
            for p in list(self.prs):
                if p not in self.conf.members():
                    del self.prs[p]
            if self.id not in self.conf.voters:
                self._become_follower(self.term, None)
                return
            if self._maybe_commit():
                self._bcast_append()
        if self.lead_transferee is not None and self.lead_transferee not in self.conf.voters:
            self.lead_transferee = None

    # -- helpers -------------------------------------------------------------------------

    def _soft(self) -> SoftState:
        return SoftState(self.leader, self.role, self.term)

    # The driver asks whether there is a Ready several times per pass of its loop: these
    # compare in place rather than build a SoftState and a HardState to compare each time.
    def _soft_changed(self) -> bool:
        p = self._prev_soft
        return p.term != self.term or p.leader != self.leader or p.role != self.role

    def _hard_changed(self) -> bool:
        p = self._prev_hard
        return (p.commit != self.log.committed or p.term != self.term or p.vote != self.vote
                or p.recovering != self._recovering_mark() or p.finished != self.finished
                or (self.recovery is not None or p.heard_term or p.heard)
                and (p.heard, p.heard_term) != self._heard())

    def _recovering_mark(self) -> str:
        rec = self.recovery
        if rec is None:
            return ""
        return _NEW_CLUSTER if rec.announcing else rec.kind

    def _heard(self) -> tuple[tuple[str, ...], int]:
        """HardState.heard and heard_term: kept only while asking (an answer is one to this
        directory's question, and no later question's)."""
        r = self.recovery
        if r is None or not r.discovering or r.announcing:
            return (), 0
        return tuple(sorted(r.fresh)), r.seen_term

    def _hard(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed, self._recovering_mark(),
                         self.finished, *self._heard())
