"""The workload checkers and the nemesis schedule on small hand-made inputs (no cluster).

Each history is built event by event with explicit times, so the case reads as a timeline.
"""

from __future__ import annotations

from typing import Any

from distsync.testing.history import Event, History
from distsync.testing.nemesis import FAULTS, PROCESS_FAULTS, make_schedule
from distsync.testing.wl_cache import CacheWorkload
from distsync.testing.wl_locks import LocksWorkload
from distsync.testing.wl_queue import QueueWorkload


class Timeline:
    """Append operations with explicit [call, ret] times (seconds)."""

    def __init__(self, workload: str):
        self.h = History(t0=0)
        self.workload = workload

    def _ev(self, type_: str, process: str, f: str, key: Any, value: Any, t: float,
            invoke: int | None = None, error: str | None = None) -> Event:
        e = Event(len(self.h.events), type_, self.workload, process, f, key, value,
                  int(t * 1e9), 0.0, error, invoke)
        self.h.events.append(e)
        return e

    def op(self, process: str, f: str, key: Any, inp: Any, call: float, ret: float | None,
           out: Any = None, type_: str = "ok", error: str | None = None) -> None:
        inv = self._ev("invoke", process, f, key, inp, call)
        if ret is not None:
            self._ev(type_, process, f, key, out, ret, inv.index, error)


# -- queue ------------------------------------------------------------------------------------


def _msg(mid: str, seq: int, part: int, receipt_index: int, deliveries: int = 1,
         body: Any = None) -> dict[str, Any]:
    return {"id": mid, "seq": seq, "partition": part, "receipt": f"{receipt_index}:{mid}",
            "deliveries": deliveries, "body": body if body is not None else {"m": mid}}


def _enqueue(t: Timeline, mid: str, call: float, ret: float | None, ok: bool = True) -> None:
    t.op("p0", "enqueue", mid, ["enqueue", mid, {"m": mid}], call, ret, {"id": mid},
         "ok" if ok else "info")


def test_queue_valid_history() -> None:
    t = Timeline("queue")
    _enqueue(t, "a", 0, 1)
    _enqueue(t, "b", 2, 3)
    _enqueue(t, "c", 4, None, ok=False)  # unknown outcome: may or may not be delivered
    t.op("c0", "dequeue", None, ["dequeue", "c0"], 5, 6,
         {"messages": [_msg("a", 1, 0, 10), _msg("b", 2, 0, 10)]})
    t.op("c0", "ack", "a", ["ack", "10:a"], 7, 8, {"acked": 1})
    t.op("c0", "dequeue", None, ["dequeue", "c0"], 9, 10,
         {"messages": [_msg("b", 2, 0, 20, deliveries=2)]})  # b not acked: redelivered
    v = QueueWorkload.check(t.h)
    assert v.valid is True, v.problems


def test_queue_lost_invented_and_out_of_order() -> None:
    t = Timeline("queue")
    _enqueue(t, "a", 0, 1)
    _enqueue(t, "b", 2, 3)
    _enqueue(t, "lost", 4, 5)
    t.op("c0", "dequeue", None, ["dequeue", "c0"], 6, 7,
         {"messages": [_msg("b", 2, 0, 10), _msg("ghost", 9, 1, 10)]})
    t.op("c0", "dequeue", None, ["dequeue", "c0"], 8, 9, {"messages": [_msg("a", 1, 0, 11)]})
    t.op("c0", "ack", "b", ["ack", "10:b"], 10, 11, {"acked": 1})
    t.op("c1", "dequeue", None, ["dequeue", "c1"], 12, 13,
         {"messages": [_msg("b", 2, 0, 30, deliveries=2)]})
    problems = "\n".join(QueueWorkload.check(t.h).problems)
    assert "delivered ghost, which was never enqueued" in problems
    assert "1 acknowledged enqueues never delivered: ['lost']" in problems
    assert "partition 0: a (seq 1) first delivered after b (seq 2)" in problems
    assert "b delivered again by a dequeue sent after its ack succeeded" in problems


def test_queue_seq_against_real_time() -> None:
    t = Timeline("queue")
    _enqueue(t, "a", 0, 1)
    _enqueue(t, "b", 2, 3)  # acknowledged after a, yet given the smaller seq
    t.op("c0", "dequeue", None, ["dequeue", "c0"], 4, 5,
         {"messages": [_msg("b", 1, 0, 10), _msg("a", 2, 0, 10)]})
    problems = QueueWorkload.check(t.h).problems
    assert any("a was acknowledged before b was sent" in p for p in problems), problems


# -- cache ------------------------------------------------------------------------------------


def test_cache_stale_read_and_concurrent_read() -> None:
    t = Timeline("cache")
    t.op("0", "put", "k", ["put", 1, "n1"], 0, 1, {"version": 1})
    t.op("0", "put", "k", ["put", 2, "n1"], 2, 3, {"version": 2})
    t.op("1", "get", "k", ["get", "n2"], 2.5, 2.6, {"value": 1})  # concurrent with put 2: ok
    t.op("2", "put", "k", ["put", 3, "n3"], 3.5, None, type_="info")  # unknown outcome
    t.op("1", "get", "k", ["get", "n2"], 4, 5, {"value": 3})  # it may have happened: ok
    assert CacheWorkload.check(t.h).valid is True
    t.op("1", "get", "k", ["get", "n2"], 6, 7, {"value": 1})  # after put 2 acked: stale
    t.op("1", "get", "k", ["get", "n2"], 8, 9, {"value": None})  # nothing: stale too
    problems = CacheWorkload.check(t.h).problems
    assert len(problems) == 2
    assert "stale read on n2 at 6.000s: got 1" in problems[0]
    assert "found nothing after 2 acknowledged PUTs" in problems[1]


# -- locks --------------------------------------------------------------------------------------


def test_lock_tokens_and_overlap() -> None:
    t = Timeline("locks")
    t.op("a", "acquire", "L", ["acquire", "sa"], 0, 1, {"granted": True, "token": 10})
    t.op("a", "release", "L", ["release", "sa"], 2, 3, {"released": True})
    t.op("b", "acquire", "L", ["acquire", "sb"], 4, 5, {"granted": True, "token": 12})
    t.op("b", "release", "L", ["release", "sb"], 6, 7, {"released": True})
    assert LocksWorkload.fencing_problems(t.h) == []
    assert LocksWorkload.check(t.h).valid is True
    # c is granted token 11 after b's token 12 was handed out: not increasing in real time;
    # and b's token reused by d.
    t.op("c", "acquire", "L", ["acquire", "sc"], 8, 9, {"granted": True, "token": 11})
    t.op("d", "acquire", "L", ["acquire", "sd"], 10, 11, {"granted": True, "token": 12})
    problems = "\n".join(LocksWorkload.fencing_problems(t.h))
    assert "token 11 granted after token 12" in problems
    assert "token 12 granted to sb and sd" in problems


def test_lock_overlap_by_release_after_newer_grant() -> None:
    t = Timeline("locks")
    t.op("a", "acquire", "L", ["acquire", "sa"], 0, 1, {"granted": True, "token": 10})
    t.op("b", "acquire", "L", ["acquire", "sb"], 2, 3, {"granted": True, "token": 12})
    t.op("a", "release", "L", ["release", "sa"], 4, 5, {"released": True})
    problems = LocksWorkload.fencing_problems(t.h)
    assert problems == ["L: sa (token 10) still held it when sb was granted token 12"]
    assert LocksWorkload.check(t.h).valid is False  # and the mutex model agrees


def test_lock_unknown_outcome_bounded_by_session_close() -> None:
    def history(final_holder: str | None) -> History:
        t = Timeline("locks")
        t.op("a", "acquire", "L", ["acquire", "sa"], 0, None, type_="info")
        t.op("a", "close", None, ["close", "sa", ["L"]], 1, 2, {"closed": True})
        t.op("b", "acquire", "L", ["acquire", "sb"], 3, 4, {"granted": True, "token": 7})
        t.op("b", "release", "L", ["release", "sb"], 5, 6, {"released": True})
        holders = [{"session": final_holder}] if final_holder else []
        t.op("r", "holder", "L", ["holder", None], 7, 8, {"holders": holders})
        return t.h

    assert LocksWorkload.check(history(None)).valid is True
    # sa's acquire had an unknown outcome, but it cannot take effect after sa's session was
    # closed: sa holding the lock at the end is a violation (unbounded, it would pass).
    assert LocksWorkload.check(history("sa")).valid is False


# -- nemesis ------------------------------------------------------------------------------------


def test_schedule_is_a_function_of_the_seed() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    a = make_schedule(42, 25, list(FAULTS), nodes)
    assert a == make_schedule(42, 25, list(FAULTS), nodes)
    assert a != make_schedule(43, 25, list(FAULTS), nodes)
    assert a and all(2.0 <= s.at and s.at + s.duration <= 25 - 4 for s in a)
    assert all(b.at >= x.at + x.duration + 1.0 for x, b in zip(a, a[1:], strict=False))
    for s in make_schedule(7, 60, PROCESS_FAULTS, nodes):
        assert not FAULTS[s.fault][0]
    halves = make_schedule(3, 300, ["partition-halves"], nodes)
    assert all(len(s.params["minority"]) == 2 and len(s.params["majority"]) == 3
               for s in halves)
