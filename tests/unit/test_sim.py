"""Whole-cluster deterministic simulation (distsync/testing/sim.py): real Nodes (driver,
core, registry with request ids, services) on in-memory disk, network and clocks with
faults, one thread, one seed.

* CI runs `SIM_SEEDS` seeds (default 0:500; README "Simulation" gives the time);
  `SIM_SEEDS=0:20000 pytest tests/unit/test_sim.py -k seeds` is the long mode.
* `SEED=<n> pytest tests/unit/test_sim.py -k replay` replays one seed exactly.
* A driver bug planted on purpose (a follower acknowledging an append before its fsync) is
  found within the CI seeds, so the checks can fail; so is an API-layer bug (handlers that
  drop the client's Request-Id), since clients go through each node's real HTTP app.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
import sim_background

import distsync.node as nodemod
from distsync.raft.types import MsgType
from distsync.services.locks import EXCLUSIVE
from distsync.services.registry import Registry
from distsync.testing.sim import SimFailure, Simulation, run_seed
from distsync.testing.simloop import Deadlock, VirtualLoop

CI_SEEDS = sim_background.ci_seeds()
# A killed process's tasks that never ran are collected later, by design (simproc.py).
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
# Each seed's fault counts, kept from test_seeds so the coverage tests below need not run
# the seeds again (they run whatever is missing, e.g. under -k).
_FAULTS: dict[int, dict[str, int]] = {}


def _faults(seed: int) -> dict[str, int]:
    if seed in KNOWN_FAILURES:
        return {}
    if seed not in _FAULTS:
        res = sim_background.result(seed)
        if res is not None and res["ok"]:
            _FAULTS[seed] = res["faults"]
        elif res is not None:
            pytest.fail(res["error"], pytrace=False)
        else:
            _FAULTS[seed] = run_seed(seed).faults
    return _FAULTS[seed]


@pytest.fixture(autouse=True)
def _quiet_nodes():
    # A simulated disk fault makes the node log its death at CRITICAL, by design; hundreds
    # of seeds would bury pytest's report in them.
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


# Seeds that fail on a known, not yet fixed bug: seed -> (what the failure must say, why).
# Each is asserted to fail that way, so a fix (or a different failure) shows up at once.
KNOWN_FAILURES: dict[int, tuple[str, str]] = {}


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_seeds(seed: int) -> None:
    if seed in KNOWN_FAILURES:
        res = sim_background.result(seed)
        if res is not None:
            assert not res["ok"] and re.search(KNOWN_FAILURES[seed][0], res["error"]), res
            return
        with pytest.raises(SimFailure, match=KNOWN_FAILURES[seed][0]):
            run_seed(seed)
        return
    _faults(seed)


@pytest.mark.skipif("SEED" not in os.environ, reason="set SEED=<n> to replay one seed")
def test_replay() -> None:
    print(run_seed(int(os.environ["SEED"])))


# Every fault the simulator injects, as counted in SimStats.faults, and the features the
# workloads must reach. Each must happen somewhere in the CI seeds, or the seeds prove little.
FAULT_KINDS = (
    # disk
    "disk.lost_unsynced", "disk.torn", "disk.eio", "disk.enospc", "disk.fail_stop",
    "disk.slow_fsync",
    # network
    "net.delayed", "net.reordered", "net.dropped", "net.duplicated", "net.partition",
    "net.partitioned", "net.partition_one_way",
    # clock
    "clock.skew", "clock.jump", "clock.slow_timers",
    # process
    "process.crash", "process.crash_during_fsync", "process.connection_lost",
    "process.restart", "process.pause",
    # disk damage to a stopped node (storage-fault recovery)
    "disk.damage.cut_tail", "disk.damage.flip_bit", "disk.damage.lose_snapshot",
    "disk.damage.lose_hard_state", "disk.damage.wipe",
    # while the cluster forms (`_forming_faults`): crashes, an emptied directory, and one
    # emptied after its member finished asking whether the cluster is new
    "forming.crash", "forming.wipe", "forming.wipe.after_finish",
)
FEATURES = (
    "admin.add", "admin.remove", "admin.transfer", "raft.install_snapshot",
    "workload.kv_ops", "workload.lock_grants", "workload.queue_deliveries",
    "workload.election_leaders",
    "workload.cache_acked_puts", "workload.cache_gets", "cache.messages",
    # ephemeral keys (simephemeral.py): deleted by a close and by an expiry, puts refused to
    # a closed session, puts that unbind, listings checked against the log
    "workload.ephemeral_close_deletes", "workload.ephemeral_expire_deletes",
    "workload.ephemeral_refused_puts", "workload.ephemeral_unbinding_puts",
    "workload.ephemeral_listings",
    # semaphores and barriers (wl_semaphore.py)
    "workload.semaphore.grants", "workload.barrier.released",
    "workload.double_barrier.enters", "workload.double_barrier.leaves",
    # the HTTP API (simhttp.py): answers, followers forwarding, 503s while no leader is known
    "http.answered", "http.forwarded", "http.503.no_leader",
    # watchers (simwatch.py): events streamed, resumes, linearizable starts, a 410 for a
    # history that no longer reaches back, a stream cancelled as compacted
    "watch.events", "watch.resumed", "watch.linearizable_starts", "watch.compacted_410",
    "watch.canceled.compacted",
)


@pytest.mark.parametrize("kind", FAULT_KINDS + FEATURES)
def test_every_fault_happens_in_the_ci_seeds(kind: str) -> None:
    """Counts the kind over the CI seeds (stopping at the first seed that has it)."""
    for seed in CI_SEEDS:
        if _faults(seed).get(kind, 0) > 0:
            return
    pytest.fail(f"{kind} never happened in {len(CI_SEEDS)} seeds")


def test_faults_are_spread_over_the_ci_seeds() -> None:
    """Not a fluke of one seed: crashes, partitions and pauses happen in most seeds."""
    seeds = list(CI_SEEDS)[:100]
    for kind in ("process.crash", "net.partition", "process.pause", "net.reordered"):
        hit = sum(_faults(s).get(kind, 0) > 0 for s in seeds)
        assert hit >= len(seeds) // 2, (kind, hit, len(seeds))


def test_one_seed_gives_one_run() -> None:
    a, b = Simulation(7), Simulation(7)
    a.run()
    b.run()
    assert list(a.events) == list(b.events)
    assert a.history == b.history


def _trace_digest(seed: int, hashseed: str) -> str:
    code = (
        "import hashlib, logging; logging.disable(logging.CRITICAL)\n"
        "from distsync.testing.sim import Simulation\n"
        f"s = Simulation({seed}); st = s.run()\n"
        "run = repr((list(s.events), s.history, s.grants, s.q_deliveries, st))\n"
        "print(hashlib.sha256(run.encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


def test_a_seed_replays_in_another_process() -> None:
    """`SEED=... pytest` in a new process (other string hashes) sees the same run: seed 6
    has kv, lock and queue clients (over HTTP), membership changes and crashes."""
    assert _trace_digest(6, "1") == _trace_digest(6, "2")


def _unplanted_faults(seed: int) -> dict[str, int] | None:
    """Seed's fault counts from a run without the plant (kept by test_seeds, or the
    background's), or None if there is none (then the seed is not skipped)."""
    if seed in _FAULTS:
        return _FAULTS[seed]
    res = sim_background.result(seed)
    return res["faults"] if res is not None and res["ok"] else None


def first_failure(what: str, reaches: Callable[[dict[str, int]], bool] | None = None
                  ) -> tuple[int, str]:
    """The first CI seed whose run fails, and its message; the test fails if none does
    (`what` names the planted bug in that failure).

    `reaches` skips the seeds whose unplanted run (its fault counts, from test_seeds' run)
    never reaches the planted code: a seed's run is the same with or without the plant up to
    the first time the planted code runs, so a seed whose run never gets there cannot fail."""
    for seed in CI_SEEDS:
        if seed in KNOWN_FAILURES:
            continue
        if reaches is not None:
            faults = _unplanted_faults(seed)
            if faults is not None and not reaches(faults):
                continue
        try:
            run_seed(seed)
        except SimFailure as e:
            return seed, str(e)
    pytest.fail(f"{what} survived {len(CI_SEEDS)} seeds")


def test_planted_ack_before_fsync_is_found_within_the_ci_seeds(monkeypatch) -> None:
    """Plant the bug the driver's ordering exists to prevent: a follower's append response
    goes out with the leader's early messages, before its own fsync. A crash then loses an
    entry the leader counted as durable, and the checks must say so."""
    monkeypatch.setattr(nodemod, "_EARLY", (*nodemod._EARLY, MsgType.APPEND_RESP))
    seed, msg = first_failure("the planted bug")
    assert f"seed {seed}" in msg and "replay: SEED=" in msg
    assert "last events:" in msg


def test_planted_request_id_check_removed_is_found(monkeypatch) -> None:
    """Plant a registry that forgets request ids at once: a retried write then applies
    twice, and the at-most-once check must catch it."""
    orig = Registry.__init__

    def forgetful(self, services, dedupe_limit=0):  # type: ignore[no-untyped-def]
        orig(self, services, 0)

    monkeypatch.setattr(Registry, "__init__", forgetful)
    _, msg = first_failure("the planted bug")
    assert "took effect at" in msg or "linearizable" in msg, msg[:400]


def test_the_match_regression_fixed_in_cb9f70d_is_found(monkeypatch) -> None:
    """Undo the fix (issue 16, item 6, first bug): with no sequence number to tell a stale
    answer from a fresh one, a late heartbeat answer lowers a follower's match again."""
    from distsync.raft.progress import Progress

    monkeypatch.setattr(Progress, "match_seq", property(lambda s: -1, lambda s, v: None))
    _, msg = first_failure("the old match regression")
    assert "lowered" in msg, msg[:400]


def test_planted_lost_enqueue_is_found(monkeypatch) -> None:
    """Plant a queue that acknowledges an enqueue but keeps only some of the messages: the
    queue check must report the acknowledged message as lost."""
    from distsync.services.queues import QueueService

    orig = QueueService._add_message

    def leaky(self, q, mid, *args, **kw):  # type: ignore[no-untyped-def]
        if not mid.endswith("7"):
            orig(self, q, mid, *args, **kw)

    monkeypatch.setattr(QueueService, "_add_message", leaky)
    _, msg = first_failure("the planted bug")
    assert "acknowledged enqueues lost" in msg, msg[:400]


def test_planted_request_id_dropped_by_the_api_is_found(monkeypatch) -> None:
    """Plant the API-layer bug the HTTP path exists to catch: the handlers ignore the
    client's `Request-Id` and make a fresh id for every request, as if it sent none. The
    registry keeps its ids, but a retry of a write whose first attempt took effect is a new
    request to it and applies again (a cas that took effect answers 409, an ack "acked 0").
    Clients calling node.propose directly, as the simulation's did, never saw this layer."""
    from distsync.api import idempotency

    fresh = itertools.count()

    def ignore_the_header(request):  # type: ignore[no-untyped-def]
        if "rid" not in request:
            request["rid"] = f"auto-{next(fresh)}"  # (numbered: the run stays replayable)
        return request["rid"]

    monkeypatch.setattr(idempotency, "raw_request_id", ignore_the_header)
    _, msg = first_failure("the planted API bug")
    # (A barrier's retried leave that took effect, applied again, answers "not entered".)
    assert ("linearizable" in msg or "acknowledged enqueues lost" in msg or "fencing" in msg
            or "leave answered {'error': 'not_entered'" in msg), msg[:400]


def test_the_watch_gap_fixed_here_is_found(monkeypatch) -> None:
    """Undo the fix (issue 21): a node sent a snapshot while it streams a watch jumps its
    history forward, and the watcher, not cancelled, goes on after a gap. The watchers'
    no-gap check against the applied log must see it."""
    from distsync.watch import WatchHub

    monkeypatch.setattr(WatchHub, "on_reset", lambda self, revision: None)
    _, msg = first_failure("the watch gap after a snapshot", lambda faults: bool(
        faults.get("watch.streams") and faults.get("raft.install_snapshot")))
    assert "watch:" in msg and "the applied log has" in msg, msg[:400]


def test_planted_linearizable_watch_without_its_barrier_is_found(monkeypatch) -> None:
    """Plant a `linearizable=true` watch that skips its ReadIndex barrier: a node behind
    the commit starts the watch before writes committed earlier, and the check of the
    stream's first line must say so."""
    from distsync.api import watch

    async def no_barrier(request):  # type: ignore[no-untyped-def]
        return None

    monkeypatch.setattr(watch, "_read_barrier", no_barrier)
    _, msg = first_failure("a linearizable watch without its barrier")
    assert "linearizable start" in msg, msg[:400]


def test_an_answer_the_request_did_not_earn_fails_the_run(monkeypatch) -> None:
    """A 500 from the API is a bug to report, not an unknown outcome to retry: plant a kv
    handler whose result mapping raises (error_middleware answers 500 internal)."""
    from distsync.api import kv

    def broken(res):  # type: ignore[no-untyped-def]
        raise RuntimeError("planted")

    monkeypatch.setattr(kv, "_result", broken)
    with pytest.raises(SimFailure, match="answered 500"):
        run_seed(0)


def test_the_api_stamps_queue_commands_with_the_nodes_clock() -> None:
    """The queue handlers stamp each command with the leader's time through the node's
    Clock (seams.py), not the machine's: in the simulation that is the simulated clock, so
    visibility timeouts run on virtual time, clock jumps reach them, and a seed replays.
    (They read time.time() before the simulation sent requests through the API.)"""
    import asyncio

    from distsync.testing.sim import _close

    sim = Simulation(3, faults=False)

    async def enqueue() -> tuple[int, int]:
        for sn in sim.nodes.values():
            sim._start(sn)
        assert await sim._queue_setup()
        ok, _, _ = await sim._http("p0", "POST", "/v1/queues/jobs/messages",
                                   {"body": 1, "id": "m1"}, rid="m1")
        ld = sim._leader()
        assert ok and ld is not None
        return ld.service("queues").get("jobs").messages["m1"].enq_ms, ld.clock.wall_ms()

    asyncio.set_event_loop(sim.loop)
    try:
        enq_ms, now_ms = sim.loop.run_until_complete(enqueue())
    finally:
        _close(sim.loop)
    assert now_ms - 1000 < enq_ms <= now_ms, (enq_ms, now_ms)


def test_planted_damaged_node_voting_is_found(monkeypatch) -> None:
    """Plant the bug protocol-aware recovery exists to prevent (issue 17): a node whose disk
    lost what it had made durable votes as if it had not. The simulation damages stopped
    nodes' disks, and its checks must catch the vote (or what it causes: a lost write)."""
    from distsync.raft.core import Raft

    monkeypatch.setattr(Raft, "_refuses_votes", lambda self: False)
    _, msg = first_failure("a damaged node that votes", lambda faults: any(
        k.startswith("disk.damage.") for k in faults))
    assert "while recovering" in msg or "linearizable" in msg or "leader completeness" in msg \
        or "committed" in msg, msg[:400]


def test_the_virtual_loop_jumps_time_and_reports_a_deadlock() -> None:
    loop = VirtualLoop()
    try:
        import asyncio

        t0 = loop.time()
        loop.run_until_complete(asyncio.sleep(3600))
        assert 3600 <= loop.time() - t0 < 3600.01
        with pytest.raises(Deadlock):
            loop.run_until_complete(loop.create_future())
    finally:
        loop.close()


def test_the_lock_checks_see_two_exclusive_holders_and_a_token_going_back() -> None:
    from distsync.services.locks_graph import Hold, Lock

    sim = Simulation(0)
    from distsync.services.locks import LockService
    from distsync.testing.sim import RecordingRegistry

    reg = RecordingRegistry([LockService()], lambda *a: None)
    svc = reg.services["locks"]
    lk = svc.locks["L"] = Lock("L", token=9)
    lk.holders["s1"] = Hold(EXCLUSIVE, 9, 0)
    sim._check_locks("n1", reg, 9)
    assert sim.violation is None
    lk.token = 5
    sim._check_locks("n1", reg, 10)
    assert sim.violation is not None and "token went back" in sim.violation
    sim.violation = None
    lk.holders["s2"] = Hold(EXCLUSIVE, 5, 0)
    sim._check_locks("n1", reg, 11)
    assert sim.violation is not None and "mutual exclusion" in sim.violation
    sim.loop.close()


def test_the_queue_check_orders_deliveries_by_real_time_not_by_call() -> None:
    """Seed 8690 in the long run: two dequeues asked for at the same instant got the same
    message (counts 1 and 2, overlapping in time); the check sorted them by call time, then
    receipt, and saw the count go back. Only a delivery answered before another dequeue
    was asked for must have the lower count."""
    from types import SimpleNamespace

    from distsync.testing.sim import START

    # A stand-in for a node: the check reads only the queue service's messages.
    node = SimpleNamespace(service=lambda name: SimpleNamespace(queues={}))
    sim = Simulation(0)
    sim.q_attempted = {"m"}
    sim.q_deliveries = [(START + 1, START + 3, "m", "22:m", 2), (START + 1, START + 2, "m", "9:m", 1)]
    sim.check_queue(node)  # type: ignore[arg-type]
    assert sim.violation is None
    sim.q_deliveries.append((START + 4, START + 5, "m", "30:m", 2))
    sim.check_queue(node)  # type: ignore[arg-type]
    assert sim.violation is not None and "redelivered with count 2 after 2" in sim.violation
    sim.loop.close()


def test_planted_ephemeral_keys_outliving_their_session_are_found(monkeypatch) -> None:
    """Plant a kv that forgets to delete a session's keys when it ends: a key bound to an
    ended session then lives on, which the ephemeral check reports at the very apply."""
    from distsync.services.kv import KVStore

    monkeypatch.setattr(KVStore, "session_ended", lambda self, sid, index, reason: None)
    _, msg = first_failure("keys outliving their session")
    assert "ephemeral:" in msg, msg[:400]


def test_planted_binding_that_does_not_follow_the_last_put_is_found(monkeypatch) -> None:
    """Plant a kv whose put without a session leaves the old binding: the session's end
    then deletes a key no longer bound to it."""
    from distsync.services.kv import KVStore

    orig = KVStore._bind

    def sticky(self, key, sid):  # type: ignore[no-untyped-def]
        if sid is not None or key not in self.owner or key not in self.data:
            orig(self, key, sid)

    monkeypatch.setattr(KVStore, "_bind", sticky)
    _, msg = first_failure("a binding that ignores an unbinding put")
    assert "ephemeral:" in msg, msg[:400]


def test_planted_put_to_a_closed_session_is_found(monkeypatch) -> None:
    """Plant a kv that takes any session id as open: a put bound to a session its client
    closed is accepted (the API answer is a violation, and so is the key it leaves)."""
    from distsync.services.kv import KVStore

    def trusting(self, locks):  # type: ignore[no-untyped-def]
        self.session_open = lambda sid: True
        locks.on_session_end(self.session_ended)

    monkeypatch.setattr(KVStore, "bind_sessions", trusting)
    _, msg = first_failure("a put to a closed session")
    assert "ephemeral:" in msg or ("answered 200" in msg and "/v1/kv/e/" in msg), msg[:400]


def test_planted_cache_invalidation_ignored_is_found(monkeypatch) -> None:
    """Plant a cache node that acknowledges an invalidation but keeps its copy: a later GET
    there returns a value older than an acknowledged PUT, which the cache check reports."""
    from distsync.cache.protocol import INV
    from distsync.cache.service import CacheService

    async def ack_only(self, msg):  # type: ignore[no-untyped-def]
        return {"ok": True}

    monkeypatch.setitem(CacheService._handlers, INV, ack_only)  # (dispatch's table)
    _, msg = first_failure("the planted cache bug")
    assert "stale read" in msg, msg[:400]


@pytest.mark.parametrize("hs,entries,what", [
    ((2, "n2", 2), [], "durable term went back"),
    ((3, "n3", 2), [], "durable vote in term 3 changed"),
    ((3, "n2", 1), [], "durable commit went back"),
    (None, [(2, 4)], "overwrites durable commit"),
    ((3, "n2", 5), [], "durable commit 5 past the log's end"),
])
def test_the_disk_checks_see_durable_state_going_wrong(hs, entries, what) -> None:
    from distsync.raft.types import Entry, HardState
    from distsync.testing.sim import CheckedImage

    fails: list[str] = []
    im = CheckedImage("n1", {}, fails.append)
    im.write(HardState(3, "n2", 0), [Entry(1, 1, data=b"a"), Entry(2, 3, data=b"b")], None)
    im.write(HardState(3, "n2", 2), [], None)
    im.write(HardState(3, "n2", 2), [Entry(3, 3, data=b"c")], None)  # allowed: after commit
    assert fails == []
    im.write(HardState(*hs) if hs else None, [Entry(i, t, data=b"x") for i, t in entries],
             None)
    assert len(fails) == 1 and what in fails[0], fails


def test_the_disk_checks_see_log_matching_broken() -> None:
    from distsync.raft.types import Entry

    fails: list[str] = []
    log_ids: dict = {}
    from distsync.testing.sim import CheckedImage

    a = CheckedImage("n1", log_ids, fails.append)
    b = CheckedImage("n2", log_ids, fails.append)
    a.write(None, [Entry(1, 1, data=b"x"), Entry(2, 2, data=b"y")], None)
    b.write(None, [Entry(1, 1, data=b"x"), Entry(2, 2, data=b"y")], None)
    assert fails == []
    b.write(None, [Entry(2, 2, data=b"other")], None)
    assert "different entry at (2, term 2)" in fails[-1]
    c = CheckedImage("n3", log_ids, fails.append)
    c.write(None, [Entry(1, 3, data=b"z"), Entry(2, 2, data=b"y")], None)
    assert "follows term 3" in fails[-1]


def test_planted_leader_that_ignores_its_logs_cluster_id_is_found(monkeypatch) -> None:
    """Plant the bug `Raft._noop` exists to prevent: every leader gives the cluster a new
    id instead of the one its log carries. Members would then refuse each other's streams
    as two clusters' after the next election, and the checks must see two committed ids."""
    import hashlib

    from distsync.raft.core import Raft
    from distsync.raft.types import EntryType

    def fresh(self):  # type: ignore[no-untyped-def]
        return EntryType.NOOP, hashlib.blake2b(
            f"{self.id}:{self.term}".encode(), digest_size=16).digest()

    monkeypatch.setattr(Raft, "_noop", fresh)
    _, msg = first_failure("a leader with a new cluster id")
    assert "holds cluster id" in msg, msg[:400]
