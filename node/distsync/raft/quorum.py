"""Majority arithmetic, kept apart from the protocol so each rule can be tested on plain maps
(after etcd's quorum/majority.go)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum


class VoteResult(Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Iterable[str], match: Mapping[str, int]) -> int:
    """The highest index stored on a majority of `voters`. Absent voters count as 0."""
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not acked:
        return 0
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Iterable[str], votes: Mapping[str, bool]) -> VoteResult:
    voters = list(voters)
    if not voters:
        return VoteResult.LOST
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Iterable[str], active: Iterable[str]) -> bool:
    voters = set(voters)
    return len(voters & set(active)) >= majority(len(voters)) if voters else False
