"""Property tests for the Raft core's pure parts: majority arithmetic (quorum.py) and
single-server membership changes (conf.py), against brute-force definitions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.raft import conf as confmod
from distsync.raft.conf import ConfChange, ConfChangeError, ConfOp
from distsync.raft.quorum import VoteResult, committed_index, has_quorum, majority, vote_result
from distsync.raft.types import ConfState

NAMES = [f"n{i}" for i in range(1, 10)]
ids = st.sampled_from(NAMES)
voter_sets = st.frozensets(ids, max_size=9)
match_maps = st.dictionaries(ids, st.integers(min_value=0, max_value=20), max_size=9)
vote_maps = st.dictionaries(ids, st.booleans(), max_size=9)


def brute_committed(voters: frozenset[str], match: dict[str, int]) -> int:
    """The largest index i such that a strict majority of voters has match >= i."""
    if not voters:
        return 0
    best = 0
    for i in range(0, max([0, *match.values()]) + 1):
        if sum(1 for v in voters if match.get(v, 0) >= i) * 2 > len(voters):
            best = i
    return best


@settings(max_examples=400, deadline=None)
@given(voter_sets, match_maps)
def test_committed_index_is_the_highest_majority_index(
    voters: frozenset[str], match: dict[str, int]
) -> None:
    assert committed_index(voters, match) == brute_committed(voters, match)


@settings(max_examples=200, deadline=None)
@given(voter_sets, match_maps, ids, st.integers(min_value=0, max_value=20))
def test_committed_index_is_monotonic_in_acks(
    voters: frozenset[str], match: dict[str, int], who: str, bump: int
) -> None:
    before = committed_index(voters, match)
    more = dict(match)
    more[who] = more.get(who, 0) + bump
    assert committed_index(voters, more) >= before


@settings(max_examples=200, deadline=None)
@given(voter_sets, match_maps, st.dictionaries(st.sampled_from(["x1", "x2"]), st.integers(0, 50)))
def test_committed_index_ignores_non_voters(
    voters: frozenset[str], match: dict[str, int], strangers: dict[str, int]
) -> None:
    assert committed_index(voters, {**match, **strangers}) == committed_index(voters, match)


def brute_vote(voters: frozenset[str], votes: dict[str, bool]) -> VoteResult:
    """WON iff a majority granted; LOST iff a majority can no longer be reached."""
    if not voters:
        return VoteResult.LOST
    granted = {v for v in voters if votes.get(v) is True}
    possible = {v for v in voters if votes.get(v) is not False}
    if len(granted) * 2 > len(voters):
        return VoteResult.WON
    if len(possible) * 2 <= len(voters):
        return VoteResult.LOST
    return VoteResult.PENDING


@settings(max_examples=400, deadline=None)
@given(voter_sets, vote_maps)
def test_vote_result_matches_definition(voters: frozenset[str], votes: dict[str, bool]) -> None:
    assert vote_result(voters, votes) == brute_vote(voters, votes)


@settings(max_examples=200, deadline=None)
@given(voter_sets, vote_maps, ids, st.booleans())
def test_vote_result_decisions_are_final(
    voters: frozenset[str], votes: dict[str, bool], who: str, vote: bool
) -> None:
    """Once WON or LOST, a further vote (from a voter who has not voted) cannot change it."""
    res = vote_result(voters, votes)
    if res != VoteResult.PENDING and who not in votes:
        assert vote_result(voters, {**votes, who: vote}) == res


@settings(max_examples=200, deadline=None)
@given(voter_sets, st.frozensets(st.sampled_from([*NAMES, "x1"])))
def test_has_quorum_matches_definition(voters: frozenset[str], active: frozenset[str]) -> None:
    expected = bool(voters) and len(voters & active) * 2 > len(voters)
    assert has_quorum(voters, active) == expected


@pytest.mark.parametrize("n,need", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(n: int, need: int) -> None:
    assert majority(n) == need


# -- membership changes ----------------------------------------------------------------------


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    members = draw(st.lists(ids, unique=True, max_size=7))
    voters = frozenset(m for m in members if draw(st.booleans()))
    learners = frozenset(members) - voters
    addrs = tuple(sorted((m, f"{m}:7000") for m in members))
    return ConfState(voters, learners, addrs)


# BOOTSTRAP is not a single-server step (it founds a cluster); it has its own test below.
SINGLE_STEPS = [op for op in ConfOp if op != ConfOp.BOOTSTRAP]
changes = st.builds(ConfChange, st.sampled_from(SINGLE_STEPS), ids, st.sampled_from(["", "h:1"]))


def is_valid(conf: ConfState, cc: ConfChange) -> bool:
    try:
        confmod.check(conf, cc)
    except ConfChangeError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(conf_states(), changes)
def test_check_accepts_exactly_the_single_server_steps(conf: ConfState, cc: ConfChange) -> None:
    """The definition of a valid step, written out independently of conf.check."""
    n = cc.node_id
    if cc.op in (ConfOp.ADD_LEARNER, ConfOp.ADD_VOTER):
        expected = n not in conf.voters and n not in conf.learners
    elif cc.op == ConfOp.PROMOTE:
        expected = n in conf.learners
    else:
        expected = (n in conf.voters or n in conf.learners) and conf.voters != {n}
    assert is_valid(conf, cc) == expected


@settings(max_examples=500, deadline=None)
@given(conf_states(), changes)
def test_apply_is_a_single_server_step(conf: ConfState, cc: ConfChange) -> None:
    new = confmod.apply(conf, cc)
    if not is_valid(conf, cc):
        assert new == conf, "an invalid change must leave the configuration as it was"
        return
    n = cc.node_id
    # Exactly the named member changes; everyone else keeps role and address.
    assert new.voters - {n} == conf.voters - {n}
    assert new.learners - {n} == conf.learners - {n}
    old_addrs, new_addrs = conf.addr_map(), new.addr_map()
    assert {k: v for k, v in new_addrs.items() if k != n} == {
        k: v for k, v in old_addrs.items() if k != n
    }
    # At most one voter is added or removed, so old and new majorities intersect.
    assert len(new.voters ^ conf.voters) <= 1
    assert not new.voters & new.learners
    assert set(new_addrs) == set(new.members())
    assert list(new.addrs) == sorted(new.addrs)
    if cc.op == ConfOp.ADD_LEARNER:
        assert n in new.learners and new_addrs[n] == cc.addr
    elif cc.op == ConfOp.ADD_VOTER:
        assert n in new.voters and new_addrs[n] == cc.addr
    elif cc.op == ConfOp.PROMOTE:
        assert n in new.voters and n not in new.learners
        assert new_addrs[n] == (cc.addr or old_addrs[n])
    else:
        assert n not in new.members() and (new.voters or not conf.voters)
    if conf.voters and new.voters:
        # Any majority of the old voters meets any majority of the new ones.
        both = conf.voters | new.voters
        assert majority(len(conf.voters)) + majority(len(new.voters)) > len(both)


@settings(max_examples=200, deadline=None)
@given(conf_states(), st.lists(changes, max_size=12))
def test_apply_sequence_is_deterministic_and_well_formed(
    conf: ConfState, ccs: list[ConfChange]
) -> None:
    """Every node applying the same log (round-tripped through the codec) ends in the same,
    well-formed configuration."""
    a = b = conf
    for cc in ccs:
        a = confmod.apply(a, cc)
        b = confmod.apply(b, ConfChange.decode(cc.encode()))
    assert a == b
    assert not a.voters & a.learners
    assert set(a.addr_map()) == set(a.members())
    if conf.voters:
        assert a.voters, "the last voter can never be removed"


@given(changes)
def test_conf_change_codec_roundtrip(cc: ConfChange) -> None:
    assert ConfChange.decode(cc.encode()) == cc


@settings(max_examples=300, deadline=None)
@given(conf_states(), st.dictionaries(ids, st.sampled_from(["h:1", "h:2"]), max_size=5))
def test_bootstrap_founds_only_an_empty_cluster_and_takes_all_members_at_once(
    conf: ConfState, members: dict[str, str]
) -> None:
    from distsync.raft import conf as confmod

    cc = ConfChange(ConfOp.BOOTSTRAP, "", "", tuple(sorted(members.items())))
    assert ConfChange.decode(cc.encode()) == cc
    new = confmod.apply(conf, cc)
    if conf.members() or not members:
        assert new == conf
    else:
        assert new.voters == frozenset(members) and not new.learners
        assert new.addr_map() == members
        # Applying it again (the later founding entries) changes nothing.
        assert confmod.apply(new, cc) == new
