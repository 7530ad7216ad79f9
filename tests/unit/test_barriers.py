"""BarrierService as a pure state machine: barriers (set, remove, generations, session-bound)
and double barriers (rounds, n agreement, next rounds, session end counts as leaving), then
random sequences (hypothesis) against a plain model with "nobody passes early" checked after
every step and snapshot round trips at random points."""

from __future__ import annotations

from typing import Any

from coord_world import World
from hypothesis import given, settings
from hypothesis import strategies as st


def enter(w: World, sid: str, name: str = "d", n: int = 3) -> Any:
    return w.do("barriers", "enter", session=sid, barrier=name, n=n)


def leave(w: World, sid: str, name: str = "d") -> Any:
    return w.do("barriers", "leave", session=sid, barrier=name)


# -- barrier -------------------------------------------------------------------------------


def test_barrier_set_remove_and_generations() -> None:
    w = World()
    assert w.barriers.generation("b") is None
    r = w.do("barriers", "set", barrier="b")
    assert r["created"] and r["generation"] == w.index
    g = r["generation"]
    again = w.do("barriers", "set", barrier="b")
    assert not again["created"] and again["generation"] == g
    assert w.do("barriers", "remove", barrier="b")["removed"]
    assert w.do("barriers", "remove", barrier="b") == {"barrier": "b", "removed": False}
    r2 = w.do("barriers", "set", barrier="b")
    assert r2["generation"] > g  # raised again: a waiter of g is still released


def test_a_session_bound_barrier_goes_with_its_session() -> None:
    w = World()
    a = w.open()
    assert w.do("barriers", "set", barrier="b", session=a)["session"] == a
    w.do("barriers", "set", barrier="other")
    w.expire(a)
    assert w.barriers.generation("b") is None
    assert w.barriers.generation("other") is not None
    r = w.do("barriers", "set", barrier="c", session="s999")
    assert r["error"] == "session_not_found" and r["status"] == 404
    assert w.barriers.generation("c") is None


# -- double barrier ------------------------------------------------------------------------


def test_enter_is_released_when_n_have_entered_and_leave_when_all_left() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    ra = enter(w, a)
    assert ra["entered"] and not ra["ready"] and ra["count"] == 1
    assert not enter(w, b)["ready"]
    rc = enter(w, c)
    assert rc["ready"] and rc["full"] == w.index
    r = ra["round"]
    assert w.barriers.enter_state("d", a)["ready"]
    la = leave(w, a)
    assert la == {"barrier": "d", "left": True, "done": False, "round": r, "remaining": 2,
                  "n": 3}
    assert not leave(w, b)["done"]
    assert leave(w, c)["done"]
    assert w.barriers.leave_state("d", r)["done"]
    assert "d" not in w.barriers.doubles


def test_n_must_agree_and_bad_input_changes_nothing() -> None:
    w = World()
    a, b = w.open(), w.open()
    enter(w, a, n=3)
    before = w.snapshot()
    r = enter(w, b, n=2)
    assert r["error"] == "n_conflict" and r["n"] == 3 and r["status"] == 409
    assert w.do("barriers", "enter", session=b, barrier="d", n=0)["status"] == 400
    assert w.do("barriers", "enter", session=b, barrier="d", n=True)["status"] == 400
    assert enter(w, "s999")["error"] == "session_not_found"
    assert leave(w, b)["error"] == "not_entered"
    assert w.snapshot() == before


def test_leave_before_full_withdraws() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    enter(w, a)
    enter(w, b)
    r = leave(w, a)
    assert r["withdrawn"] and r["done"]
    assert not enter(w, c)["ready"]  # b and c: still two
    assert enter(w, a)["ready"]


def test_session_end_counts_as_leaving_and_removes_it_from_enter() -> None:
    w = World()
    a, b, c, d = w.open(), w.open(), w.open(), w.open()
    enter(w, a)
    enter(w, b)
    w.close(a)  # entering round: a is withdrawn
    assert w.barriers.double_info("d")["entered"] == [b]
    enter(w, c)
    assert enter(w, d)["ready"]
    r = w.barriers.double_info("d")["round"]
    leave(w, b)
    leave(w, c)
    assert not w.barriers.leave_state("d", r)["done"]
    w.expire(d)  # full round: d's end is its leave, the last one
    assert w.barriers.leave_state("d", r)["done"]


def test_an_early_enter_waits_for_the_next_round() -> None:
    w = World()
    a, b = w.open(), w.open()
    enter(w, a, n=2)
    r1 = enter(w, b, n=2)["round"]
    leave(w, a)
    # a starts its next iteration while b has not left: it waits for round 2
    nxt = enter(w, a, n=2)
    assert nxt["entered"] and not nxt["ready"] and nxt["next_round"]
    assert w.barriers.enter_state("d", a)["next_round"]
    done = leave(w, b)
    assert done["done"] and done["round"] == r1
    info = w.barriers.double_info("d")
    assert info["entered"] == [a] and info["round"] == w.index and info["full"] is None
    assert enter(w, b, n=2)["ready"]


def test_snapshot_round_trip_of_barriers() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    w.do("barriers", "set", barrier="b1", session=a)
    enter(w, a, n=2)
    enter(w, b, n=2)
    leave(w, a)
    enter(w, a, n=2)
    enter(w, c, "e", n=3)
    r = w.restored()
    assert r.snapshot() == w.snapshot()
    for world in (w, r):
        world.close(b)
    assert r.snapshot() == w.snapshot()
    assert w.barriers.double_info("d")["entered"] == [a]


# -- random sequences against a model ----------------------------------------------------

SESSIONS = 4


class DModel:
    """One double barrier of n, plainly: round participants, who left, whether full, the
    next round's list."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.entered: list[str] = []
        self.left: set[str] = set()
        self.full = False
        self.next: list[str] = []

    def done_check(self) -> bool:
        if self.full and len(self.left) == len(self.entered):
            self.entered, self.next = self.next[:self.n], self.next[self.n:]
            self.left = set()
            self.full = len(self.entered) == self.n
            return True
        return False

    def enter(self, sid: str) -> None:
        if sid in self.next or (sid in self.entered and sid not in self.left):
            return
        if self.full:
            self.next.append(sid)
        else:
            self.entered.append(sid)
            self.full = len(self.entered) == self.n

    def leave(self, sid: str) -> str:
        if sid not in self.entered and sid not in self.next:
            return "not_entered"
        if sid in self.next and (sid not in self.entered or sid in self.left):
            self.next.remove(sid)
            return "withdrawn"
        if not self.full:
            self.entered.remove(sid)
            return "withdrawn"
        self.left.add(sid)
        self.done_check()
        return "left"

    def end(self, sid: str) -> None:
        if sid in self.next:
            self.next.remove(sid)
        if sid in self.entered:
            if not self.full:
                self.entered.remove(sid)
            elif sid not in self.left:
                self.left.add(sid)
                self.done_check()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), st.lists(st.tuples(
    st.sampled_from(["enter"] * 4 + ["leave"] * 3 + ["end", "open", "snapshot"]),
    st.integers(0, SESSIONS - 1), st.booleans()), min_size=1, max_size=60))
def test_random_double_barrier_sequences(n: int, steps: list[tuple[str, int, bool]]) -> None:
    w = World()
    m = DModel(n)
    sids = [w.open() for _ in range(SESSIONS)]
    events: list[tuple[str, int, int]] = []
    w.barriers.observers.append(lambda kind, name, r, idx: events.append((kind, r, idx)))
    for kind, k, flag in steps:
        sid = sids[k]
        alive = w.locks.session_open(sid)
        if kind == "snapshot":
            w = w.restored()
            w.barriers.observers.append(lambda kind, name, r, idx: events.append((kind, r, idx)))
            continue
        if kind == "open":
            sids[k] = w.open()
            continue
        if kind == "enter":
            r = enter(w, sid, n=n)
            if not alive:
                assert r["error"] == "session_not_found"
                continue
            m.enter(sid)
            st_ = w.barriers.enter_state("d", sid)
            assert r == st_
            # nobody passes early: ready only in a round that holds n entered sessions
            if r["ready"]:
                info = w.barriers.double_info("d")
                assert len(info["entered"]) == n and info["full"]
        elif kind == "leave":
            r = leave(w, sid)
            if not alive:
                assert r["error"] == "session_not_found"
                continue
            want = m.leave(sid)
            if want == "not_entered":
                assert r["error"] == "not_entered"
            elif want == "withdrawn":
                assert r["withdrawn"] and r["done"]
            else:
                # done only if every participant of its round has left
                assert r["done"] == (("done", r["round"], w.index) in events)
        elif kind == "end":
            if alive:
                (w.close if flag else w.expire)(sid)
                m.end(sid)
        info = w.barriers.double_info("d")
        assert info["entered"] == m.entered
        assert set(info["left"]) == m.left
        assert bool(info["full"]) == m.full
        assert info["next"] == m.next
        assert len(info["entered"]) <= n
        assert set(info["left"]) <= set(info["entered"])
        if info["left"]:
            assert info["full"]  # no one leaves (as opposed to withdraws) an unfilled round
    # every round that was done had been full first, at an earlier or the same index
    full_at = {r: idx for kind, r, idx in events if kind == "full"}
    for kind, r, idx in events:
        if kind == "done":
            assert r in full_at and full_at[r] <= idx
    assert w.restored().snapshot() == w.snapshot()
