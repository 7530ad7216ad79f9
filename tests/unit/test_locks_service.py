"""LockService scenarios, one rule per test: modes, FIFO, reentrancy and upgrades, try-lock
and wait timeouts, release errors, session close and expiry, the leader's lease view (with a
fake clock), deadlock detection (2-cycles, long cycles, cycles through a FIFO queue, a
10,000-session graph), bad commands, and the Registry's at-most-once replay.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from distsync.services.base import CommandError
from distsync.services.locks import EXCLUSIVE, SHARED, LockService, NotReady
from distsync.services.locks_lease import RETRY_MS
from distsync.services.registry import Registry, encode_command

X, S = EXCLUSIVE, SHARED


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, clock: Clock | None = None) -> None:
        self.svc = LockService(clock=clock)
        self.index = 0

    def raw(self, op: str, **args: Any) -> Any:
        self.index += 1
        try:
            return self.svc.apply(op, args, self.index)
        except CommandError as e:
            return e.to_result()

    def open(self, ttl_ms: int = 5000) -> str:
        return self.raw("open", ttl_ms=ttl_ms)["session"]

    def acq(self, sid: str, lock: str, mode: str = X, wait_ms: int = 1000,
            deadline_ms: int = 100, upgrade: bool = False) -> Any:
        return self.raw("acquire", session=sid, lock=lock, mode=mode, wait_ms=wait_ms,
                        deadline_ms=deadline_ms, upgrade=upgrade)

    def rel(self, sid: str, lock: str) -> Any:
        return self.raw("release", session=sid, lock=lock)

    def holders(self, lock: str) -> dict[str, str]:
        lk = self.svc.locks.get(lock)
        return {s: h.mode for s, h in lk.holders.items()} if lk else {}

    def waiters(self, lock: str) -> list[str]:
        lk = self.svc.locks.get(lock)
        return [w.session for w in lk.queue] if lk else []


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- modes and FIFO ----------------------------------------------------------------------------


def test_exclusive_excludes_and_fifo_hands_over(h: Harness) -> None:
    a, b, c = h.open(), h.open(), h.open()
    ga = h.acq(a, "r")
    assert ga["granted"] and ga["token"] == h.index
    wb, wc = h.acq(b, "r"), h.acq(c, "r")
    assert wb["waiting"] and wb["position"] == 0 and wc["position"] == 1
    rel = h.rel(a, "r")
    assert rel["released"] and rel["granted"] == [b] and h.holders("r") == {b: X}
    assert h.svc.outcomes[wb["wait_id"]] == {
        "state": "granted", "lock": "r", "session": b, "token": rel["index"], "mode": X,
        "upgraded": False,
    }
    assert h.svc.locks["r"].token == rel["index"] > ga["token"]
    h.rel(b, "r")
    assert h.holders("r") == {c: X} and h.waiters("r") == []
    h.rel(c, "r")
    assert "r" not in h.svc.locks  # a free lock leaves no state behind


def test_shared_holders_and_no_writer_starvation(h: Harness) -> None:
    a, b, w, c = h.open(), h.open(), h.open(), h.open()
    assert h.acq(a, "r", S)["granted"] and h.acq(b, "r", S)["granted"]
    assert h.acq(w, "r", X)["waiting"]
    # A shared request behind a waiting exclusive one waits, although the lock is shared.
    assert h.acq(c, "r", S)["waiting"]
    assert h.waiters("r") == [w, c]
    h.rel(a, "r")
    assert h.holders("r") == {b: S}
    h.rel(b, "r")
    assert h.holders("r") == {w: X} and h.waiters("r") == [c]
    h.rel(w, "r")
    assert h.holders("r") == {c: S}


def test_a_run_of_shared_waiters_is_granted_together_with_one_token(h: Harness) -> None:
    a, r1, r2, r3, w = (h.open() for _ in range(5))
    h.acq(a, "r", X)
    for s in (r1, r2):
        h.acq(s, "r", S)
    h.acq(w, "r", X)
    h.acq(r3, "r", S)
    rel = h.rel(a, "r")
    assert rel["granted"] == [r1, r2]
    toks = {s: t.token for s, t in h.svc.locks["r"].holders.items()}
    assert toks == {r1: rel["index"], r2: rel["index"]}
    assert h.waiters("r") == [w, r3]


# -- reentrancy and upgrades -------------------------------------------------------------------


def test_reentrant_acquire_returns_the_same_grant(h: Harness) -> None:
    a, b = h.open(), h.open()
    g = h.acq(a, "r", X)
    again = h.acq(a, "r", X)
    assert again["granted"] and again["reentrant"] and again["token"] == g["token"]
    weaker = h.acq(a, "r", S)  # exclusive covers shared
    assert weaker["reentrant"] and weaker["mode"] == X and weaker["token"] == g["token"]
    gs = h.acq(b, "s", S)
    assert h.acq(b, "s", S)["token"] == gs["token"]
    h.rel(a, "r")  # not counted: one release frees it
    assert h.holders("r") == {}


def test_upgrade_is_explicit(h: Harness) -> None:
    a = h.open()
    h.acq(a, "r", S)
    before = h.svc.snapshot()
    res = h.acq(a, "r", X)
    assert res["error"] == "mode_conflict" and res["status"] == 409
    assert h.svc.snapshot() == before
    up = h.acq(a, "r", X, upgrade=True)  # only holder: at once, with a new token
    assert up["granted"] and up["upgraded"] and up["token"] == h.index
    b = h.open()
    assert h.acq(b, "q", X, upgrade=True)["error"] == "not_held"


def test_upgrade_waits_at_the_head_and_is_deadlock_checked(h: Harness) -> None:
    a, b, w = h.open(), h.open(), h.open()
    h.acq(a, "r", S)
    h.acq(b, "r", S)
    assert h.acq(w, "r", X)["waiting"]
    up = h.acq(a, "r", X, upgrade=True)
    assert up["waiting"] and up["position"] == 0
    assert h.waiters("r") == [a, w]
    # b upgrading too would wait for a, which waits for b: refused, nothing changes.
    before = h.svc.snapshot()
    dl = h.acq(b, "r", X, upgrade=True)
    assert dl["error"] == "deadlock" and dl["cycle"] == [b, a] and dl["locks"] == ["r", "r"]
    assert h.svc.snapshot() == before
    h.rel(b, "r")
    assert h.holders("r") == {a: X} and h.waiters("r") == [w]
    assert h.svc.locks["r"].holders[a].token == h.index
    assert h.svc.outcomes[up["wait_id"]]["upgraded"] is True


# -- try-lock and wait timeouts ----------------------------------------------------------------


def test_try_lock_fails_at_once_and_changes_nothing(h: Harness) -> None:
    a, b = h.open(), h.open()
    h.acq(a, "r")
    before = h.svc.snapshot()
    res = h.acq(b, "r", wait_ms=0)
    assert res["error"] == "timeout" and res["status"] == 409 and res["holders"] == [a]
    assert h.svc.snapshot() == before
    assert h.acq(b, "free", wait_ms=0)["granted"]


def test_timeout_rechecks_the_deadline_and_unblocks_the_queue(h: Harness) -> None:
    a, w, r = h.open(), h.open(), h.open()
    h.acq(a, "r", S)
    ww = h.acq(w, "r", X, deadline_ms=500)
    wr = h.acq(r, "r", S, deadline_ms=900)
    assert wr["waiting"]  # behind the exclusive waiter
    early = h.raw("timeout", wait_id=ww["wait_id"], now_ms=499)
    assert early == {"timed_out": False, "wait_id": ww["wait_id"], "reason": "not due"}
    res = h.raw("timeout", wait_id=ww["wait_id"], now_ms=500)
    assert res["timed_out"] and res["granted"] == [r]  # the shared waiter behind moves up
    assert h.holders("r") == {a: S, r: S}
    assert h.svc.outcomes[ww["wait_id"]]["state"] == "timeout"
    again = h.raw("timeout", wait_id=ww["wait_id"], now_ms=10_000)  # idempotent
    assert again["timed_out"] is False


def test_repeated_wait_request_returns_the_existing_wait(h: Harness) -> None:
    a, b = h.open(), h.open()
    h.acq(a, "r")
    first = h.acq(b, "r")
    second = h.acq(b, "r")
    assert second["wait_id"] == first["wait_id"] and h.waiters("r") == [b]
    other = h.acq(b, "r", S)
    assert other["error"] == "already_waiting" and other["mode"] == X


# -- release, close, expiry --------------------------------------------------------------------


def test_release_errors_change_nothing(h: Harness) -> None:
    a, b = h.open(), h.open()
    h.acq(a, "r")
    before = h.svc.snapshot()
    assert h.rel(b, "r")["error"] == "not_held"
    assert h.rel(b, "nothing")["error"] == "not_held"
    gone = h.rel("s999", "r")
    assert gone["error"] == "session_not_found" and gone["status"] == 404
    assert h.acq("s999", "r")["status"] == 404
    assert h.svc.snapshot() == before


def test_release_cancels_a_pending_wait(h: Harness) -> None:
    a, b = h.open(), h.open()
    h.acq(a, "r")
    w = h.acq(b, "r")
    res = h.rel(b, "r")
    assert res == {**res, "released": False, "cancelled": True}
    assert h.waiters("r") == [] and h.svc.outcomes[w["wait_id"]]["state"] == "cancelled"


def test_close_releases_everything_and_hands_over(h: Harness) -> None:
    a, b, c = h.open(), h.open(), h.open()
    h.acq(a, "x")
    h.acq(a, "y", S)
    h.acq(b, "x")
    h.acq(c, "y", X)
    h.acq(a, "z")
    h.acq(c, "z")  # c waits on two locks
    res = h.raw("close", session=a)
    assert res["closed"] and sorted(res["released"]) == ["x", "y", "z"]
    assert h.holders("x") == {b: X}
    assert h.holders("z") == {c: X} and h.holders("y") == {c: X}
    assert a not in h.svc.sessions
    assert h.raw("close", session=a)["error"] == "session_not_found"


def test_expiry_is_rechecked_and_idempotent(h: Harness) -> None:
    a, b = h.open(ttl_ms=3000), h.open()
    h.acq(a, "r")
    wb = h.acq(b, "q")
    assert wb["granted"]
    wa = h.acq(a, "q")
    assert h.raw("expire", session=a, idle_ms=2999) == {
        "expired": False, "session": a, "reason": "not due"}
    res = h.raw("expire", session=a, idle_ms=3000)
    assert res["expired"] and res["released"] == ["r"]
    assert h.svc.outcomes[wa["wait_id"]]["state"] == "session_expired"
    assert h.raw("expire", session=a, idle_ms=3000)["expired"] is False
    assert h.svc.stats["expiries"] == 1


# -- the leader's lease view -------------------------------------------------------------------


def test_lease_view_expires_only_after_a_full_ttl_and_keepalive_extends() -> None:
    clock = Clock()
    h = Harness(clock)
    a, b = h.open(ttl_ms=2000), h.open(ttl_ms=2000)
    clock.now += 10_000  # a long time passes before this node leads: no one is due yet
    h.svc.on_leader_start(0, 7)
    assert h.svc.due_commands(0) == []
    clock.now += 1500
    assert h.svc.keepalive(a, 7) == {"session": a, "ttl_ms": 2000}
    clock.now += 600  # b is past its 2 s, a was renewed 600 ms ago
    due = h.svc.due_commands(0)
    assert due == [("expire", {"session": b, "idle_ms": 2100})]
    # Once the leader proposed b's expiry it refuses b's keepalives (404), until it applies.
    with pytest.raises(CommandError) as ei:
        h.svc.keepalive(b, 7)
    assert ei.value.code == "session_not_found"
    assert h.svc.due_commands(0) == []  # not re-proposed before RETRY_MS
    clock.now += RETRY_MS
    assert h.svc.due_commands(0) == [("expire", {"session": b, "idle_ms": 2100 + RETRY_MS})]
    assert h.raw("expire", **due[0][1])["expired"]
    # A keepalive from a term this view was not started in must wait for it.
    with pytest.raises(NotReady):
        h.svc.keepalive(a, 8)
    h.svc.on_leader_start(0, 8)  # new leader: fresh full TTL for everyone
    clock.now += 1999
    assert h.svc.due_commands(0) == []
    clock.now += 1
    assert h.svc.due_commands(0) == [("expire", {"session": a, "idle_ms": 2000})]


def test_new_sessions_get_a_lease_when_first_seen() -> None:
    clock = Clock()
    h = Harness(clock)
    h.svc.on_leader_start(0, 1)
    s = h.open(ttl_ms=1000)
    assert h.svc.due_commands(0) == []
    clock.now += 999
    assert h.svc.due_commands(0) == []
    clock.now += 1
    assert h.svc.due_commands(0) == [("expire", {"session": s, "idle_ms": 1000})]


def test_wait_deadlines_are_proposed_by_the_leader_and_retried() -> None:
    h = Harness(Clock())
    a, b = h.open(), h.open()
    h.acq(a, "r")
    w = h.acq(b, "r", deadline_ms=5000)
    h.svc.on_leader_start(0, 1)
    assert h.svc.due_commands(4999) == []
    assert h.svc.due_commands(5000) == [("timeout", {"wait_id": w["wait_id"], "now_ms": 5000})]
    assert h.svc.due_commands(5500) == []
    lost = h.svc.due_commands(5000 + RETRY_MS)  # never applied: proposed again
    assert lost == [("timeout", {"wait_id": w["wait_id"], "now_ms": 5000 + RETRY_MS})]
    h.raw(*lost[0][:1], **lost[0][1])
    assert h.svc.due_commands(10_000) == [] and h.waiters("r") == []
    # A new leader re-derives the deadlines from the replicated waiters.
    w2 = h.acq(b, "r", deadline_ms=20_000)
    h.svc._heap.clear()  # as if this node had popped it during an earlier leadership
    h.svc.on_leader_start(0, 1)
    assert h.svc.due_commands(20_000) == [
        ("timeout", {"wait_id": w2["wait_id"], "now_ms": 20_000})]


# -- deadlocks ---------------------------------------------------------------------------------


def test_two_cycle_is_refused_with_the_cycle_and_nothing_changes(h: Harness) -> None:
    a, b = h.open(), h.open()
    h.acq(a, "x")
    h.acq(b, "y")
    assert h.acq(a, "y")["waiting"]
    before = h.svc.snapshot()
    res = h.acq(b, "x")
    assert res["error"] == "deadlock" and res["status"] == 409
    assert res["cycle"] == [b, a] and res["locks"] == ["x", "y"]
    assert h.svc.snapshot() == before and h.svc.stats["deadlocks"] == 1
    assert h.svc.deadlocks() == []


def test_long_cycle_is_detected(h: Harness) -> None:
    n = 200
    ss = [h.open() for _ in range(n)]
    for i, s in enumerate(ss):
        h.acq(s, f"l{i}")
    for i in range(n - 1):  # s_i waits for l_{i+1}, held by s_{i+1}
        assert h.acq(ss[i], f"l{i + 1}")["waiting"]
    before = h.svc.snapshot()
    res = h.acq(ss[-1], "l0")
    assert res["error"] == "deadlock"
    assert res["cycle"] == [ss[-1], *ss[:-1]]
    assert res["locks"] == ["l0", *(f"l{i + 1}" for i in range(n - 1))]
    assert h.svc.snapshot() == before
    # Waiting on something else that is not part of the chain is fine.
    h.acq(h.open(), "free")
    assert h.acq(ss[-1], "free")["waiting"]


def test_cycle_through_a_fifo_queue_is_detected(h: Harness) -> None:
    """a holds x; b holds y shared; c waits for y exclusive; a asks y shared (queued behind
    c, FIFO); b asking x would close b -> a -> c -> b although no holder of y is exclusive."""
    a, b, c = h.open(), h.open(), h.open()
    h.acq(a, "x")
    h.acq(b, "y", S)
    assert h.acq(c, "y", X)["waiting"]
    assert h.acq(a, "y", S)["waiting"]
    res = h.acq(b, "x")
    assert res["error"] == "deadlock" and res["cycle"] == [b, a, c]


def test_no_false_deadlock_between_shared_waiters(h: Harness) -> None:
    """p and w both wait for r shared behind an exclusive holder: they will be granted
    together, so p may also wait for a lock w holds."""
    hx, p, w = h.open(), h.open(), h.open()
    h.acq(hx, "r", X)
    h.acq(w, "m", X)
    assert h.acq(p, "r", S)["waiting"]
    assert h.acq(w, "r", S)["waiting"]
    assert h.acq(p, "m", X)["waiting"]  # not a deadlock
    h.rel(hx, "r")
    assert h.holders("r") == {p: S, w: S}


def test_ten_thousand_session_graph() -> None:
    """Correctness on a big graph (the cost is measured in benchmarks/lock_bench.py): 10,000
    sessions in 100 chains of 100 waits, plus a long queue of 2,000 on one lock."""
    h = Harness()
    ss = [h.open() for _ in range(10_000)]
    for i, s in enumerate(ss):
        h.acq(s, f"k{i}")
    for chain in range(100):
        base = chain * 100
        for j in range(99):
            assert h.acq(ss[base + j], f"k{base + j + 1}")["waiting"]
    q = [h.open() for _ in range(2000)]
    for s in q:
        assert h.acq(s, "k0", S)["waiting"]
    # Closing any chain is a deadlock; the cycle is exactly the chain.
    res = h.acq(ss[599], "k500")
    assert res["error"] == "deadlock" and res["cycle"] == [ss[599], *ss[500:599]]
    assert h.acq(ss[0], "z-free")["granted"]
    assert h.acq(q[5], "z-free")["waiting"]  # q5 -> ss0 -> ss1 ... no way back to q5
    # ss99 behind the 2,000 shared waiters of k0 would wait for them, they for k0's holder
    # ss0, and ss0 (through its chain) for ss99.
    res = h.acq(ss[99], "k0")
    assert res["error"] == "deadlock"
    assert res["cycle"][0] == ss[99] and res["cycle"][1] in q and res["cycle"][2:] == ss[:99]
    assert h.svc.deadlocks() == []


# -- bad commands and replication plumbing ------------------------------------------------------


@pytest.mark.parametrize("op,args", [
    ("frobnicate", {}),
    ("open", {"ttl_ms": 10}),
    ("open", {"ttl_ms": "5000"}),
    ("open", {"ttl_ms": True}),
    ("acquire", {"session": 5, "lock": "r"}),
    ("acquire", {"session": "s1", "lock": "r", "mode": "bogus", "wait_ms": 0}),
    ("acquire", {"session": "s1", "lock": "r", "mode": X, "wait_ms": -1}),
    ("acquire", {"session": "s1", "lock": "", "mode": X, "wait_ms": 0}),
    ("release", {"session": "s1"}),
    ("timeout", {"wait_id": "1", "now_ms": 1}),
    ("expire", {"session": "s1"}),
])
def test_bad_commands_are_400_and_change_nothing(op: str, args: dict[str, Any]) -> None:
    h = Harness()
    a = h.open()
    assert a == "s1"
    h.acq(a, "r")
    before = h.svc.snapshot()
    res = h.raw(op, **args)
    assert res["status"] == 400 and res["error"] in ("invalid_command", "bad_op"), res
    assert h.svc.snapshot() == before


def test_registry_replays_a_retried_acquire_without_a_second_wait() -> None:
    svc = LockService()
    reg = Registry([svc])

    def cmd(op: str, rid: str | None = None, **args: Any) -> bytes:
        return encode_command("locks", op, args, rid)

    a = reg.apply(cmd("open", ttl_ms=5000), 1)["session"]
    b = reg.apply(cmd("open", ttl_ms=5000), 2)["session"]
    reg.apply(cmd("acquire", session=a, lock="r", mode=X, wait_ms=0, deadline_ms=0), 3)
    args = {"session": b, "lock": "r", "mode": X, "wait_ms": 1000, "deadline_ms": 9}
    first = reg.apply(cmd("acquire", "rid-1", **args), 4)
    assert first["waiting"]
    reg.apply(cmd("release", session=a, lock="r"), 5)
    assert reg.apply(cmd("acquire", "rid-1", **args), 6) == first  # cached answer
    assert svc.wait_state(first["wait_id"])["state"] == "granted"
    # Snapshots through the registry (msgpack) keep everything, outcomes included.
    other = Registry([LockService()])
    other.restore(reg.snapshot())
    assert other.services["locks"].snapshot() == svc.snapshot()
    assert msgpack.unpackb(reg.snapshot(), raw=False, strict_map_key=False)


def test_reads(h: Harness) -> None:
    a, b = h.open(), h.open()
    h.acq(a, "r", S)
    w = h.acq(b, "r", X, deadline_ms=77)
    info = h.svc.lock_info("r")
    assert info["mode"] == S and info["holders"] == [{"session": a, "mode": S, "token": 3}]
    assert info["waiters"] == [{"session": b, "mode": X, "wait_id": w["wait_id"],
                                "deadline_ms": 77, "upgrade": False}]
    assert h.svc.lock_info("free") == {"lock": "free", "mode": None, "holders": [],
                                       "waiters": [], "token": None}
    for i in range(5):
        h.acq(a, f"p{i}")
    page, nxt = h.svc.list_locks("p", "", 2)
    assert [x["lock"] for x in page] == ["p0", "p1"] and nxt == "p1"
    page, nxt = h.svc.list_locks("p", nxt, 10)
    assert [x["lock"] for x in page] == ["p2", "p3", "p4"] and nxt is None
    si = h.svc.session_info(b)
    assert si["waits"] == [{"lock": "r", "mode": X, "wait_id": w["wait_id"]}]
    assert h.svc.session_info("s404") is None


def test_session_end_listeners_hear_close_and_expiry_in_apply() -> None:
    """Services that bind state to a session (ephemeral keys, candidates, permits) learn of
    its end inside the apply of the close or expire command, with that command's index."""
    from distsync.services.locks import LockService

    svc = LockService()
    heard: list[tuple[str, int, str]] = []
    svc.on_session_end(lambda sid, index, reason: heard.append((sid, index, reason)))
    a = svc.apply("open", {"ttl_ms": 5000}, 1)["session"]
    b = svc.apply("open", {"ttl_ms": 5000}, 2)["session"]
    assert svc.session_open(a) and svc.session_open(b)
    svc.apply("close", {"session": a}, 3)
    svc.apply("expire", {"session": b, "idle_ms": 4000}, 4)  # not due: nothing ends
    svc.apply("expire", {"session": b, "idle_ms": 5000}, 5)
    assert heard == [(a, 3, "closed"), (b, 5, "expired")]
    assert not svc.session_open(a) and not svc.session_open(b)
