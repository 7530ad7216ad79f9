"""Each start of a member, remembered by its peers: how a data directory restored in place
from an older copy of itself is told from one that merely missed some writes.

Why: such a copy is consistent, only older, so the store finds nothing wrong with it (README,
"Storage faults"). Voting on it, the member can help elect a leader without writes it had
acknowledged (stop 34's adversarial run lost them all). What gives it away is outside the
directory: every start of a node gets a number and a random id, kept with the ids of the
starts before it and written to its directory before it talks to anyone; every peer keeps, on
its own disk, the latest start it has seen of every member. A copy taken before a start a
peer has seen cannot continue that chain: started from the copy (once or many times), the
member's chain holds another id at that start's number, or is behind it.

The peer then refuses the member's stream and says why (HTTP 409 `rolled_back`); the member
recovers like a damaged disk (raft/recovery.py: no vote, no campaign, its acknowledgements
do not count, until a leader repairs it) and dials again as recovering, which peers accept,
taking the new chain as the one to follow.

The same record tells a founding member's empty data directory, which cannot say whether the
cluster is new or its disk was replaced (raft/core.py asks the founding members), from a new
one: a peer that saw a start of it before its chain began again knows that the directory
behind that start was in use, and says "not new" (stop 34's adversarial run: two members
that held every write came back empty next to a third that never saw a write, and the
three founded a new cluster without them). Since stop 37 only a peer whose directory was
founded before raft/core.py kept who finished asking (HardState.finished) answers so: the
others go by that record, which also lets a member emptied before it finished asking, and
so never voted, be asked again rather than wait for a repair no leader could make.

What it cannot see: a copy from before starts that no live peer saw (the peers that saw them
were down or lost their own disks since), which looks like a member that restarted while
they were away; a peer away for more than HISTORY of a member's starts, which cannot check
the chain and takes it; a copy from before start chains existed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = ["HEADER", "PeerStarts", "Seen", "Start", "breaks", "judge", "new_start", "parse"]

log = logging.getLogger("distsync.starts")

HEADER = "X-Distsync-Start"
ID_BYTES = 8
# How many of its latest starts' ids a node keeps and announces: a peer that saw one of
# them can tell whether the chain continues it (a peer away for more starts than this
# cannot, and takes it).
HISTORY = 16


@dataclass(frozen=True, slots=True)
class Start:
    boot: int  # 1 for the first start of a chain on this directory, +1 each start after
    ids: tuple[bytes, ...]  # random ids of this start and the ones before it, newest first

    @property
    def id(self) -> bytes:
        return self.ids[0]

    def header(self, recovering: bool) -> str:
        return f"{self.boot}.{int(recovering)}." + ".".join(i.hex() for i in self.ids)


def new_start(last: Start | None) -> Start:
    """The start after `last` (None: a directory with no chain yet: new, emptied, or with
    its heads lost)."""
    fresh = os.urandom(ID_BYTES)
    if last is None:
        return Start(1, (fresh,))
    return Start(last.boot + 1, (fresh, *last.ids[: HISTORY - 1]))


def parse(value: str) -> tuple[Start, bool] | None:
    """(the start, whether the node says it is recovering), or None if malformed."""
    parts = value.split(".")
    if len(parts) < 3 or parts[1] not in ("0", "1"):
        return None
    try:
        boot = int(parts[0])
        ids = tuple(bytes.fromhex(p) for p in parts[2:])
    except ValueError:
        return None
    if boot < 1 or len(ids) > min(boot, HISTORY) or any(len(i) != ID_BYTES for i in ids):
        return None
    return Start(boot, ids), parts[1] == "1"


class Seen(NamedTuple):
    """The latest start of a member that a peer has seen."""

    boot: int
    id: bytes
    # Its chain began after another one of this member that the peer had seen: the data
    # directory behind it replaced (or emptied) one that was in use, which is never a new
    # cluster's (PeerStarts.check; raft/core.py answers the member's probes so).
    replaced: bool = False


def breaks(seen: tuple[int, bytes] | None, start: Start) -> str | None:
    """None if `start` continues `seen` (the latest start of this member a peer knows of,
    as (boot, id)), or cannot be checked against it; otherwise why not."""
    if seen is None:
        return None
    boot, sid = seen[0], seen[1]
    if start.boot == 1 and (boot, sid) != (1, start.id):
        return (f"a new chain of starts, where this peer saw start {boot} (id {sid.hex()}): "
                f"the data directory was emptied or replaced since")
    if start.boot < boot:
        return (f"start {start.boot} is older than start {boot} that this peer saw: the data "
                f"directory is older than that start (restored from a copy?)")
    back = start.boot - boot
    if back >= len(start.ids) or start.ids[back] == sid:
        return None  # continues it, or more starts since than its history shows
    return (f"start {start.boot} does not continue start {boot} (id {sid.hex()}) that this "
            f"peer saw: the data directory is older than that start (restored from a copy?)")


def judge(seen: tuple[int, bytes] | None, start: Start) -> str | None:
    """None if a peer that saw `seen` may take `start`'s stream; otherwise why not: the
    member's directory is older than a start the peer saw.

    A chain that begins at this start (boot 1) is taken: its directory had none, so it was
    new, emptied or lost its heads, and each of those starts as recovering until a leader
    repairs it or, founding a cluster, until its peers say the cluster is new (which one
    that saw another chain of it never says); a copy restored from after any start has a
    chain of its own to continue. (A copy from before start chains existed starts at 1 too:
    not caught.)"""
    return None if start.boot == 1 else breaks(seen, start)


class StartStore(Protocol):
    """Where a node keeps its own starts and its peers' (storage/wal.py, in its heads)."""

    def begin_start(self) -> Start: ...

    def peer_start(self, peer: str) -> Seen | None: ...

    def note_peer_start(self, peer: str, start: Start, replaced: bool = False) -> bool: ...


class PeerStarts:
    """A node's side of start chains, for its transport (wired in realparts.py): the start
    it announces when it dials, the check of each peer that dials it, and what it does when
    a peer refuses it. Construction is this node's start: it is made durable first."""

    def __init__(self, node_id: str, store: StartStore, recovering: Callable[[], bool],
                 on_rolled_back: Callable[[str, str], None],
                 on_replaced: Callable[[str], None] | None = None) -> None:
        self._id = node_id
        self._store = store
        self._recovering = recovering
        self._on_rolled_back = on_rolled_back
        self._on_replaced = on_replaced
        self._doubted: set[tuple[str, str]] = set()  # refusals not believed, warned of once
        # For /v1/status: peers whose streams this node refuses now, and peers that refuse
        # this node's without being believed (until a stream of each is taken again).
        self.refusing: dict[str, str] = {}
        self.refused_by: dict[str, str] = {}
        # Which of those are for a cluster id ("refusing" or "refused_by", peer), not a start.
        self.foreign: set[tuple[str, str]] = set()
        # Peers whose refusal this node believed, until they take a stream (header).
        self._owed: set[str] = set()
        # Whether this node has been recovering in this run: its records of its peers may
        # then be stale (a restored copy's are as old as the rest of it), and each peer's
        # first start seen since is taken and recorded, not judged (`_since`).
        self._suspect = False
        self._since: set[str] = set()
        self.start = store.begin_start()

    def header(self, peer: str | None = None) -> str:
        """What this node announces when it dials `peer`: recovering as it is at that moment,
        or still, to a peer whose refusal it believed and that has not taken a stream of it
        since (a leader can repair it before its next dial to that peer, and announced as
        healthy it would be refused again, and recover again, over and over)."""
        recovering = self._recovering()
        if recovering:
            self._distrust_records()
        return self.start.header(recovering or peer in self._owed)

    def _distrust_records(self) -> None:
        """This node is recovering: its records of its peers may be stale from now on."""
        if not self._suspect:
            self._suspect = True
            self._since.clear()

    def check(self, peer: str, value: str | None) -> str | None:
        """None to take `peer`'s stream (its start remembered, durably, first); otherwise
        why not. A peer that says it is recovering is taken whatever its chain: it counts
        for nothing until repaired, and its new chain is the one to follow from now on.

        A chain taken that does not continue the one seen (a new chain on an emptied or
        replaced directory, or a recovering copy's) is remembered as replacing a directory
        that was in use, and so are the starts that continue it: `on_replaced` is told
        before the stream carries anything, so that the member's first question (is the
        cluster new?) already gets the answer no."""
        if value is None:
            return None  # a peer from before start chains: nothing to check it against
        got = parse(value)
        if got is None:
            return f"malformed {HEADER} header"
        start, recovering = got
        seen = self._store.peer_start(peer)
        # A node recovering from a storage fault refuses no one: its records of its peers
        # may be what is out of date (a restored copy's are as old as the rest of it; stop
        # 35's adversarial run had one push a repaired peer into recovery). It records what
        # it sees, and once repaired judges a peer only by a record made since.
        self_recovering = self._recovering()
        if self_recovering:
            self._distrust_records()
        stale = self._suspect and peer not in self._since
        if self._suspect:
            self._since.add(peer)
        why = None if recovering or stale or self_recovering else judge(seen, start)
        if why is not None:
            self.refusing[peer] = why
            self.foreign.discard(("refusing", peer))
            return why
        self.refusing.pop(peer, None)
        self.foreign.discard(("refusing", peer))
        broken = breaks(seen, start)
        replaced = broken is not None or (seen is not None and seen.replaced)
        if self._store.note_peer_start(peer, start, replaced):
            if broken is not None:
                log.warning("%s: %s is on start %d of %s: %s", self._id, peer, start.boot,
                            "a new chain" if start.boot == 1 else "another chain", broken)
            else:
                log.info("%s: %s is on its start %d%s", self._id, peer, start.boot,
                         " (recovering)" if recovering else "")
        if replaced and self._on_replaced is not None:
            self._on_replaced(peer)
        return None

    def refused(self, peer: str, detail: str, their_start: str | None = None) -> None:
        """`peer` refused this node's stream, saying that this directory is older than a
        start of it the peer saw. Believed (this node then recovers) unless the peer's own
        start, sent with the refusal, does not continue the one of it this node saw: then
        one of the two directories is not what the other knew (another cluster's with the
        same names, or restored), this node cannot tell which, and a refusal must not let
        one foreign member put healthy ones into recovery, one after another, until none
        can lead (stop 35). The two then refuse each other; the member that is out of place
        stays shut out, and the others keep their votes."""
        got = parse(their_start) if their_start is not None else None
        if got is not None:
            why = breaks(self._store.peer_start(peer), got[0])
            if why is not None:
                self.refused_by[peer] = f"{detail}; not believed: {why}"
                self.foreign.discard(("refused_by", peer))
                lvl = logging.DEBUG if (peer, why) in self._doubted else logging.WARNING
                self._doubted.add((peer, why))
                log.log(lvl, "%s: %s refused this node (%s), but is not the member this node "
                        "knew: %s; not believed", self._id, peer, detail, why)
                return
        self._owed.add(peer)
        self._distrust_records()
        self._on_rolled_back(peer, detail)

    def refuse_foreign(self, peer: str, why: str) -> None:
        """This node refused `peer`'s stream: its committed cluster id is not ours
        (transport/peer.py). Kept for status until a stream of it is taken."""
        self.refusing[peer] = why
        self.foreign.add(("refusing", peer))

    def refused_as_foreign(self, peer: str, detail: str) -> None:
        """`peer` refused this node's stream as another cluster's. Never believed as a storage
        fault: one of the two directories is foreign, and neither can tell which."""
        if peer not in self.refused_by:
            log.error("%s: %s refused this node %s", self._id, peer, detail)
        self.refused_by[peer] = detail
        self.foreign.add(("refused_by", peer))

    def connected(self, peer: str) -> None:
        """`peer` took this node's stream: whatever it refused before is over."""
        self.refused_by.pop(peer, None)
        self.foreign.discard(("refused_by", peer))
        self._owed.discard(peer)

    def status(self) -> dict[str, dict[str, str]]:
        """What /v1/status shows of refused streams (README, "Storage faults")."""
        return {"refusing": dict(self.refusing), "refused_by": dict(self.refused_by)}
