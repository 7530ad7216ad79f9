"""Plain values exchanged between the Raft core and its drivers.

Everything here is data: no behaviour that touches time, disks or sockets. The storage layer
persists these values, the transport serializes them, the simulator copies them around.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class EntryType(IntEnum):
    NORMAL = 0
    # A configuration change: data is an encoded ConfChange (see conf.py).
    CONF = 1
    # The empty entry a new leader appends so that it can commit by counting in its own term.
    NOOP = 2


class MsgType(IntEnum):
    PRE_VOTE = 0
    PRE_VOTE_RESP = 1
    VOTE = 2
    VOTE_RESP = 3
    APPEND = 4
    APPEND_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    SNAPSHOT = 8
    TIMEOUT_NOW = 9
    # Sent by a node that starts with an empty data directory, to ask a founding peer whether
    # the cluster is new (every log holds only the founding entries) or already in use (this
    # node is a replaced disk). See Raft.bootstrap(discover=True).
    PROBE = 10
    PROBE_RESP = 11


@dataclass(slots=True, frozen=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class ConfState:
    """Cluster membership. `addrs` carries each member's network address so that a snapshot
    restores not only who is a member but also how to reach it."""

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()
    addrs: tuple[tuple[str, str], ...] = ()

    def addr_map(self) -> dict[str, str]:
        return dict(self.addrs)

    def members(self) -> frozenset[str]:
        return self.voters | self.learners


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)
    # The cluster's id as committed at or before `index` (b"" if none was yet): a node whose
    # log is compacted past the no-op that carried it still knows it (core.py, cluster ids).
    cluster_id: bytes = b""


@dataclass(slots=True, frozen=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class HardState:
    term: int = 0
    vote: str | None = None
    commit: int = 0
    # Non-empty while the node is recovering from a storage fault (the fault's kind): kept on
    # disk so that a restart in the middle of a repair does not forget it and vote.
    # "new_cluster": an empty founding member found the cluster new and is telling its peers.
    recovering: str = ""
    # Founding members that told this node they finished asking whether the cluster was new
    # (sorted): such a member may have voted since, so a later question from it means its
    # directory was emptied or replaced (raft/core.py, `_on_probe`). None: a directory
    # founded before these records were kept, which has none to go by.
    finished: tuple[str, ...] | None = None
    # While this node asks whether the cluster is new: the founding peers that answered
    # "new" (sorted), and the highest term they answered from. An answer says what the peer
    # held when it answered, and an asker has voted and acknowledged nothing since it began,
    # so the answers stay good for as long as this directory does; forgotten in a restart,
    # one from a peer emptied since could never be had again (stop 37's adversarial run, F2).
    heard: tuple[str, ...] = ()
    heard_term: int = 0


@dataclass(slots=True)
class Message:
    type: MsgType
    src: str
    dst: str
    term: int = 0
    # APPEND: index/log_term of the entry preceding `entries`.
    # *_RESP: index is the responder's match (or hint on reject).
    # VOTE / PRE_VOTE: index/log_term of the candidate's last entry.
    index: int = 0
    log_term: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    # On a rejected APPEND: the follower's best guess for where the logs agree (fast back-off).
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    # Opaque bytes echoed back in heartbeat responses; ReadIndex uses it, and a leadership
    # transfer marks its vote requests with b"transfer".
    context: bytes = b""
    # The leader's send sequence on APPEND / HEARTBEAT / SNAPSHOT, echoed in the answer: an
    # answer to a message sent before a follower's match last rose is stale, and may never
    # lower that match (0: unknown, from a node that predates the field).
    seq: int = 0
    # Protocol-aware recovery (core.py, "Recovery"). On a follower's APPEND_RESP,
    # HEARTBEAT_RESP or rejected VOTE_RESP / PRE_VOTE_RESP: 1 if it is recovering from a
    # storage fault. On a leader's APPEND / HEARTBEAT to a recovering follower: the repair
    # point, an entry of the leader's term appended after it learnt of the fault (0: none).
    repair: int = 0


@dataclass(slots=True, frozen=True)
class ReadState:
    """A ReadIndex answer: once the local state machine has applied `index`, a read issued
    under `ctx` is linearizable."""

    index: int
    ctx: bytes


@dataclass(slots=True, frozen=True)
class SoftState:
    leader: str | None
    role: Role
    term: int


@dataclass(slots=True)
class Ready:
    """What the driver must do, in order: persist `hard_state`, `snapshot` and `entries` (one
    fsync), then send `messages`, then apply `snapshot` (if any) and `committed` to the state
    machines, then call `advance(ready)`."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.entries
            or self.snapshot
            or self.committed
            or self.messages
            or self.read_states
        )


# What a store found wrong with what it had made durable (see StorageFault):
# lost_tail        entries up to `durable_index` were fsynced, the log now ends earlier;
# corrupt_entry    a record before the log's end fails its checksum (or its index is wrong);
# lost_snapshot    the snapshot the store had made durable is missing or fails its checksum;
# lost_hard_state  the term/vote the store had made durable is missing or older;
# empty_after_use  the log, snapshot and hard state are all gone, but the durable mark
#                  says this node had used them (a wiped volume with the mark surviving).
StorageFaultKind = Literal[
    "lost_tail", "corrupt_entry", "lost_snapshot", "lost_hard_state", "empty_after_use"
]


@dataclass(slots=True, frozen=True)
class StorageFault:
    """A store's finding at load time that it lost or damaged state it had made durable
    (and so may have acknowledged to the leader or used to vote): a storage fault, not a
    crash. A torn last write after a crash (never acknowledged as durable) is not one; the
    store discards it silently.

    Raft's safety assumes a disk keeps what it fsynced. A node with a fault must not vote,
    campaign or count towards a commit until the others have repaired it (protocol-aware
    recovery, Alagappan et al., FAST 2018).
    """

    kind: StorageFaultKind
    # The highest log index this node had made durable, from a high-water mark kept apart
    # from the log (0 when unknown).
    durable_index: int
    # The first index that is missing or damaged; the entries returned with the fault end
    # just before it (entries after a bad record are never returned). 0 when no entry is
    # (a lost hard state alone); 1 when nothing can be trusted (a lost snapshot, a wipe).
    first_bad_index: int
    detail: str  # for humans: which file, what was expected, what was found


@dataclass(slots=True)
class PersistedState:
    """What a restarting node reads back from disk to rebuild its core.

    `fault` is None on a healthy disk. When set, `entries` is the intact prefix only (up to
    `fault.first_bad_index - 1`), and `hard_state` / `snapshot` are what survived (a lost
    hard state comes back as HardState(); a lost snapshot as None)."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    fault: StorageFault | None = None
