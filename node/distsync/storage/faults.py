"""Tell a crash from a storage fault, as a pure function of what is on disk.

After a crash, a log may end in a torn record: the last write, never acknowledged as durable.
That is normal and is discarded. A log that ends before an index the node had made durable,
or a record that fails its checksum with durable records after it, or a missing snapshot or
hard state, is a storage fault: the node may have acknowledged or voted on what it lost
(Alagappan et al., "Protocol-Aware Recovery for Consensus-Based Storage", FAST 2018).

What the node had made durable comes from the `DurableMark`, a small record kept apart from
the log (storage/mark.py) so that losing the log's tail cannot also lose it. Without a mark
(a fresh directory, or one written before marks existed) nothing can be told apart, and no
fault is reported: an emptied directory whose mark is gone too is the Raft layer's problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..raft.types import StorageFault


@dataclass(frozen=True, slots=True)
class DurableMark:
    """What this node had made durable, written after each durable save (storage/mark.py)."""

    cluster: str = ""
    node: str = ""
    term: int = 0
    vote: str | None = None
    durable_index: int = 0  # the log's last index after the latest durable save
    snap_index: int = 0
    snap_term: int = 0
    snap_crc: int = 0

    def used(self) -> bool:
        return self.term > 0 or self.durable_index > 0 or self.snap_index > 0


@dataclass(frozen=True, slots=True)
class Found:
    """What a store read back, before judging it.

    `last_index` is the last entry of the intact prefix (the snapshot index when there is no
    entry). `bad_index` is the index of the first record that failed its checksum or was out
    of sequence (None when the log simply ends: EOF or zeros). A bad record past the mark's
    durable index is a torn last write, not a fault: that write was never acknowledged.
    """

    term: int = 0
    vote: str | None = None
    has_hard_state: bool = False
    snap_index: int = 0
    snap_term: int = 0
    snap_crc: int = 0
    snapshot_lost: bool = False  # a snapshot was referred to but is gone or fails its checksum
    last_index: int = 0
    bad_index: int | None = None

    def empty(self) -> bool:
        return (not self.has_hard_state and self.snap_index == 0 and self.last_index == 0
                and not self.snapshot_lost and self.bad_index is None)


def classify(mark: DurableMark | None, found: Found) -> StorageFault | None:
    """The fault `found` shows against `mark`; None for a healthy disk (a torn last write
    included). When several things are wrong, the kind is the one that needs the most repair
    (a lost snapshot or hard state means rejoining as a learner; lost entries can be fetched
    again), and `first_bad_index` still names the first missing or damaged entry."""
    durable = mark.durable_index if mark is not None else 0
    bad = found.bad_index if found.bad_index is not None and found.bad_index <= durable else None
    first_bad = bad if bad is not None else (
        found.last_index + 1 if found.last_index < durable else 0)
    if mark is None or not mark.used():
        return None
    if found.empty():
        return StorageFault(
            "empty_after_use", durable, 1,
            f"the log, snapshot and hard state are gone, but the durable mark says this node "
            f"had term {mark.term} and entries up to {durable}",
        )
    if found.snapshot_lost or found.snap_index < mark.snap_index or (
        mark.snap_index and found.snap_index == mark.snap_index
        and (found.snap_term, found.snap_crc) != (mark.snap_term, mark.snap_crc)
    ):
        return StorageFault(
            "lost_snapshot", durable, 1,
            f"the snapshot at index {mark.snap_index} (term {mark.snap_term}) had been made "
            f"durable; found {'a damaged one' if found.snapshot_lost else found.snap_index}",
        )
    if not found.has_hard_state or found.term < mark.term or (
        found.term == mark.term and mark.vote is not None and found.vote != mark.vote
    ):
        return StorageFault(
            "lost_hard_state", durable, first_bad,
            f"term {mark.term} vote {mark.vote!r} had been made durable; found "
            + (f"term {found.term} vote {found.vote!r}" if found.has_hard_state else "none"),
        )
    if bad is not None:
        return StorageFault(
            "corrupt_entry", durable, bad,
            f"the record of index {bad} fails its checksum; entries up to {durable} had been "
            f"made durable",
        )
    if first_bad:
        return StorageFault(
            "lost_tail", durable, first_bad,
            f"the log ends at {found.last_index} but entries up to {durable} had been made "
            f"durable",
        )
    return None
