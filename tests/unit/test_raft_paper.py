"""Targeted scenarios for the Raft core, named after the sections of the Raft paper (Ongaro and
Ousterhout, 2014) and of Ongaro's dissertation, in the spirit of etcd's raft_paper_test.go.

Each test drives a `raftsim.Cluster`, which also checks the global safety invariants after
every step (election safety, log matching, leader completeness, state machine safety,
durability); the assertions here check the behaviour each section prescribes.
"""

from __future__ import annotations

import random

import pytest
from raftsim import Cluster, addr_of

from distsync.raft.conf import ConfChange, ConfChangeError, ConfOp
from distsync.raft.core import Config, NotLeader, ProposalDropped, Raft
from distsync.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    PersistedState,
    Role,
    Snapshot,
    SnapshotMeta,
)


def ids(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def make(n: int = 3, seed: int = 0, **cfg: object) -> Cluster:
    c = Cluster(ids(n), seed=seed, config=Config(**cfg), record=True)  # type: ignore[arg-type]
    c.stabilize()
    return c


def elected(n: int = 3, leader: str = "n1", seed: int = 0, **cfg: object) -> Cluster:
    c = make(n, seed, **cfg)
    c.elect(leader)
    c.stabilize()
    return c


def role(c: Cluster, nid: str) -> Role:
    return c.raft(nid).role


def term(c: Cluster, nid: str) -> int:
    return c.raft(nid).term


def applied(c: Cluster, nid: str) -> list[bytes]:
    return c.nodes[nid].applied_data()


def log_of(c: Cluster, nid: str) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, e.data) for e in c.raft(nid).log.entries]


def boot_entries(members: list[str]) -> list[Entry]:
    """The founding configuration entries that `Raft.bootstrap` writes."""
    founding = tuple((m, addr_of(m)) for m in sorted(members))
    data = ConfChange(ConfOp.BOOTSTRAP, "", "", founding).encode()
    return [Entry(i + 1, 1, EntryType.CONF, data) for i in range(len(founding))]


def run_until(c: Cluster, cond: object, max_ticks: int = 200) -> int:
    """Tick and stabilize until `cond()` holds; returns the ticks it took."""
    for t in range(max_ticks):
        if cond():  # type: ignore[operator]
            return t
        c.run(1)
    raise AssertionError(f"condition not reached within {max_ticks} ticks")


# -- 5.2 Leader election ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 5])
def test_5_2_leader_elected_by_timeout_and_followers_learn_it(n: int) -> None:
    c = make(n)
    assert c.leader() is None
    ticks = run_until(c, lambda: c.leader() is not None)
    assert ticks <= 2 * c.cfg.election_ticks + 2
    ld = c.leader()
    assert ld is not None
    for nid in ids(n):
        assert c.raft(nid).leader == ld
        assert term(c, nid) == term(c, ld)
    assert [x for x in ids(n) if role(c, x) == Role.LEADER] == [ld]


def test_5_2_votes_once_per_term_so_one_leader_per_term() -> None:
    # Without pre-vote both campaigns go straight to term 2.
    c = make(3, pre_vote=False)
    c.campaign("n1")
    c.campaign("n2")
    c.process_all()
    # n3 sees n1's request first, grants it, and must refuse n2 in the same term.
    c.inflight.sort(key=lambda m: (m.dst != "n3", m.src != "n1"))
    c.stabilize()
    assert term(c, "n1") == term(c, "n2") == 2
    assert c.raft("n3").vote == "n1"
    assert role(c, "n1") == Role.LEADER
    assert role(c, "n2") == Role.FOLLOWER
    assert c.leaders == {2: "n1"}
    vote_resps = [m for m in c.delivered if m.type == MsgType.VOTE_RESP and m.src == "n3"]
    assert [(m.dst, m.reject) for m in vote_resps] == [("n1", False), ("n2", True)]


def test_5_2_one_leader_per_term_when_an_old_leader_lingers() -> None:
    # Without check-quorum the cut-off leader keeps believing it leads: two nodes say
    # "leader", but never in the same term.
    c = elected(5, check_quorum=False)
    c.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    c.elect("n3")
    assert role(c, "n1") == Role.LEADER and role(c, "n3") == Role.LEADER
    assert term(c, "n1") < term(c, "n3")
    assert c.leaders[term(c, "n1")] == "n1" and c.leaders[term(c, "n3")] == "n3"
    # The old leader cannot commit anything any more.
    idx = c.propose("n1", b"lost")
    c.run(5)
    assert c.raft("n1").log.committed < idx
    c.heal()
    run_until(c, lambda: role(c, "n1") == Role.FOLLOWER and c.raft("n1").leader == "n3")
    assert b"lost" not in applied(c, "n1")


def test_5_2_split_vote_resolved_by_randomized_timeouts() -> None:
    c = make(3, pre_vote=False)
    for nid in ids(3):
        c.campaign(nid)
    c.stabilize()
    # Everyone voted for itself in term 2: nobody won.
    assert c.leader() is None
    assert {term(c, x) for x in ids(3)} == {2}
    timeouts = [c.raft(x).randomized_timeout for x in ids(3)]
    et = c.cfg.election_ticks
    assert all(et <= t < 2 * et for t in timeouts)
    ticks = run_until(c, lambda: c.leader() is not None, max_ticks=10 * et)
    ld = c.leader()
    assert ld is not None and term(c, ld) > 2
    assert ticks < 2 * et + 1
    # Randomized timeouts differ between nodes (and from one election to the next).
    seen = {c.raft(x).randomized_timeout for x in ids(3)}
    assert len(set(timeouts) | seen) > 1


@pytest.mark.parametrize("seed", range(20))
def test_5_2_repeated_split_votes_always_end(seed: int) -> None:
    c = make(5, seed=seed, pre_vote=False, election_ticks=5)
    for nid in ids(5):
        c.campaign(nid)
    run_until(c, lambda: c.leader() is not None, max_ticks=100)
    assert len(c.leaders_now()) == 1


def test_5_2_candidate_steps_down_for_leader_of_its_term() -> None:
    c = make(3, pre_vote=False)
    c.campaign("n1")
    c.campaign("n2")
    c.process_all()
    # n2's requests are lost; n1 wins with n3's vote.
    c.take(lambda m: m.src == "n2")
    c.stabilize()
    assert role(c, "n1") == Role.LEADER
    assert role(c, "n2") == Role.FOLLOWER and c.raft("n2").leader == "n1"
    assert term(c, "n2") == term(c, "n1") == 2


def test_5_2_candidate_steps_down_on_higher_term() -> None:
    c = elected(3, pre_vote=False, check_quorum=False)
    c.isolate("n3")
    c.campaign("n3")
    c.stabilize()
    assert role(c, "n3") == Role.CANDIDATE and term(c, "n3") == 3
    c.heal()
    c.isolate("n1")
    c.campaign("n2")
    c.campaign("n2")
    assert role(c, "n2") == Role.CANDIDATE and term(c, "n2") == 4
    c.stabilize()
    # n2's term-4 vote request reached n3, a term-3 candidate: n3 stepped down and voted.
    assert role(c, "n3") == Role.FOLLOWER
    assert term(c, "n3") == 4 and c.raft("n3").vote == "n2"
    assert role(c, "n2") == Role.LEADER


def test_5_2_leader_steps_down_on_higher_term() -> None:
    c = elected(3, pre_vote=False, check_quorum=False)
    c.isolate("n3")
    c.campaign("n3")
    c.stabilize()
    assert term(c, "n3") == 3
    c.heal()
    c.campaign("n3")
    c.process("n3")
    [req] = c.take(lambda m: m.dst == "n1")
    assert req.type == MsgType.VOTE and req.term == 4
    c.deliver(req)
    # The leader learnt of term 4 and stepped down at once.
    assert role(c, "n1") == Role.FOLLOWER and term(c, "n1") == 4
    c.stabilize()
    ld = c.leader()
    assert ld is not None and term(c, ld) == 4


def test_5_2_non_leader_refuses_proposals_and_names_the_leader() -> None:
    c = elected(3)
    with pytest.raises(NotLeader) as ei:
        c.propose("n2", b"x")
    assert ei.value.leader == "n1"
    with pytest.raises(NotLeader):
        c.raft("n2").read_index(b"r")
    with pytest.raises(NotLeader):
        c.raft("n3").transfer_leader("n1")


# -- 5.3 Log replication ---------------------------------------------------------------------


def test_5_3_leader_replicates_and_commits_on_a_majority() -> None:
    c = elected(5)
    c.isolate("n4")
    c.isolate("n5")
    c.cut.discard(("n4", "n5"))
    c.cut.discard(("n5", "n4"))
    i1 = c.propose("n1", b"a")
    c.stabilize()
    # n1, n2, n3 are a majority of five.
    for nid in ("n1", "n2", "n3"):
        assert c.raft(nid).log.committed >= i1
        assert applied(c, nid) == [b"a"]
    c.isolate("n3")
    i2 = c.propose("n1", b"b")
    c.run(3)
    # Two of five is not enough: stored on n1 and n2 but not committed.
    assert c.raft("n2").log.last_index() >= i2
    assert c.raft("n1").log.committed < i2
    assert applied(c, "n1") == [b"a"]
    c.heal()
    c.run(2)
    for nid in ids(5):
        assert applied(c, nid) == [b"a", b"b"]


def test_5_3_follower_conflicting_entries_are_overwritten() -> None:
    c = elected(3, check_quorum=False)
    c.isolate("n1")
    for k in range(3):
        c.propose("n1", b"stale-%d" % k)
    c.stabilize()
    c.elect("n2")
    c.propose("n2", b"fresh")
    c.stabilize()
    assert any(d.startswith(b"stale") for _, _, d in log_of(c, "n1"))
    c.heal()
    run_until(c, lambda: log_of(c, "n1") == log_of(c, "n2"))
    assert role(c, "n1") == Role.FOLLOWER
    assert applied(c, "n1") == applied(c, "n2") == [b"fresh"]


def _backoff_cluster(follower_log: list[Entry]) -> Cluster:
    """n1 (entries up to 60, last term 5) will lead; n2 has `follower_log`."""
    members = ids(3)
    boot = boot_entries(members)
    leader_log = (
        boot
        + [Entry(i, 2, data=b"L%d" % i) for i in range(4, 21)]
        + [Entry(i, 5, data=b"L%d" % i) for i in range(21, 61)]
    )
    hs = HardState(term=5, vote=None, commit=3)
    persisted = {
        "n1": PersistedState(hs, None, leader_log),
        "n2": PersistedState(hs, None, boot + follower_log),
        "n3": PersistedState(hs, None, list(leader_log)),
    }
    c = Cluster(members, config=Config(), persisted=persisted, record=True)
    c.stabilize()
    return c


@pytest.mark.parametrize(
    "case,follower_log,max_rejects",
    [
        # Conflicting suffix spanning two older terms: one rejection per divergent term run
        # at most, rather than one per entry.
        (
            "conflicting",
            [Entry(i, 3, data=b"F%d" % i) for i in range(4, 31)]
            + [Entry(i, 4, data=b"F%d" % i) for i in range(31, 51)],
            2,
        ),
        # Merely far behind: a single rejection tells the leader where the log ends.
        ("behind", [], 1),
    ],
)
def test_5_3_fast_backoff_converges_in_few_round_trips(
    case: str, follower_log: list[Entry], max_rejects: int
) -> None:
    c = _backoff_cluster(follower_log)
    c.elect("n1")
    c.stabilize()
    rejects = [
        m for m in c.delivered if m.type == MsgType.APPEND_RESP and m.src == "n2" and m.reject
    ]
    probes = [
        m for m in c.delivered if m.type == MsgType.APPEND and m.dst == "n2" and m.src == "n1"
    ]
    assert 1 <= len(rejects) <= max_rejects, [(m.index, m.reject_hint) for m in rejects]
    # Round trips until the logs match: one per rejection plus the accepted append (then one
    # more append carries the new commit). One index at a time would take ~50 here.
    assert len(probes) == len(rejects) + 2
    assert log_of(c, "n2") == log_of(c, "n1")
    assert c.raft("n2").log.committed == c.raft("n1").log.committed == 61


def test_5_3_follower_commits_only_up_to_its_last_new_entry() -> None:
    """Figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new
    entry). Entries after it may be a stale tail that the leader has not vouched for."""
    members = ids(3)
    boot = boot_entries(members)
    stale = boot + [Entry(4, 2, data=b"a4"), Entry(5, 2, data=b"stale5"), Entry(6, 2)]
    persisted = {"n2": PersistedState(HardState(3, None, 3), None, stale)}
    c = Cluster(members, config=Config(), persisted=persisted)
    c.stabilize()
    # Leader n1 of term 3 has [.., 4 (t2), 5 (t3), ..] with commit 6; this append carries 4.
    c.deliver(
        Message(MsgType.APPEND, "n1", "n2", 3, index=3, log_term=1, commit=6,
                entries=[Entry(4, 2, data=b"a4")])
    )
    assert c.raft("n2").log.committed == 4
    c.process("n2")
    assert [e.data for e in c.nodes["n2"].sm][3:] == [b"a4"]
    [ack] = c.take(lambda m: m.type == MsgType.APPEND_RESP)
    assert ack.index == 4 and not ack.reject


def test_5_3_stale_append_below_commit_is_acked_with_commit_only() -> None:
    members = ids(3)
    boot = boot_entries(members)
    log = boot + [Entry(4, 2, data=b"a4"), Entry(5, 2, data=b"maybe-stale")]
    persisted = {"n2": PersistedState(HardState(3, None, 4), None, log)}
    c = Cluster(members, config=Config(), persisted=persisted)
    c.stabilize()
    # A delayed append from before n2 committed 4: only the commit index can be vouched for.
    c.deliver(Message(MsgType.APPEND, "n1", "n2", 3, index=2, log_term=1, commit=3,
                      entries=[boot[2]]))
    c.process("n2")
    [ack] = c.take(lambda m: m.type == MsgType.APPEND_RESP)
    assert ack.index == 4 and not ack.reject
    assert c.raft("n2").log.last_index() == 5


def test_5_3_leader_counts_itself_only_once_the_entry_is_on_its_disk() -> None:
    c = elected(1)
    r = c.raft("n1")
    idx = c.propose("n1", b"x")
    # Even alone, the leader may not commit an entry it has not persisted.
    assert r.log.committed < idx and r.prs["n1"].match < idx
    assert c.nodes["n1"].disk.last_index() < idx
    c.process("n1")  # persists the entry, then advance() counts it
    assert c.nodes["n1"].disk.last_index() == idx
    assert r.log.committed == idx
    c.process("n1")
    assert applied(c, "n1") == [b"x"]


def test_5_3_lost_appends_are_retried() -> None:
    c = elected(3)
    dropped: list[Message] = []

    def drop_appends_to_n3(m: Message) -> bool:
        if m.type == MsgType.APPEND and m.dst == "n3":
            dropped.append(m)
            return True
        return False

    c.filters.append(drop_appends_to_n3)
    for k in range(3):
        c.propose("n1", b"p%d" % k)
        c.stabilize()
    assert dropped and applied(c, "n3") == []
    assert applied(c, "n1") == [b"p0", b"p1", b"p2"]
    c.filters.clear()
    c.run(2)
    assert applied(c, "n3") == [b"p0", b"p1", b"p2"]


def test_5_3_a_late_heartbeat_answer_never_lowers_a_followers_match() -> None:
    """A heartbeat answer that was on its way while the follower acknowledged more entries
    carries an older last index. It must not lower `match` (etcd keeps Match monotone):
    a regressed match misleads add_member's catch-up check and transfer_leader's choice."""
    c = elected(3)
    c.propose("n1", b"a")
    c.stabilize()
    c.tick("n1")  # a heartbeat round; hold n2's answer back
    c.process("n1")
    c.deliver_all()
    c.process_all()
    (late,) = c.take(lambda m: m.type == MsgType.HEARTBEAT_RESP and m.src == "n2")
    c.take(lambda m: m.type == MsgType.HEARTBEAT_RESP)
    for k in range(3):
        c.propose("n1", b"b%d" % k)
    c.stabilize()
    match = c.raft("n1").prs["n2"].match
    assert match == c.raft("n1").log.last_index() > late.index
    c.deliver(late)
    c.process("n1")
    assert c.raft("n1").prs["n2"].match == match
    c.stabilize()
    assert c.raft("n1").prs["n2"].match == match


def test_5_3_a_late_rejection_never_lowers_a_followers_match() -> None:
    """The same for an append rejection delivered late (or duplicated) after the follower
    caught up: only an answer to an append sent after `match` rose may lower it."""
    c = elected(3)
    c.isolate("n3")
    for k in range(3):
        c.propose("n1", b"a%d" % k)
    c.stabilize()
    c.heal()
    c.propose("n1", b"x")
    c.process("n1")
    c.deliver_all()
    c.process("n3")
    rejections = c.take(lambda m: m.type == MsgType.APPEND_RESP and m.reject and m.src == "n3")
    assert rejections, "n3 was behind: its first answer rejects"
    for m in rejections:
        c.deliver(m)
    c.stabilize()
    match = c.raft("n1").prs["n3"].match
    assert match == c.raft("n1").log.last_index()
    for m in rejections:  # delivered again, late
        c.deliver(m)
    c.process("n1")
    assert c.raft("n1").prs["n3"].match == match


# -- 5.4 Safety ------------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [False, True])
def test_5_4_1_node_with_stale_log_cannot_win(pre_vote: bool) -> None:
    c = elected(3, pre_vote=pre_vote, check_quorum=False)
    c.isolate("n3")
    c.propose("n1", b"x")
    c.stabilize()
    c.crash("n1")
    c.heal()
    t0 = term(c, "n3")
    for _ in range(3):
        c.campaign("n3")
        c.stabilize()
        assert role(c, "n3") != Role.LEADER
    resp = MsgType.PRE_VOTE_RESP if pre_vote else MsgType.VOTE_RESP
    answers = [m for m in c.delivered if m.type == resp and m.dst == "n3" and m.src == "n2"]
    assert answers and all(m.reject for m in answers)
    if pre_vote:
        # A failed pre-vote leaves terms alone.
        assert term(c, "n3") == t0 and term(c, "n2") == t0
    # The up-to-date node does win, with n3's vote.
    c.campaign("n2")
    c.stabilize()
    assert role(c, "n2") == Role.LEADER
    c.run(2)
    assert applied(c, "n3") == [b"x"]


def _figure8() -> tuple[Cluster, int]:
    """Figure 8 (a)-(c) with S1..S5 = n1..n5. Returns the cluster at (c) and X's index: S1
    leads term 4 and has put its term-2 entry X on S3 (and S4), so X is on a majority, while
    its own term-4 entry is held back. Appends carry one entry at a time so that exactly this
    state is reachable."""
    c = elected(5, leader="n1", pre_vote=False, check_quorum=False, max_append_entries=1)
    assert term(c, "n1") == 2
    # (a) S1 (term 2) replicates X only to S2.
    c.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    x = c.propose("n1", b"X")
    c.stabilize()
    assert c.raft("n2").log.term(x) == 2
    # (b) S1 crashes; S5 wins term 3 with S3, S4 and itself, and appends an entry at X's index
    # that nobody else receives.
    c.crash("n1")
    c.heal()
    c.isolate("n2")
    c.filters.append(lambda m: m.src == "n5" and m.type == MsgType.APPEND)
    c.elect("n5")
    assert term(c, "n5") == 3 and c.raft("n5").log.term(x) == 3
    # (c) S5 crashes; S1 restarts and wins term 4 with S2, S3 and S4. Appends of entries past X
    # are lost on nodes that hold X, so only X itself spreads.
    c.crash("n5")
    c.heal()

    def holds_x(nid: str) -> bool:
        r = c.nodes[nid].raft
        return r is not None and r.log.term(x) == 2

    c.filters.append(
        lambda m: m.type == MsgType.APPEND
        and any(e.index > x for e in m.entries)
        and holds_x(m.dst)
    )
    c.restart("n1")
    c.stabilize()
    for _ in range(3):
        if role(c, "n1") == Role.LEADER:
            break
        c.campaign("n1")
        c.stabilize()
    assert role(c, "n1") == Role.LEADER and term(c, "n1") == 4
    assert c.raft("n1").log.term(x) == 2 and c.raft("n1").log.term(x + 1) == 4
    c.run(3)
    holders = [n for n in ("n1", "n2", "n3", "n4") if holds_x(n)]
    assert holders == ["n1", "n2", "n3", "n4"]
    assert c.raft("n1").prs["n3"].match == x
    return c, x


def test_5_4_2_figure8_old_term_entry_on_a_majority_is_not_committed() -> None:
    c, x = _figure8()
    # X (term 2) is on a majority, but a leader commits by counting only its own term: no
    # node has it committed. (Not "n1's commit is x - 1": the real driver does not rewrite
    # the hard state when only the commit index moved, so the restarted n1 came back with
    # the commit of its last hard-state write, and its term-2 no-op at x - 1 may be past it.)
    for nid in ("n1", "n2", "n3", "n4"):
        assert c.raft(nid).log.committed < x
    # (d) And rightly so: S1 crashes, S5 is elected with S2, S3, S4 and overwrites X.
    c.crash("n1")
    c.filters.clear()
    c.restart("n5")
    c.stabilize()
    for _ in range(3):
        if role(c, "n5") == Role.LEADER:
            break
        c.campaign("n5")
        c.stabilize()
    assert role(c, "n5") == Role.LEADER
    c.run(3)
    for nid in ("n2", "n3", "n4", "n5"):
        assert c.raft(nid).log.term(x) == 3
        assert b"X" not in applied(c, nid)


def test_5_4_2_figure8_entry_commits_with_a_current_term_entry() -> None:
    c, x = _figure8()
    # (e) S1 replicates its term-4 entry to a majority: that commits X too.
    c.filters.clear()
    c.run(2)
    assert c.raft("n1").log.committed >= x + 1
    assert b"X" in applied(c, "n1")
    # Now S5 (last term 3) can no longer win, and X survives any later leader.
    c.crash("n1")
    c.restart("n5")
    c.stabilize()
    c.campaign("n5")
    c.stabilize()
    assert role(c, "n5") != Role.LEADER
    run_until(c, lambda: c.leader() is not None)
    c.propose(c.leader() or "", b"after")
    c.run(3)
    for nid in ("n2", "n3", "n4", "n5"):
        assert applied(c, nid) == [b"X", b"after"]


def test_5_5_crashed_follower_recovers_from_its_disk() -> None:
    """A restarted follower comes back with its log, term and vote, replays what its disk
    says is committed, and catches up from the leader. The real driver does not rewrite the
    hard state when only the commit index moved (node.py `_handle_ready`, etcd's MustSync
    rule: the commit index is volatile), so what it replays at once is the commit of its
    last hard-state write, which may lie before "a"; the leader's next message brings the
    rest."""
    c = elected(3)
    a = c.propose("n1", b"a")
    c.stabilize()
    c.crash("n3")
    c.propose("n1", b"b")
    c.stabilize()
    durable = c.nodes["n3"].disk.hard_state.commit
    c.restart("n3")
    # The restarted node replays its durable committed log before hearing from anyone.
    c.process("n3")
    r3 = c.raft("n3")
    assert r3.log.committed == r3.log.applied == durable
    assert r3.log.term(a) == term(c, "n1"), "the acknowledged entry survived on its disk"
    assert c.raft("n3").term == term(c, "n1")
    c.run(2)
    assert applied(c, "n3") == [b"a", b"b"]


def test_5_5_leader_crashing_in_its_fsync_after_its_appends_went_out() -> None:
    """The real driver sends a leader's appends before its own fsync (node.py `_EARLY`,
    thesis 10.2.1). The leader loses power during that fsync: the followers that stored
    the entry are a majority without it, so the entry commits under the next leader, and
    the restarted old leader catches up."""
    c = elected(3)
    x = c.propose("n1", b"x")
    c.crash("n1", midway=True)
    sent = [m for m in c.inflight if m.type == MsgType.APPEND and m.src == "n1"
            and any(e.index == x for e in m.entries)]
    assert {m.dst for m in sent} == {"n2", "n3"}
    c.stabilize()
    for nid in ("n2", "n3"):
        assert c.nodes[nid].disk.term_at(x) == 2
    run_until(c, lambda: c.leader() is not None)
    ld = c.leader() or ""
    c.propose(ld, b"y")
    c.run(2)
    c.restart("n1")
    c.run(3)
    for nid in ids(3):
        assert applied(c, nid) == [b"x", b"y"]


def test_5_5_unpersisted_vote_is_lost_but_durable_vote_holds() -> None:
    c = make(3, pre_vote=False)
    c.campaign("n1")
    c.process("n1")
    vote_req = [m for m in c.inflight if m.dst == "n2"]
    c.take(lambda m: True)
    c.deliver(vote_req[0])
    c.process("n2")  # n2 persists its vote for n1, then answers
    assert c.nodes["n2"].disk.hard_state.vote == "n1"
    c.crash("n2")
    c.restart("n2")
    assert c.raft("n2").vote == "n1" and term(c, "n2") == 2
    # n3 campaigns in the same term 2... (it is at term 1, so campaign moves it to 2)
    c.campaign("n3")
    c.process("n3")
    req = [m for m in c.inflight if m.dst == "n2" and m.type == MsgType.VOTE]
    assert req and req[0].term == 2
    c.take(lambda m: True)
    c.deliver(req[0])
    c.process("n2")
    resp = [m for m in c.inflight if m.src == "n2" and m.type == MsgType.VOTE_RESP]
    assert resp and resp[0].reject, "a durable vote must not be given twice in one term"


# -- Pre-vote (dissertation 9.6) and check-quorum (6.2) --------------------------------------


def test_prevote_partitioned_node_does_not_bump_terms_or_disrupt() -> None:
    c = elected(3, pre_vote=True, check_quorum=True)
    t = term(c, "n1")
    c.isolate("n3")
    c.run(10 * c.cfg.election_ticks)
    assert term(c, "n3") == t, "a pre-candidate must not raise its term"
    assert role(c, "n3") == Role.PRE_CANDIDATE
    c.propose("n1", b"while-away")
    c.heal()
    c.run(3 * c.cfg.election_ticks)
    assert c.leader() == "n1" and term(c, "n1") == t
    assert set(c.leaders) == {t}
    assert applied(c, "n3") == [b"while-away"]


def test_without_prevote_a_rejoining_node_disrupts_the_leader() -> None:
    # The counterpart of the test above: this is what pre-vote prevents.
    c = elected(3, pre_vote=False, check_quorum=False)
    t = term(c, "n1")
    c.isolate("n3")
    c.run(5 * c.cfg.election_ticks)
    assert term(c, "n3") > t + 1
    c.heal()
    c.run(3 * c.cfg.election_ticks)
    ld = c.leader()
    assert ld is not None and term(c, ld) > t


def test_check_quorum_isolated_leader_steps_down() -> None:
    c = elected(3, check_quorum=True)
    c.isolate("n1")
    et = c.cfg.election_ticks
    c.run(et - 1)
    assert role(c, "n1") == Role.LEADER
    # It steps down after at most two election timeouts without hearing from a majority.
    c.run(et + 1)
    assert role(c, "n1") == Role.FOLLOWER
    with pytest.raises(NotLeader):
        c.propose("n1", b"x")


def test_without_check_quorum_isolated_leader_stays() -> None:
    c = elected(3, check_quorum=False)
    c.isolate("n1")
    c.tick("n1", n=5 * c.cfg.election_ticks)
    assert role(c, "n1") == Role.LEADER


def test_check_quorum_leader_with_majority_stays() -> None:
    c = elected(5, check_quorum=True)
    c.isolate("n4")
    c.isolate("n5")
    c.run(5 * c.cfg.election_ticks)
    assert c.leader() == "n1" and set(c.leaders) == {term(c, "n1")}


def test_check_quorum_followers_ignore_disruptive_vote_in_lease() -> None:
    c = elected(3, pre_vote=False, check_quorum=True)
    t = term(c, "n1")
    c.isolate("n3")
    c.campaign("n3")
    c.campaign("n3")
    c.stabilize()
    assert term(c, "n3") == t + 2
    c.heal()
    # n3's vote requests reach n2 while n2 hears from n1: ignored.
    c.campaign("n3")
    c.process_all()
    c.take(lambda m: m.dst == "n1")  # keep n3's higher term from n1 for this check
    c.deliver_all()
    assert term(c, "n2") == t and c.raft("n2").leader == "n1"


# -- ReadIndex (dissertation 6.4) ------------------------------------------------------------


def test_read_index_answered_only_after_quorum_heartbeat_ack() -> None:
    c = elected(3)
    c.propose("n1", b"w")
    c.stabilize()
    commit = c.raft("n1").log.committed
    c.read_index("n1", b"r1")
    c.process("n1")
    beats = [m for m in c.inflight if m.type == MsgType.HEARTBEAT and m.context == b"r1"]
    assert {m.dst for m in beats} == {"n2", "n3"}
    assert c.nodes["n1"].read_states == []
    # Responses are lost: no answer, however long we wait without acks.
    c.filters.append(lambda m: m.type == MsgType.HEARTBEAT_RESP)
    c.stabilize()
    assert c.nodes["n1"].read_states == []
    c.filters.clear()
    # One ack (plus the leader itself) is a quorum of three.
    c.deliver(beats[0])
    c.process(beats[0].dst)
    acks = c.take(lambda m: m.type == MsgType.HEARTBEAT_RESP)
    assert len(acks) == 1 and acks[0].context == b"r1"
    c.process("n1")
    assert c.nodes["n1"].read_states == []
    c.deliver(acks[0])
    c.process("n1")
    assert [(rs.index, rs.ctx) for rs in c.nodes["n1"].read_states] == [(commit, b"r1")]


def test_read_index_waits_for_first_commit_in_the_leaders_term() -> None:
    c = make(3)
    c.campaign("n1")
    # Let the election finish but hold back the appends of the leader's no-op entry.
    c.filters.append(lambda m: m.type == MsgType.APPEND)
    c.stabilize()
    assert role(c, "n1") == Role.LEADER
    c.read_index("n1", b"early")
    c.run(2)
    assert c.nodes["n1"].read_states == []
    c.filters.clear()
    c.run(2)
    rs = c.nodes["n1"].read_states
    assert [r.ctx for r in rs] == [b"early"]
    assert c.raft("n1").log.term(rs[0].index) == term(c, "n1")


def test_read_index_not_served_by_deposed_leader() -> None:
    c = elected(5, check_quorum=False)
    c.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    c.elect("n3")
    c.propose("n3", b"newer")
    c.stabilize()
    # n1 still believes it leads term 2; n2 (also term 2) acks its heartbeats.
    assert role(c, "n1") == Role.LEADER
    c.read_index("n1", b"stale")
    c.run(5)
    assert c.nodes["n1"].read_states == []
    assert any(m.type == MsgType.HEARTBEAT_RESP and m.dst == "n1" for m in c.delivered)
    # Once it hears of the new term it steps down, and the read is never answered.
    c.heal()
    c.run(3)
    assert role(c, "n1") == Role.FOLLOWER
    assert c.nodes["n1"].read_states == []
    # The new leader serves reads that include the newer write.
    c.read_index("n3", b"fresh")
    c.stabilize()
    [rs] = c.nodes["n3"].read_states
    assert rs.index >= c.raft("n3").log.committed
    assert c.nodes["n3"].sm[rs.index - 1].index == rs.index
    assert b"newer" in [e.data for e in c.nodes["n3"].sm[: rs.index]]


def test_read_index_single_voter_is_immediate() -> None:
    c = elected(1)
    c.read_index("n1", b"solo")
    c.process("n1")
    assert [r.ctx for r in c.nodes["n1"].read_states] == [b"solo"]


# -- Snapshots and log compaction (section 7) ------------------------------------------------


def _snap_messages(c: Cluster, dst: str) -> list[Message]:
    return [m for m in c.delivered if m.type == MsgType.SNAPSHOT and m.dst == dst]


def test_7_compaction_and_install_snapshot_to_lagging_follower() -> None:
    c = elected(3)
    c.isolate("n3")
    for k in range(20):
        c.propose("n1", b"e%d" % k)
        c.stabilize()
    for nid in ("n1", "n2"):
        snap = c.compact(nid)
        assert snap is not None
        assert c.raft(nid).log.first_index() == snap.meta.index + 1
        assert c.nodes[nid].disk.snapshot == snap
        assert c.nodes[nid].disk.entries == []
    c.heal()
    c.run(3)
    assert len(_snap_messages(c, "n3")) == 1
    assert c.nodes["n3"].disk.snapshot is not None
    assert applied(c, "n3") == applied(c, "n1") == [b"e%d" % k for k in range(20)]
    assert c.raft("n3").conf.voters == frozenset(ids(3))
    # Replication continues normally after the snapshot.
    c.propose("n1", b"after")
    c.stabilize()
    assert applied(c, "n3")[-1] == b"after"
    # And the follower survives a restart from the snapshot on its disk: it restores the
    # snapshot at once, and learns the commit of what follows it from the leader (the real
    # driver does not rewrite the hard state when only the commit index moved: node.py).
    c.restart("n3")
    c.stabilize()
    assert applied(c, "n3")[:20] == [b"e%d" % k for k in range(20)]
    c.run(1)
    assert applied(c, "n3")[-1] == b"after"


@pytest.mark.parametrize("rebootstrap", [False, True])
def test_7_install_snapshot_to_wiped_follower(rebootstrap: bool) -> None:
    c = elected(3)
    for k in range(10):
        c.propose("n1", b"e%d" % k)
    c.stabilize()
    c.compact("n1")
    c.wipe("n3", rebootstrap=rebootstrap)
    assert c.raft("n3").log.last_index() == (3 if rebootstrap else 0)
    # The leader finds out on its next append that n3 lost what it had acknowledged.
    c.propose("n1", b"after-wipe")
    c.run(3)
    assert len(_snap_messages(c, "n3")) == 1
    assert applied(c, "n3") == [b"e%d" % k for k in range(10)] + [b"after-wipe"]
    assert c.raft("n3").conf.voters == frozenset(ids(3))
    assert c.raft("n1").prs["n3"].match == c.raft("n1").log.last_index()


def test_7_lost_snapshot_is_resent() -> None:
    c = elected(3, snapshot_retry_ticks=5)
    c.isolate("n3")
    for k in range(5):
        c.propose("n1", b"e%d" % k)
    c.stabilize()
    c.compact("n1")
    c.heal()
    lost: list[Message] = []
    c.filters.append(lambda m: m.type == MsgType.SNAPSHOT and not lost and not lost.append(m))
    c.run(12)
    assert len(lost) == 1
    assert len(_snap_messages(c, "n3")) >= 1
    assert applied(c, "n3") == [b"e%d" % k for k in range(5)]


def test_7_snapshot_ack_never_claims_entries_past_the_snapshot() -> None:
    """A follower whose log matches the snapshot point but has a stale tail after it must
    acknowledge only the snapshot index: acknowledging its last index would tell the leader
    that entries it never sent are replicated (and let it commit them)."""
    members = ids(3)
    boot = boot_entries(members)
    # The tail 5..6 comes from an old term-2 leader; the leader's own 5.. are term 3.
    follower = boot + [Entry(4, 2, data=b"a4"), Entry(5, 2, data=b"old5"), Entry(6, 2)]
    persisted = {"n2": PersistedState(HardState(3, None, 3), None, follower)}
    c = Cluster(members, config=Config(), persisted=persisted)
    c.stabilize()
    conf = c.raft("n2").conf
    snap = Snapshot(SnapshotMeta(4, 2, conf), b"snap-x")
    c.snap_registry[b"snap-x"] = (*boot, Entry(4, 2, data=b"a4"))
    c.deliver(Message(MsgType.SNAPSHOT, "n1", "n2", 3, snapshot=snap))
    c.process("n2")
    [ack] = c.take(lambda m: m.src == "n2" and m.type == MsgType.APPEND_RESP)
    assert not ack.reject
    assert ack.index == 4, "the ack may only cover what the snapshot vouches for"
    assert c.raft("n2").log.committed == 4


# -- Membership changes (dissertation 4.1) ---------------------------------------------------


def add_learner(c: Cluster, leader: str, nid: str) -> None:
    c.propose_conf(leader, ConfChange(ConfOp.ADD_LEARNER, nid, addr_of(nid)))
    c.add_node(nid)
    c.stabilize()


def test_4_1_add_learner_catch_up_then_promote() -> None:
    c = elected(3)
    for k in range(5):
        c.propose("n1", b"e%d" % k)
    c.stabilize()
    add_learner(c, "n1", "n4")
    c.run(2)
    assert c.raft("n1").conf.learners == {"n4"}
    assert applied(c, "n4") == applied(c, "n1")
    # A learner never campaigns...
    c.isolate("n4")
    c.tick("n4", n=10 * c.cfg.election_ticks)
    assert role(c, "n4") == Role.FOLLOWER and term(c, "n4") == term(c, "n1")
    c.heal()
    # ...and does not count towards commit: with n2 and n3 cut off nothing commits.
    c.isolate("n2")
    c.isolate("n3")
    c.cut -= {("n2", "n3"), ("n3", "n2")}
    idx = c.propose("n1", b"needs-voters")
    c.run(3)
    assert c.raft("n4").log.last_index() >= idx
    assert c.raft("n1").log.committed < idx
    c.heal()
    c.run(2)
    # Promote: now four voters, so commit needs three of them.
    c.propose_conf("n1", ConfChange(ConfOp.PROMOTE, "n4"))
    c.stabilize()
    assert c.raft("n1").conf.voters == {"n1", "n2", "n3", "n4"}
    assert c.raft("n4").conf.voters == {"n1", "n2", "n3", "n4"}
    c.isolate("n2")
    c.isolate("n3")
    c.cut -= {("n2", "n3"), ("n3", "n2")}
    idx = c.propose("n1", b"two-of-four")
    c.run(3)
    assert c.raft("n1").log.committed < idx
    c.heal()
    c.isolate("n3")
    c.run(2)
    assert c.raft("n1").log.committed >= idx
    # The promoted node can now be elected.
    c.heal()
    c.run(2)
    c.transfer_leader("n1", "n4")
    c.stabilize()
    assert c.leader() == "n4"


def test_4_1_grow_3_to_5_and_shrink_back_with_proposals_throughout() -> None:
    c = elected(3)
    expected: list[bytes] = []
    k = 0

    def write(leader: str = "n1") -> None:
        nonlocal k
        k += 1
        c.propose(leader, b"w%d" % k)
        expected.append(b"w%d" % k)
        c.stabilize()
        live_voters = [v for v in c.raft(leader).conf.voters if c.nodes[v].alive]
        assert len(live_voters) * 2 > len(c.raft(leader).conf.voters)
        for v in live_voters:
            assert applied(c, v) == expected, v

    write()
    for new in ("n4", "n5"):
        add_learner(c, "n1", new)
        write()
        c.run(1)
        c.propose_conf("n1", ConfChange(ConfOp.PROMOTE, new))
        c.stabilize()
        write()
    assert c.raft("n1").conf.voters == frozenset(ids(5))
    # Five voters: two may be down.
    c.crash("n2")
    c.crash("n3")
    write()
    c.restart("n2")
    c.restart("n3")
    c.run(2)
    # Shrink back one at a time.
    for gone in ("n4", "n5"):
        with pytest.raises(ConfChangeError):
            # Only one change at a time: the second is refused until the first applies.
            c.propose_conf("n1", ConfChange(ConfOp.REMOVE, gone))
            c.propose_conf("n1", ConfChange(ConfOp.REMOVE, "n2"))
        c.stabilize()
        assert gone not in c.raft("n1").conf.members()
        write()
    assert c.raft("n1").conf.voters == frozenset(ids(3))
    for nid in ids(3):
        assert c.raft(nid).conf.voters == frozenset(ids(3))
    # The removed nodes no longer count: with them and one old voter down, 2 of 3 commit.
    c.crash("n4")
    c.crash("n5")
    c.crash("n3")
    write()
    c.restart("n3")
    c.run(2)
    assert applied(c, "n3") == expected


def test_4_1_votes_of_removed_nodes_do_not_count() -> None:
    c = elected(5)
    for gone in ("n4", "n5"):
        c.propose_conf("n1", ConfChange(ConfOp.REMOVE, gone))
        c.stabilize()
    c.run(1)
    assert c.raft("n2").conf.voters == frozenset(ids(3))
    # n2 is cut off from n1 and n3 but can reach the removed n4 and n5, who would vote for it.
    c.partition({"n2", "n4", "n5"}, {"n1", "n3"})
    c.run(5 * c.cfg.election_ticks)
    assert role(c, "n2") != Role.LEADER
    assert c.leader() == "n1"
    # Removed nodes never campaign.
    for gone in ("n4", "n5"):
        assert gone not in c.raft(gone).conf.voters
        assert role(c, gone) == Role.FOLLOWER
    assert not any(m.src in ("n4", "n5") and m.type in (MsgType.VOTE, MsgType.PRE_VOTE)
                   for m in c.delivered)


def test_4_1_leader_removing_itself_steps_down_and_others_elect() -> None:
    c = elected(3)
    c.propose_conf("n1", ConfChange(ConfOp.REMOVE, "n1"))
    c.stabilize()
    assert role(c, "n1") == Role.FOLLOWER
    run_until(c, lambda: c.leader() in ("n2", "n3"))
    ld = c.leader() or ""
    c.propose(ld, b"after")
    c.stabilize()
    assert applied(c, "n2")[-1] == applied(c, "n3")[-1] == b"after"
    assert c.raft(ld).conf.voters == {"n2", "n3"}


def test_4_1_no_campaign_while_a_committed_conf_change_is_unapplied() -> None:
    c = elected(3)
    c.propose_conf("n1", ConfChange(ConfOp.REMOVE, "n3"))
    # Let n3 receive and learn the commit of its own removal, but not apply it yet.
    c.filters.append(lambda m: m.dst == "n3" and m.type != MsgType.APPEND)
    while c.raft("n3").log.committed < c.raft("n1").log.last_index():
        c.process_all()
        c.deliver_all()
    r3 = c.raft("n3")
    assert "n3" in r3.conf.voters and r3.log.applied < r3.log.committed
    def vote_requests() -> list[Message]:
        return [m for m in r3.msgs if m.type in (MsgType.VOTE, MsgType.PRE_VOTE)]

    c.campaign("n3")
    assert role(c, "n3") == Role.FOLLOWER and not vote_requests(), "campaigned on a stale config"
    c.process("n3")
    assert "n3" not in r3.conf.voters
    c.campaign("n3")
    c.tick("n3", n=5 * c.cfg.election_ticks)
    assert role(c, "n3") == Role.FOLLOWER and not vote_requests()


def test_4_1_conf_change_refused_until_leader_commits_in_its_term() -> None:
    c = make(3)
    c.campaign("n1")
    c.filters.append(lambda m: m.type == MsgType.APPEND)
    c.stabilize()
    assert role(c, "n1") == Role.LEADER
    with pytest.raises(ConfChangeError):
        c.propose_conf("n1", ConfChange(ConfOp.ADD_LEARNER, "n4", addr_of("n4")))
    c.filters.clear()
    c.run(1)
    c.propose_conf("n1", ConfChange(ConfOp.ADD_LEARNER, "n4", addr_of("n4")))


# -- Leadership transfer (dissertation 3.10) -------------------------------------------------


def test_3_10_transfer_to_up_to_date_follower() -> None:
    c = elected(3)
    c.propose("n1", b"a")
    c.stabilize()
    t = term(c, "n1")
    c.transfer_leader("n1", "n2")
    c.stabilize()
    assert c.leader() == "n2" and term(c, "n2") == t + 1
    assert role(c, "n1") == Role.FOLLOWER and c.raft("n1").leader == "n2"
    assert any(m.type == MsgType.TIMEOUT_NOW and m.dst == "n2" for m in c.delivered)
    c.propose("n2", b"b")
    c.stabilize()
    assert applied(c, "n1") == [b"a", b"b"]


def test_3_10_transfer_to_lagging_follower_catches_it_up_first() -> None:
    c = elected(3)
    c.isolate("n3")
    for k in range(5):
        c.propose("n1", b"e%d" % k)
    c.stabilize()
    c.heal()
    c.transfer_leader("n1", "n3")
    # While the transfer is under way the leader takes no proposals.
    with pytest.raises(ProposalDropped):
        c.propose("n1", b"dropped")
    with pytest.raises(ProposalDropped):
        c.propose_conf("n1", ConfChange(ConfOp.ADD_LEARNER, "n9", addr_of("n9")))
    c.stabilize()
    assert c.leader() == "n3"
    # TIMEOUT_NOW went out only once n3 had every entry. (Appends with entries: the real
    # driver holds commit notices, appends without entries, back for a few milliseconds
    # (node.py NoticeHold), so the old leader's last one may arrive after the TIMEOUT_NOW.)
    tn = [i for i, m in enumerate(c.delivered) if m.type == MsgType.TIMEOUT_NOW]
    last_append = max(
        i for i, m in enumerate(c.delivered) if m.type == MsgType.APPEND and m.dst == "n3"
        and m.term == term(c, "n3") - 1 and m.entries
    )
    assert tn and tn[0] > last_append
    assert applied(c, "n3")[:5] == [b"e%d" % k for k in range(5)]
    assert b"dropped" not in applied(c, "n3")


def test_3_10_transfer_to_unreachable_target_times_out() -> None:
    c = elected(3)
    c.isolate("n3")
    c.transfer_leader("n1", "n3")
    with pytest.raises(ProposalDropped):
        c.propose("n1", b"x")
    c.run(c.cfg.election_ticks)
    assert c.leader() == "n1"
    c.propose("n1", b"after-timeout")
    c.stabilize()
    assert applied(c, "n2")[-1] == b"after-timeout"


def test_3_10_transfer_to_non_voter_is_refused() -> None:
    c = elected(3)
    add_learner(c, "n1", "n4")
    with pytest.raises(ValueError):
        c.transfer_leader("n1", "n4")
    c.propose("n1", b"still-fine")


def test_bootstrap_wiped_founder_rejoining_empty_never_sees_itself_alone() -> None:
    """A founding member whose disk was replaced and that comes back EMPTY (as a joiner under
    its old id) replays the founding entries. If it received only the first one and each
    entry added one voter, n1 (first in sort order) would see itself as the sole voter and
    elect itself. Every founding entry carries the whole membership, so it cannot."""
    founder = Raft("n2", PersistedState(), Config(), random.Random(2))
    founder.bootstrap({m: addr_of(m) for m in ids(3)})
    first = founder.log.entries[0]
    r = Raft("n1", PersistedState(), Config(), random.Random(1))
    r.step(Message(MsgType.APPEND, "n2", "n1", 2, index=0, log_term=0, entries=[first], commit=1))
    rd = r.ready()
    assert rd.committed == [first]
    r.advance(rd)
    assert r.conf.voters == frozenset(ids(3))
    for _ in range(100):
        r.tick()
        r.advance(r.ready())
    assert r.role != Role.LEADER
