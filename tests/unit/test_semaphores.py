"""SemaphoreService as a pure state machine bound to the lock service's sessions and
wait-for graph: examples of each rule, then random command sequences (hypothesis) against a
plain model, with invariants after every step and snapshot round trips at random points."""

from __future__ import annotations

from typing import Any

from coord_world import World
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.locks_graph import all_cycles

# -- examples ----------------------------------------------------------------------------


def test_permits_are_counted_and_granted_at_once_while_free() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    ra = w.acquire(a, "pool", 2)
    rb = w.acquire(b, "pool", 2)
    assert ra["granted"] and rb["granted"]
    assert ra["token"] < rb["token"]
    rc = w.acquire(c, "pool", 2)
    assert rc["error"] == "timeout" and rc["status"] == 409 and rc["free"] == 0
    assert w.sems.info("pool")["free"] == 0


def test_fifo_a_big_request_at_the_head_is_not_overtaken() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    w.acquire(a, "pool", 3, count=2)
    big = w.acquire(b, "pool", 3, count=3, wait_ms=1000)
    assert big["waiting"] and big["position"] == 0
    # one permit is free, but c queues behind b
    small = w.acquire(c, "pool", 3, count=1, wait_ms=1000)
    assert small["waiting"] and small["position"] == 1
    rel = w.release(a, "pool")
    assert rel["released"] and rel["granted"] == [b]
    assert w.sems.wait_state(big["wait_id"])["state"] == "granted"
    assert w.sems.wait_state(big["wait_id"])["token"] == rel["index"]
    rel = w.release(b, "pool")
    assert rel["granted"] == [c]


def test_one_release_grants_a_run_of_waiters_with_the_same_token() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    w.acquire(a, "pool", 2, count=2)
    wb = w.acquire(b, "pool", 2, wait_ms=1000)
    wc = w.acquire(c, "pool", 2, wait_ms=1000)
    rel = w.release(a, "pool")
    assert rel["granted"] == [b, c]
    tb = w.sems.wait_state(wb["wait_id"])["token"]
    assert tb == w.sems.wait_state(wc["wait_id"])["token"] == rel["index"]


def test_every_holder_must_agree_on_n() -> None:
    w = World()
    a, b = w.open(), w.open()
    w.acquire(a, "pool", 3)
    before = w.snapshot()
    r = w.acquire(b, "pool", 4)
    assert r["error"] == "permits_conflict" and r["permits"] == 3 and r["status"] == 409
    assert w.snapshot() == before
    w.release(a, "pool")
    assert w.acquire(b, "pool", 4)["granted"]  # empty: forgotten, N set afresh


def test_bad_counts_and_unknown_sessions_are_refused_and_change_nothing() -> None:
    w = World()
    a = w.open()
    before = w.snapshot()
    assert w.acquire(a, "pool", 2, count=3)["status"] == 400
    assert w.acquire(a, "pool", 0)["status"] == 400
    assert w.acquire(a, "pool", 2, count=0)["status"] == 400
    r = w.acquire("s999", "pool", 2)
    assert r["error"] == "session_not_found" and r["status"] == 404
    assert w.release(a, "pool")["error"] == "not_held"
    assert w.snapshot() == before


def test_reentrant_acquire_returns_the_same_grant() -> None:
    w = World()
    a = w.open()
    first = w.acquire(a, "pool", 3, count=2)
    again = w.acquire(a, "pool", 3, count=2)
    assert again["reentrant"] and again["token"] == first["token"]
    assert w.acquire(a, "pool", 3, count=1)["error"] == "count_conflict"
    assert w.sems.info("pool")["free"] == 1


def test_session_end_releases_permits_to_the_waiters() -> None:
    for end in ("close", "expire"):
        w = World()
        a, b = w.open(), w.open()
        w.acquire(a, "pool", 1)
        wb = w.acquire(b, "pool", 1, wait_ms=1000)
        getattr(w, end)(a)
        st_ = w.sems.wait_state(wb["wait_id"])
        assert st_["state"] == "granted" and st_["token"] == w.index
        assert [h["session"] for h in w.sems.info("pool")["holders"]] == [b]
        # and a waiter's session ending drops its wait
        c = w.open()
        wc = w.acquire(c, "pool", 1, wait_ms=1000)
        getattr(w, end)(c)
        assert w.sems.wait_state(wc["wait_id"])["state"].startswith("session_")
        assert w.sems.info("pool")["waiters"] == []


def test_timeout_removes_the_waiter_and_may_unblock_those_behind() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    w.acquire(a, "pool", 3, count=2)
    wb = w.acquire(b, "pool", 3, count=3, wait_ms=1000, deadline_ms=50)
    wc = w.acquire(c, "pool", 3, count=1, wait_ms=1000, deadline_ms=500)
    assert w.do("semaphores", "timeout", wait_id=wb["wait_id"], now_ms=10)["timed_out"] is False
    assert w.sems.due_commands(60) == [("timeout", {"wait_id": wb["wait_id"], "now_ms": 60})]
    r = w.do("semaphores", "timeout", wait_id=wb["wait_id"], now_ms=60)
    assert r["timed_out"] and r["granted"] == [c]
    assert w.sems.wait_state(wb["wait_id"])["state"] == "timeout"
    assert w.sems.wait_state(wc["wait_id"])["state"] == "granted"


def test_deadlock_through_a_semaphore_and_a_lock_is_refused_both_ways() -> None:
    w = World()
    a, b = w.open(), w.open()
    assert w.do("locks", "acquire", session=a, lock="L", wait_ms=0)["granted"]
    assert w.acquire(b, "pool", 1)["granted"]
    # a waits for the semaphore, held by b
    assert w.acquire(a, "pool", 1, wait_ms=1000)["waiting"]
    before = w.snapshot()
    # b waiting for L (held by a) would close b -> a -> b
    r = w.do("locks", "acquire", session=b, lock="L", wait_ms=1000, deadline_ms=10)
    assert r["error"] == "deadlock"
    assert set(r["cycle"]) == {a, b} and "semaphore/pool" in r["locks"]
    assert w.snapshot() == before
    assert all_cycles(w.locks) == []

    # the other way round: b waits for L first, then a's semaphore wait is refused
    w2 = World()
    a, b = w2.open(), w2.open()
    w2.do("locks", "acquire", session=a, lock="L", wait_ms=0)
    w2.acquire(b, "pool", 1)
    assert w2.do("locks", "acquire", session=b, lock="L", wait_ms=1000,
                 deadline_ms=10)["waiting"]
    r = w2.acquire(a, "pool", 1, wait_ms=1000)
    assert r["error"] == "deadlock" and r["semaphore"] == "pool"
    assert w2.locks.recent()[-1]["lock"] == "semaphore/pool"


def test_a_waiter_behind_another_waits_for_it_in_the_graph() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    w.acquire(a, "pool", 1)
    w.acquire(b, "pool", 1, wait_ms=1000)  # b -> a
    w.acquire(c, "pool", 1, wait_ms=1000)  # c -> b
    assert list(w.sems.wait_edges(c)) == [(b, "semaphore/pool")]
    assert list(w.sems.wait_edges(b)) == [(a, "semaphore/pool")]
    # a waiting for a lock that c holds closes a -> c -> b -> a
    w.do("locks", "acquire", session=c, lock="L", wait_ms=0)
    r = w.do("locks", "acquire", session=a, lock="L", wait_ms=1000, deadline_ms=5)
    assert r["error"] == "deadlock" and r["cycle"][0] == a


def test_snapshot_round_trip_keeps_queues_holders_and_wait_order() -> None:
    w = World()
    a, b, c = w.open(), w.open(), w.open()
    w.acquire(a, "x", 1)
    w.acquire(a, "y", 2, count=2)
    w.acquire(b, "y", 2, wait_ms=1000)
    w.acquire(b, "x", 1, wait_ms=1000)
    w.acquire(c, "x", 1, wait_ms=1000)
    r = w.restored()
    assert r.snapshot() == w.snapshot()
    assert list(r.sems.waits_of[b]) == ["y", "x"]
    assert r.sems.held_by == w.sems.held_by
    for world in (w, r):
        world.close(a)
    assert r.snapshot() == w.snapshot()


# -- random sequences against a model ----------------------------------------------------

SESSIONS = 4
NAMES = ["p", "q"]


class Model:
    """The rules, written plainly: per semaphore N, holders {sid: count} in grant order,
    a FIFO of (sid, count, wait_id, deadline)."""

    def __init__(self) -> None:
        self.sems: dict[str, dict[str, Any]] = {}

    def grant(self, name: str) -> list[str]:
        s = self.sems[name]
        out = []
        while s["queue"] and s["queue"][0][1] <= s["n"] - sum(s["holders"].values()):
            sid, count, _, _ = s["queue"].pop(0)
            s["holders"][sid] = count
            out.append(sid)
        return out

    def gc(self, name: str) -> None:
        s = self.sems[name]
        if not s["holders"] and not s["queue"]:
            del self.sems[name]


def _shape(w: World) -> dict[str, Any]:
    return {n: {"n": s.permits, "holders": {k: p.count for k, p in s.holders.items()},
                "queue": [(x.session, x.count, x.wait_id, x.deadline_ms) for x in s.queue]}
            for n, s in w.sems.sems.items()}


@st.composite
def step(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["acquire"] * 8 + ["release"] * 3 + ["lock"] * 3 +
                                ["unlock", "timeout", "end", "open", "snapshot"]))
    return kind, {
        "s": draw(st.integers(0, SESSIONS - 1)), "name": draw(st.sampled_from(NAMES)),
        "n": draw(st.sampled_from([1, 2, 3, 3, 3])), "count": draw(st.integers(1, 3)),
        "wait": draw(st.sampled_from([0, 1000, 1000])), "deadline": draw(st.integers(0, 20)),
        "now": draw(st.integers(0, 20)), "close": draw(st.booleans()),
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(step(), min_size=1, max_size=60))
def test_random_sequences_match_the_model(steps: list[tuple[str, dict[str, Any]]]) -> None:
    w = World()
    m = Model()
    sids = [w.open() for _ in range(SESSIONS)]
    last_token: dict[str, int] = {}
    for kind, a in steps:
        sid = sids[a["s"]]
        name = a["name"]
        if kind == "snapshot":
            w = w.restored()
            continue
        if kind == "open":
            sids[a["s"]] = w.open()
            continue
        alive = w.locks.session_open(sid)
        if kind == "lock":  # lock waits share the wait-for graph with semaphore waits
            r = w.do("locks", "acquire", session=sid, lock=name, wait_ms=a["wait"],
                     deadline_ms=a["deadline"])
            if r.get("error") == "deadlock":
                assert r["cycle"][0] == sid
        elif kind == "unlock":
            w.do("locks", "release", session=sid, lock=name)
        elif kind == "acquire":
            r = w.acquire(sid, name, a["n"], min(a["count"], a["n"]), a["wait"], a["deadline"])
            s = m.sems.get(name)
            count = min(a["count"], a["n"])
            if not alive:
                assert r["error"] == "session_not_found"
            elif s is not None and s["n"] != a["n"]:
                assert r["error"] == "permits_conflict"
            elif s is not None and sid in s["holders"]:
                assert r.get("reentrant") or r["error"] == "count_conflict"
            elif s is not None and any(q[0] == sid for q in s["queue"]):
                assert r.get("waiting") or r["error"] == "already_waiting"
            elif (s is None or not s["queue"]) and count <= (
                    a["n"] - sum(s["holders"].values()) if s else a["n"]):
                assert r["granted"] and r["token"] == w.index
                m.sems.setdefault(name, {"n": a["n"], "holders": {}, "queue": []})
                m.sems[name]["holders"][sid] = count
            elif a["wait"] == 0:
                assert r["error"] == "timeout"
            elif r.get("error") == "deadlock":
                pass  # checked by the lock tests' graph; here: nothing changed (below)
            else:
                assert r["waiting"]
                m.sems.setdefault(name, {"n": a["n"], "holders": {}, "queue": []})
                m.sems[name]["queue"].append((sid, count, w.index, a["deadline"]))
        elif kind == "release":
            r = w.release(sid, name)
            s = m.sems.get(name)
            if not alive:
                assert r["error"] == "session_not_found"
            elif s is None or (sid not in s["holders"] and
                               all(q[0] != sid for q in s["queue"])):
                assert r["error"] == "not_held"
            else:
                s["holders"].pop(sid, None)
                s["queue"] = [q for q in s["queue"] if q[0] != sid]
                assert r["granted"] == m.grant(name)
                m.gc(name)
        elif kind == "timeout":
            waits = sorted(w.sems.waits)
            if not waits:
                continue
            wid = waits[a["s"] % len(waits)]
            r = w.do("semaphores", "timeout", wait_id=wid, now_ms=a["now"])
            for nm, s in list(m.sems.items()):
                hit = [q for q in s["queue"] if q[2] == wid]
                if hit and hit[0][3] <= a["now"]:
                    s["queue"].remove(hit[0])
                    assert r["timed_out"] and r["granted"] == m.grant(nm)
                    m.gc(nm)
                elif hit:
                    assert r["timed_out"] is False
        elif kind == "end":
            (w.close if a["close"] else w.expire)(sid)
            touched = []
            for nm, s in m.sems.items():
                if sid in s["holders"] or any(q[0] == sid for q in s["queue"]):
                    touched.append(nm)
                s["holders"].pop(sid, None)
                s["queue"] = [q for q in s["queue"] if q[0] != sid]
            for nm in sorted(touched):
                m.grant(nm)
                m.gc(nm)
        # invariants after every step
        assert _shape(w) == m.sems
        for nm, s in w.sems.sems.items():
            assert 0 <= s.used <= s.permits
            assert s.used == sum(p.count for p in s.holders.values())
            assert s.holders or s.queue
            if s.queue:
                assert s.queue[0].count > s.free  # nobody left waiting who could go
            assert s.token >= last_token.get(nm, 0)
            last_token[nm] = s.token
        assert all_cycles(w.locks) == []
        assert {x.wait_id for s in w.sems.sems.values() for x in s.queue} == set(w.sems.waits)
    r = w.restored()
    assert r.snapshot() == w.snapshot()


def test_the_space_alarm_refuses_new_permits_and_barriers_but_not_releases() -> None:
    w = World()
    a = w.open()
    w.acquire(a, "pool", 2)
    w.reg.quota.alarm = True
    assert w.acquire(a, "other", 2)["status"] == 507
    assert w.do("barriers", "set", barrier="b")["status"] == 507
    assert w.do("barriers", "enter", session=a, barrier="d", n=2)["status"] == 507
    assert w.release(a, "pool")["released"]


def test_semaphores_count_against_max_locks_and_max_waiters() -> None:
    w = World()
    a, b = w.open(), w.open()
    w.reg.quota.limits = {**w.reg.quota.limits, "max_locks": 1, "max_waiters": 1}
    assert w.acquire(a, "one", 1)["granted"]
    r = w.acquire(a, "two", 1)
    assert r["error"] == "quota_exceeded" and r["limit"] == "max_locks"
    assert w.acquire(b, "one", 1, wait_ms=1000)["waiting"]
    c = w.open()
    r = w.acquire(c, "one", 1, wait_ms=1000)
    assert r["error"] == "quota_exceeded" and r["limit"] == "max_waiters"
    assert w.acquire(c, "one", 1)["error"] == "timeout"  # a try-acquire is no waiter
