"""Each start of a member, remembered by its peers: how a data directory restored in place
from an older copy of itself is told from one that merely missed some writes.

Why: such a copy is consistent, only older, so the store finds nothing wrong with it (README,
"Storage faults"). Voting on it, the member can help elect a leader without writes it had
acknowledged (stop 34's adversarial run lost them all). What gives it away is outside the
directory: every start of a node gets a number, a random id and the id of the start before
it, written to its directory before it talks to anyone; every peer keeps, on its own disk,
the latest start it has seen of every member. A copy taken before a start a peer has seen
cannot continue that chain: started from the copy, the member's next start repeats a number
the peer knows under another id, or names a previous start the peer never saw.

The peer then refuses the member's stream and says why (HTTP 409 `rolled_back`); the member
recovers like a damaged disk (raft/recovery.py: no vote, no campaign, its acknowledgements
do not count, until a leader repairs it) and dials again as recovering, which peers accept,
taking the new chain as the one to follow.

What it cannot see: a copy from before starts that no live peer saw (the peers that saw them
were down or lost their own disks since), which looks like a member that restarted while
they were away.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["HEADER", "PeerStarts", "Start", "judge", "new_start", "parse"]

log = logging.getLogger("distsync.starts")

HEADER = "X-Distsync-Start"
ID_BYTES = 8


@dataclass(frozen=True, slots=True)
class Start:
    boot: int  # 1 for a node's first start on its directory, +1 each start after
    id: bytes  # random, this start's own
    prev: bytes  # the id of the start before it on this directory (b"": none)

    def header(self, recovering: bool) -> str:
        return f"{self.boot}.{self.id.hex()}.{self.prev.hex()}.{int(recovering)}"


def new_start(last: Start | None) -> Start:
    """The start after `last` (None: a directory never started with start chains)."""
    if last is None:
        return Start(1, os.urandom(ID_BYTES), b"")
    return Start(last.boot + 1, os.urandom(ID_BYTES), last.id)


def parse(value: str) -> tuple[Start, bool] | None:
    """(the start, whether the node says it is recovering), or None if malformed."""
    parts = value.split(".")
    if len(parts) != 4 or parts[3] not in ("0", "1"):
        return None
    try:
        boot = int(parts[0])
        sid, prev = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        return None
    if boot < 1 or len(sid) != ID_BYTES or len(prev) not in (0, ID_BYTES):
        return None
    return Start(boot, sid, prev), parts[3] == "1"


def judge(seen: tuple[int, bytes] | None, start: Start) -> str | None:
    """None if `start` may follow `seen` (the latest start of this member a peer knows of,
    as (boot, id)); otherwise why it cannot: the member's directory is older than a start
    the peer saw."""
    if seen is None:
        return None
    boot, sid = seen
    if start.boot > boot + 1:
        return None  # starts the peer did not see: it cannot check them
    if start.boot == boot + 1 and start.prev == sid:
        return None
    if start.boot == boot and start.id == sid:
        return None  # the same start, dialling again
    return (f"start {start.boot} does not follow start {boot} (id {sid.hex()}) that this "
            f"peer saw: the data directory is older than that start (restored from a copy?)")


class StartStore(Protocol):
    """Where a node keeps its own starts and its peers' (storage/wal.py, in its heads)."""

    def begin_start(self) -> Start: ...

    def peer_start(self, peer: str) -> tuple[int, bytes] | None: ...

    def note_peer_start(self, peer: str, start: Start) -> bool: ...


class PeerStarts:
    """A node's side of start chains, for its transport (wired in realparts.py): the start
    it announces when it dials, the check of each peer that dials it, and what it does when
    a peer refuses it. Construction is this node's start: it is made durable first."""

    def __init__(self, node_id: str, store: StartStore, recovering: Callable[[], bool],
                 on_rolled_back: Callable[[str, str], None]) -> None:
        self._id = node_id
        self._store = store
        self._recovering = recovering
        self._on_rolled_back = on_rolled_back
        self.start = store.begin_start()

    def header(self) -> str:
        """What this node announces when it dials (recovering as it is at that moment)."""
        return self.start.header(self._recovering())

    def check(self, peer: str, value: str | None) -> str | None:
        """None to take `peer`'s stream (its start remembered, durably, first); otherwise
        why not. A peer that says it is recovering is taken whatever its chain: it counts
        for nothing until repaired, and its new chain is the one to follow from now on."""
        if value is None:
            return None  # a peer from before start chains: nothing to check it against
        got = parse(value)
        if got is None:
            return f"malformed {HEADER} header"
        start, recovering = got
        why = None if recovering else judge(self._store.peer_start(peer), start)
        if why is None and self._store.note_peer_start(peer, start):
            log.info("%s: %s is on its start %d%s", self._id, peer, start.boot,
                     " (recovering)" if recovering else "")
        return why

    def refused(self, peer: str, detail: str) -> None:
        self._on_rolled_back(peer, detail)
