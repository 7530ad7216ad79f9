"""The checkers on histories recorded by real chaos runs (tests/chaos/data/), so that what
the suite would say about a broken build is shown on every CI run, without breaking one.

* kv-commit-without-quorum.jsonl: recorded by hand from a deliberately broken build in which
  the Raft leader took its own match index as the commit index (raft/core.py
  `_maybe_commit`), i.e. it acknowledged writes that only its own disk held. Under
  `partitions` seed 3 the run went INVALID: acknowledged writes vanished (a read returned a
  value that an acknowledged delete had removed) and one log index was acknowledged for two
  different writes. The file keeps two keys of that run.
* locks-grant-while-held.jsonl: recorded by hand from a build whose lock service granted a
  lock without checking its holders (services/locks.py `_compatible` always true), the
  "lock that skips the fencing check" of the chaos issue. Under `crashes` seed 5 the run went
  INVALID at once: two sessions held one exclusive lock, and a holder's release succeeded
  after a later token had been granted. One lock of that run.
* cache-stale-read-joined-fill.jsonl: a real bug, found by this suite on the cache as first
  written (`mixed` seed 1889530262, all workloads): a GET sent to n1 after PUT 117 (version
  49) was acknowledged returned 107 (version 47), because it joined a miss fill whose GETS had
  gone to the key's home during 20% packet loss, before that PUT. cache/service.py no longer
  lets a GET join a fill already in flight. One key, 10.0-12.6 s of that run.
* cache-stale-hit-after-loss.jsonl: a second real cache bug found after that fix
  (`partitions` seed 1249761217): n5 wrote 21 (version 13); n1's PUT 24 (version 14) was
  acknowledged during 10% packet loss, yet n5 went on answering 21 (version 13) as a cache
  hit for five seconds. Cause: a FETCH from the home overtook a delayed E grant to n5, so n5
  held an unlisted E line. Fixed in cache/service.py (a FETCH poisons grants in flight).
* kv-valid-with-timeouts.jsonl: a correct build under `mixed` seed 11 (paused leader,
  whole-cluster restart, bridge and majority/minority partitions), one key that includes
  an operation with an unknown outcome: valid.
"""

from __future__ import annotations

from pathlib import Path

from distsync.testing.history import History
from distsync.testing.linearizability import KVModel, check
from distsync.testing.wl_cache import CacheWorkload
from distsync.testing.wl_kv import KVWorkload
from distsync.testing.wl_locks import LocksWorkload

DATA = Path(__file__).parent / "data"


def test_leader_committing_without_a_quorum_is_caught() -> None:
    h = History.load(DATA / "kv-commit-without-quorum.jsonl")
    assert "own match index" in h.meta["note"]
    v = KVWorkload.check(h)
    assert v.valid is False
    # The linearizability search pins the violation to one key and one read ...
    ops, _ = KVWorkload.operations(h)
    res = check(KVModel(), ops)
    assert [p.key for p in res.failures] == ["chaos/5d7e3bbd/kv/k0011"]
    assert "could not linearize" in res.failures[0].explanation
    assert "['get'] -> 701" in res.failures[0].explanation
    # ... and the revision check sees one log index acknowledged for two different writes.
    assert any("revision 835 seen with values 703 and 707" in p for p in v.problems)


def test_lock_granted_while_held_is_caught() -> None:
    h = History.load(DATA / "locks-grant-while-held.jsonl")
    v = LocksWorkload.check(h)
    assert v.valid is False
    assert "NOT linearizable" in v.detail and "could not linearize" in v.detail
    # Fencing tokens show it too: an older token's holder released after a newer grant.
    assert any("s5 (token 10) still held it when s9 was granted token 14" in p
               for p in v.problems)


def test_cache_stale_read_is_caught() -> None:
    v = CacheWorkload.check(History.load(DATA / "cache-stale-read-joined-fill.jsonl"))
    assert v.valid is False
    assert v.problems == [
        "chaos-5b4d59df-c0002: stale read on 10.77.27.1:7001 at 12.337s: got 107, whose PUT "
        "finished before a PUT acknowledged before this GET began"
    ]


def test_cache_stale_hit_after_lost_invalidation_is_caught() -> None:
    v = CacheWorkload.check(History.load(DATA / "cache-stale-hit-after-loss.jsonl"))
    assert v.valid is False
    assert v.problems[0].startswith("chaos-cbe70b5c-c0001: stale read on 10.77.13.5:7001 "
                                    "at 23.707s: got 21")
    assert all("stale read on 10.77.13.5" in p for p in v.problems)


def test_correct_run_with_indeterminate_operations_is_valid() -> None:
    h = History.load(DATA / "kv-valid-with-timeouts.jsonl")
    v = KVWorkload.check(h)
    assert v.valid is True, v.detail
    assert v.counts.get("info", 0) >= 1  # it does exercise unknown outcomes
    # Not vacuous: one forged read (a value never written) makes the same history invalid.
    ops, _ = KVWorkload.operations(h)
    reads = [o for o in ops if o.input[0] == "get" and o.output is not None]
    forged = [o if o is not reads[-1] else type(o)(o.call, o.ret, o.input, -1, o.process,
                                                     o.key, o.id) for o in ops]
    assert check(KVModel(), forged).valid is False
