"""The linearizability checker (distsync.testing.linearizability) on hand-made histories.

Each history is written as a timeline: (process, call, return, input, output), with return
None for an operation whose outcome the client never learnt. Every case states why it is or
is not linearizable, so a reader can check the checker.
"""

from __future__ import annotations

import random

import pytest

from distsync.testing.history import History
from distsync.testing.linearizability import (
    KVModel,
    MutexModel,
    Operation,
    RegisterModel,
    check,
    check_operations,
)


def ops(*rows: tuple) -> list[Operation]:
    out = []
    for i, row in enumerate(rows):
        if len(row) == 5:
            p, call, ret, inp, out_ = row
            key = None
        else:
            p, call, ret, inp, out_, key = row
        out.append(Operation(call, ret, inp, out_, p, key, i))
    return out


REG = RegisterModel()


# -- register: linearizable -----------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check(REG, []).valid is True


def test_sequential_put_get() -> None:
    h = ops((0, 0, 1, ("put", 1), None), (0, 2, 3, ("get",), 1))
    r = check_operations(REG, h)
    assert r.valid is True and r.linearization == [0, 1]


def test_concurrent_read_may_see_old_or_new() -> None:
    # The put of 2 overlaps both reads: one sees 1, the other 2, in an order that works.
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (0, 2, 10, ("put", 2), None),
        (1, 3, 4, ("get",), 1),
        (2, 5, 6, ("get",), 2),
    )
    assert check(REG, h).valid is True


def test_read_of_absent_key() -> None:
    h = ops((0, 0, 1, ("get",), None), (0, 2, 3, ("put", 5), None), (1, 4, 5, ("get",), 5))
    assert check(REG, h).valid is True


def test_cas_success_and_failure() -> None:
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (0, 2, 3, ("cas", 1, 2), True),
        (1, 4, 5, ("cas", 1, 3), False),  # it is 2 now, so this compare fails
        (1, 6, 7, ("get",), 2),
        (1, 8, 9, ("cas", None, 4), False),  # "only if absent" fails: the key exists
    )
    assert check(REG, h).valid is True


def test_delete_reports_whether_it_existed() -> None:
    h = ops(
        (0, 0, 1, ("delete",), False),
        (0, 2, 3, ("put", 1), None),
        (0, 4, 5, ("delete",), True),
        (0, 6, 7, ("get",), None),
        (0, 8, 9, ("cas", None, 7), True),
        (0, 10, 11, ("get",), 7),
    )
    assert check(REG, h).valid is True


# -- register: not linearizable -------------------------------------------------------------


def test_stale_read_after_acknowledged_write() -> None:
    # put(2) returned at 3; a read that starts after that must not see 1.
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (0, 2, 3, ("put", 2), None),
        (1, 4, 5, ("get",), 1),
    )
    r = check(REG, h)
    assert r.valid is False
    assert "could not linearize" in r.summary()


def test_read_of_value_never_written() -> None:
    h = ops((0, 0, 1, ("put", 1), None), (1, 2, 3, ("get",), 99))
    assert check(REG, h).valid is False


def test_lost_acknowledged_write() -> None:
    # The write was acknowledged, then a later read finds the key absent.
    h = ops((0, 0, 1, ("put", 1), None), (1, 5, 6, ("get",), None))
    assert check(REG, h).valid is False


def test_two_reads_disagree_on_order() -> None:
    # Two sequential reads by one client: 2 then 1, but 1 was overwritten by 2 and never again.
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, 20, ("put", 2), None),
        (2, 3, 4, ("get",), 2),
        (2, 5, 6, ("get",), 1),
    )
    assert check(REG, h).valid is False


def test_cas_that_should_have_failed() -> None:
    # Both compare-and-sets from 1 succeed: only one can.
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, 5, ("cas", 1, 2), True),
        (2, 3, 6, ("cas", 1, 3), True),
    )
    assert check(REG, h).valid is False


def test_failed_cas_that_should_have_succeeded() -> None:
    h = ops((0, 0, 1, ("put", 1), None), (1, 2, 3, ("cas", 1, 2), False))
    assert check(REG, h).valid is False


def test_delete_claims_a_value_that_was_not_there() -> None:
    h = ops((0, 0, 1, ("delete",), True))
    assert check(REG, h).valid is False


# -- indeterminate operations -----------------------------------------------------------------


def test_timed_out_write_may_have_happened() -> None:
    # put(2) timed out (ret None); a later read seeing 2 is fine ...
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, None, ("put", 2), None),
        (2, 10, 11, ("get",), 2),
    )
    assert check(REG, h).valid is True


def test_timed_out_write_may_not_have_happened() -> None:
    # ... and so is a read seeing 1, even long after the timeout.
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, None, ("put", 2), None),
        (2, 10, 11, ("get",), 1),
    )
    assert check(REG, h).valid is True


def test_timed_out_write_takes_effect_late() -> None:
    # The timed-out write may land after other operations: 1, then 3, then 2 (late).
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, None, ("put", 2), None),
        (2, 3, 4, ("get",), 1),
        (2, 5, 6, ("put", 3), None),
        (2, 7, 8, ("get",), 3),
        (2, 9, 10, ("get",), 2),
    )
    assert check(REG, h).valid is True


def test_timed_out_write_cannot_take_effect_twice() -> None:
    # 2 appears, is overwritten by 3, then appears again: one write of 2 cannot do that.
    h = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, None, ("put", 2), None),
        (2, 3, 4, ("get",), 2),
        (2, 5, 6, ("put", 3), None),
        (2, 7, 8, ("get",), 3),
        (2, 9, 10, ("get",), 2),
    )
    assert check(REG, h).valid is False


def test_timed_out_write_cannot_take_effect_before_its_call() -> None:
    h = ops(
        (0, 0, 1, ("get",), 2),
        (1, 5, None, ("put", 2), None),
    )
    assert check(REG, h).valid is False


def test_timed_out_cas_is_conditional() -> None:
    # An indeterminate cas(1 -> 2) may take effect only where the value is 1.
    ok = ops(
        (0, 0, 1, ("put", 1), None),
        (1, 2, None, ("cas", 1, 2), None),
        (2, 3, 4, ("get",), 2),
    )
    assert check(REG, ok).valid is True
    bad = ops(
        (0, 0, 1, ("put", 5), None),
        (1, 2, None, ("cas", 1, 2), None),
        (2, 3, 4, ("get",), 2),
    )
    assert check(REG, bad).valid is False


# -- partitioning, budget, history plumbing --------------------------------------------------------


def test_kv_partitions_by_key_and_names_the_bad_key() -> None:
    h = ops(
        (0, 0, 1, ("put", 1), None, "a"),
        (0, 2, 3, ("put", 1), None, "b"),
        (1, 4, 5, ("get",), 1, "a"),
        (1, 6, 7, ("get",), None, "b"),  # lost write on b only
    )
    r = check(KVModel(), h)
    assert r.valid is False
    assert [p.key for p in r.failures] == ["b"]
    assert {p.key: p.valid for p in r.partitions} == {"a": True, "b": False}


def test_budget_exhaustion_is_unknown_not_a_verdict() -> None:
    # Many concurrent indeterminate writes and one impossible read: exploring the orders is
    # huge, and with a tiny budget the answer must be "unknown".
    rows = [(i, 0, None, ("put", i), None) for i in range(12)]
    rows.append((99, 1, 2, ("get",), 1000))
    r = check(REG, ops(*rows), max_steps=50)
    assert r.valid is None and r.unknown


def test_history_round_trip_and_operations(tmp_path) -> None:
    h = History()
    a = h.invoke("kv", "0.0", "put", "k", ["put", 1])
    h.ok(a, {"revision": 7})
    b = h.invoke("kv", "1.0", "put", "k", ["put", 2])
    h.info(b, "timeout")
    c = h.invoke("kv", "2.0", "cas", "k", ["cas", 3, 4])
    h.fail(c, False, "compare_failed")
    h.nemesis("partition", {"groups": [["n1"], ["n2", "n3"]]})
    path = h.dump(tmp_path / "h.jsonl")
    back = History.load(path)
    got = back.operations("kv", skip_failed=False)
    assert [(o.input, o.pending) for o in got] == [
        (["put", 1], False), (["put", 2], True), (["cas", 3, 4], False),
    ]
    assert back.counts()["kv"] == {"ok": 1, "info": 1, "fail": 1}
    assert len(back.nemesis_events()) == 1
    with pytest.raises(RuntimeError):
        h.ok(a)


# -- mutex ----------------------------------------------------------------------------------------


MUTEX = MutexModel()


def test_mutex_linearizable() -> None:
    h = ops(
        ("a", 0, 1, ("acquire", "a"), True),
        ("b", 2, 3, ("acquire", "b"), False),
        ("a", 4, 5, ("release", "a"), True),
        ("b", 6, 7, ("acquire", "b"), True),
        ("a", 8, 9, ("release", "a"), False),  # a no longer holds it
    )
    assert check(MUTEX, h).valid is True


def test_mutex_two_holders_is_a_violation() -> None:
    h = ops(
        ("a", 0, 1, ("acquire", "a"), True),
        ("b", 2, 3, ("acquire", "b"), True),
    )
    r = check(MUTEX, h)
    assert r.valid is False


def test_mutex_timed_out_acquire_may_hold_the_lock() -> None:
    # a's acquire timed out; b is refused afterwards: consistent with a having got it.
    h = ops(
        ("a", 0, None, ("acquire", "a"), None),
        ("b", 5, 6, ("acquire", "b"), False),
    )
    assert check(MUTEX, h).valid is True


def test_mutex_reentrancy_and_close() -> None:
    again = ops(("a", 0, 1, ("acquire", "a"), True), ("a", 2, 3, ("acquire", "a"), True))
    assert check(MUTEX, again).valid is False  # not reentrant by default
    assert check(MutexModel(reentrant=True), again).valid is True
    # Closing a's session frees the lock for b; before the close, b is refused.
    h = ops(
        ("a", 0, 1, ("acquire", "a"), True),
        ("b", 2, 3, ("acquire", "b"), False),
        ("a", 4, 5, ("close", "a"), None),
        ("b", 6, 7, ("acquire", "b"), True),
    )
    assert check(MUTEX, h).valid is True
    early = ops(
        ("a", 0, 1, ("acquire", "a"), True),
        ("b", 2, 3, ("acquire", "b"), True),  # granted before a's close even began
        ("a", 4, 5, ("close", "a"), None),
    )
    assert check(MUTEX, early).valid is False


def test_mutex_holder_reads() -> None:
    h = ops(
        ("a", 0, 1, ("acquire", "a"), True),
        ("r", 2, 3, ("holder", None), "a"),
        ("a", 4, 5, ("release", "a"), True),
        ("r", 6, 7, ("holder", None), None),
    )
    assert check(MUTEX, h).valid is True
    lost = ops(("a", 0, 1, ("acquire", "a"), True), ("r", 2, 3, ("holder", None), None))
    assert check(MUTEX, lost).valid is False  # an acknowledged grant vanished


def test_mutex_release_by_non_holder_accepted_is_a_violation() -> None:
    h = ops(("a", 0, 1, ("acquire", "a"), True), ("b", 2, 3, ("release", "b"), True))
    assert check(MUTEX, h).valid is False


# -- a randomized cross-check against brute force ------------------------------------------------


def _brute_force(model: RegisterModel, hist: list[Operation]) -> bool:
    """Try every order consistent with real time (tiny histories only)."""
    import itertools

    n = len(hist)
    for perm in itertools.permutations(range(n)):
        pos = {op: i for i, op in enumerate(perm)}
        if any(
            hist[b].ret is not None and hist[b].ret < hist[a].call and pos[a] < pos[b]
            for a in range(n) for b in range(n) if a != b
        ):
            continue
        state, ok = model.init(), True
        for i in perm:
            ok, state = model.step(state, hist[i].input, hist[i].output)
            if not ok:
                break
        if ok:
            return True
    return False


@pytest.mark.parametrize("seed", range(300))
def test_agrees_with_brute_force_on_random_small_histories(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    rows = []
    for i in range(n):
        call = rng.randint(0, 20)
        ret = None if rng.random() < 0.15 else call + rng.randint(0, 8)
        kind = rng.choice(["get", "put", "cas", "delete"])
        if kind == "get":
            rows.append((i, call, ret, ("get",), None if ret is None else rng.choice([None, 1, 2])))
        elif kind == "put":
            rows.append((i, call, ret, ("put", rng.choice([1, 2])), None))
        elif kind == "cas":
            out = None if ret is None else rng.choice([True, False])
            rows.append((i, call, ret, ("cas", rng.choice([None, 1, 2]), rng.choice([1, 2])), out))
        else:
            rows.append((i, call, ret, ("delete",), None if ret is None else rng.random() < 0.5))
    h = ops(*rows)
    # The checker assumes an unknown op's effect may be pushed to the end; the brute force
    # must get the same freedom, which it has since an unknown op accepts any output.
    assert check_operations(REG, h).valid is _brute_force(REG, h), h
