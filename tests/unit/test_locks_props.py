"""LockService as a pure state machine, under random command sequences (hypothesis).

Random acquire (exclusive/shared, try-lock or waiting, upgrades), release, timeout, expiry
and close over a handful of sessions and locks, applied at increasing log indexes as the
node's apply loop does. After every step:

* a lock has one exclusive holder or only shared holders;
* grants follow FIFO: the waiters granted by a step were the head of their queue (after the
  step's own removals), non-upgrade waiters stay in arrival order, an upgrade only at the head;
* tokens: every new grant's token is the step's index, above every earlier token of the lock;
* no waiter remains at the head of a queue it could be granted from;
* the wait-for graph has no cycle. The graph is rebuilt here from scratch with the *full*
  FIFO definition (every incompatible holder and every incompatible waiter ahead), not the
  service's reduced one, and a `deadlock` verdict must match a cycle in that graph exactly
  (and change nothing), while an accepted wait must not create one;
* bookkeeping (session holds/waits, the wait index) agrees with the locks.

Plus determinism: the same commands give the same results on two instances, and a snapshot
(through msgpack) taken at any point and restored gives the same results afterwards.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.base import CommandError
from distsync.services.locks import EXCLUSIVE, SHARED, LockService

SESSIONS = 5
LOCKS = ["a", "b", "c"]


BALANCED = ["acquire"] * 12 + ["release"] * 4 + ["timeout", "timeout", "expire", "close", "open"]
# Contention: waits pile up (long queues, upgrades behind them, deadlock attempts).
CONTENDED = ["acquire"] * 20 + ["release", "release", "timeout"]


@st.composite
def command(draw: st.DrawFn, kinds: list[str] = BALANCED) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(kinds))
    s = draw(st.integers(0, SESSIONS - 1))
    lock = draw(st.sampled_from(LOCKS))
    if kind == "acquire":
        return kind, {
            "s": s, "lock": lock, "mode": draw(st.sampled_from([EXCLUSIVE, SHARED])),
            "wait_ms": draw(st.sampled_from([0, 1000, 1000, 1000])),
            "upgrade": draw(st.booleans()) and draw(st.booleans()),
            "deadline_ms": draw(st.integers(0, 30)),
        }
    if kind == "release":
        return kind, {"s": s, "lock": lock}
    if kind == "timeout":
        return kind, {"pick": draw(st.integers(0, 50)), "now_ms": draw(st.integers(0, 30))}
    if kind == "expire":
        return kind, {"s": s, "idle_ms": draw(st.sampled_from([0, 5000]))}
    return kind, {"s": s}


commands = st.lists(command(), max_size=60)
contended = st.lists(command(CONTENDED), min_size=10, max_size=80)


class Runner:
    """Applies generated commands, resolving session numbers and wait picks."""

    def __init__(self) -> None:
        self.svc = LockService()
        self.index = 0
        self.sids: list[str] = []
        self.wait_ids: list[int] = []
        for _ in range(SESSIONS):
            self.sids.append(self.apply("open", {"ttl_ms": 5000})["session"])

    def apply(self, op: str, args: dict[str, Any]) -> Any:
        self.index += 1
        try:
            return self.svc.apply(op, args, self.index)
        except CommandError as e:
            return e.to_result()

    def concrete(self, kind: str, p: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if kind == "open":
            return "open", {"ttl_ms": 5000}
        if kind == "timeout":
            wid = self.wait_ids[p["pick"] % len(self.wait_ids)] if self.wait_ids else 10**6
            return "timeout", {"wait_id": wid, "now_ms": p["now_ms"]}
        args = {k: v for k, v in p.items() if k != "s"}
        # Mostly live sessions; selector 0 may also hit an expired or closed one.
        live = [x for x in self.sids if x in self.svc.sessions]
        pool = live if live and p["s"] != 0 else self.sids
        args["session"] = pool[p["s"] % len(pool)]
        return kind, args

    def step(self, kind: str, p: dict[str, Any]) -> Any:
        op, args = self.concrete(kind, p)
        res = self.apply(op, args)
        if op == "open":
            self.sids.append(res["session"])
        if isinstance(res, dict) and res.get("waiting"):
            self.wait_ids.append(res["wait_id"])
        return res


def roundtrip(data: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False,
                           strict_map_key=False)


# -- the independent oracle ------------------------------------------------------------------


def incompatible(a: str, b: str) -> bool:
    return not (a == SHARED and b == SHARED)


def full_graph(svc: LockService, extra: tuple[str, str, str, bool] | None = None
               ) -> dict[str, set[str]]:
    """session -> sessions it waits for, by the full FIFO definition. `extra` adds a
    hypothetical waiter (session, lock, mode, at_front)."""
    g: dict[str, set[str]] = {}
    names = set(svc.locks) | ({extra[1]} if extra else set())
    for name in names:
        lk = svc.locks.get(name)
        holders = [(s, h.mode) for s, h in lk.holders.items()] if lk else []
        queue = [(w.session, w.mode) for w in lk.queue] if lk else []
        if extra and extra[1] == name:
            item = (extra[0], extra[2])
            queue = [item, *queue] if extra[3] else [*queue, item]
        for pos, (s, mode) in enumerate(queue):
            out = g.setdefault(s, set())
            for hs, hmode in holders:
                if hs != s and incompatible(mode, hmode):
                    out.add(hs)
            for ws, wmode in queue[:pos]:
                if ws != s and incompatible(mode, wmode):
                    out.add(ws)
    return g


def on_cycle(g: dict[str, set[str]], start: str) -> bool:
    seen, stack = set(), list(g.get(start, ()))
    while stack:
        s = stack.pop()
        if s == start:
            return True
        if s not in seen:
            seen.add(s)
            stack.extend(g.get(s, ()))
    return False


def check_invariants(svc: LockService) -> None:
    waits_seen: dict[int, Any] = {}
    for name, lk in svc.locks.items():
        assert lk.holders or lk.queue, f"{name}: empty lock kept"
        modes = [h.mode for h in lk.holders.values()]
        assert modes.count(EXCLUSIVE) == 0 or len(modes) == 1, f"{name}: {lk.holders}"
        assert all(h.token <= lk.token for h in lk.holders.values())
        # FIFO order: upgrades only at the head, others in arrival (= index) order.
        for i, w in enumerate(lk.queue):
            assert not w.upgrade or i == 0, f"{name}: upgrade waiter not at the head"
            assert w.lock == name and w.session in svc.sessions
            waits_seen[w.wait_id] = w
        plain = [w.wait_id for w in lk.queue if not w.upgrade]
        assert plain == sorted(plain)
        assert lk.seqs == [w.seq for w in lk.queue] == sorted(w.seq for w in lk.queue)
        assert lk.excl == [w.seq for w in lk.queue if w.mode == EXCLUSIVE]
        # The head is never grantable.
        if lk.queue:
            head = lk.queue[0]
            others = [m for s, m in ((s, h.mode) for s, h in lk.holders.items())
                      if s != head.session]
            if head.mode == EXCLUSIVE:
                assert others, f"{name}: exclusive head waits on a free lock"
            else:
                assert EXCLUSIVE in others, f"{name}: shared head waits on a shared lock"
        for s in lk.holders:
            assert name in svc.sessions[s].holds
    assert waits_seen == svc.waits
    for sid, sess in svc.sessions.items():
        for name in sess.holds:
            assert sid in svc.locks[name].holders
        for name, w in sess.waits.items():
            assert svc.waits[w.wait_id] is w and w.session == sid and w.lock == name
    g = full_graph(svc)
    assert not any(on_cycle(g, s) for s in g), f"cycle in the wait-for graph: {g}"
    assert svc.deadlocks() == []


def queues(svc: LockService) -> dict[str, list[int]]:
    return {n: [w.wait_id for w in lk.queue] for n, lk in svc.locks.items()}


def tokens(svc: LockService) -> dict[str, dict[str, int]]:
    return {n: {s: h.token for s, h in lk.holders.items()} for n, lk in svc.locks.items()}


@settings(max_examples=200, deadline=None)
@given(commands)
def test_invariants_hold_after_every_step(cmds: list) -> None:
    run_checked(cmds)


@settings(max_examples=150, deadline=None)
@given(contended)
def test_invariants_hold_under_contention(cmds: list) -> None:
    run_checked(cmds)


def test_invariants_hold_on_long_seeded_walks() -> None:
    """Depth that shrinking-friendly examples rarely reach: long queues, many deadlock
    attempts. Seeded, so a failure replays."""
    rng = random.Random(1234)
    for _ in range(40):
        run_checked(random_walk(rng, 150))


def random_walk(rng: random.Random, n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for _ in range(n):
        kind = rng.choice(CONTENDED if rng.random() < 0.7 else BALANCED)
        s, lock = rng.randrange(SESSIONS), rng.choice(LOCKS)
        if kind == "acquire":
            p: dict[str, Any] = {
                "s": s, "lock": lock, "mode": rng.choice([EXCLUSIVE, SHARED]),
                "wait_ms": rng.choice([0, 1000, 1000, 1000]),
                "upgrade": rng.random() < 0.2, "deadline_ms": rng.randrange(31),
            }
        elif kind == "release":
            p = {"s": s, "lock": lock}
        elif kind == "timeout":
            p = {"pick": rng.randrange(51), "now_ms": rng.randrange(31)}
        elif kind == "expire":
            p = {"s": s, "idle_ms": rng.choice([0, 5000])}
        else:
            p = {"s": s}
        out.append((kind, p))
    return out


def run_checked(cmds: list) -> None:
    r = Runner()
    svc = r.svc
    last_token: dict[str, int] = {}
    for kind, p in cmds:
        before_snap = svc.snapshot()
        before_q = queues(svc)
        before_tok = tokens(svc)
        op, args = r.concrete(kind, p)
        extra = None
        if op == "acquire" and args["session"] in svc.sessions:
            lk = svc.locks.get(args["lock"])
            held = lk.holders.get(args["session"]) if lk else None
            extra = (args["session"], args["lock"], args["mode"], held is not None)
        hypothetical = full_graph(svc, extra) if extra else None
        res = r.step(kind, p)
        index = r.index

        if isinstance(res, dict) and res.get("error") == "deadlock":
            assert svc.snapshot() == before_snap, "a refused acquire changed the state"
            assert hypothetical is not None and on_cycle(hypothetical, args["session"])
            cyc = res["cycle"]
            assert cyc[0] == args["session"] and len(set(cyc)) == len(cyc)
        elif isinstance(res, dict) and res.get("error"):
            assert svc.snapshot() == before_snap, f"{op} {args} -> {res} changed the state"
        if isinstance(res, dict) and res.get("waiting") and extra is not None:
            assert not on_cycle(hypothetical, args["session"]) or res["wait_id"] != index

        # Grants of queued waiters: a prefix of the old queue minus what this step removed.
        for name, old in before_q.items():
            granted = [w for w in old if svc.outcomes.get(w, {}).get("state") == "granted"
                       and w not in svc.waits and svc.outcomes[w]["token"] == index]
            removed = [w for w in old if w not in svc.waits]
            remaining = [w for w in old if w not in removed or w in granted]
            assert remaining[: len(granted)] == granted, (name, old, granted)

        # Tokens: new grants carry this index, above anything the lock granted before.
        for name, holders in tokens(svc).items():
            for s, tok in holders.items():
                if before_tok.get(name, {}).get(s) != tok:
                    assert tok == index, (name, s, tok, index)
                    assert tok > last_token.get(name, 0)
        for name, holders in tokens(svc).items():
            if holders:
                last_token[name] = max(last_token.get(name, 0), *holders.values())
        check_invariants(svc)


@settings(max_examples=120, deadline=None)
@given(commands)
def test_same_commands_same_results(cmds: list) -> None:
    a, b = Runner(), Runner()
    assert [a.step(k, p) for k, p in cmds] == [b.step(k, p) for k, p in cmds]
    assert a.svc.snapshot() == b.svc.snapshot()


@settings(max_examples=120, deadline=None)
@given(commands, st.data())
def test_snapshot_restore_mid_sequence_equals_never_snapshotting(cmds: list, data: Any) -> None:
    cut = data.draw(st.integers(0, len(cmds)))
    straight = Runner()
    want = [straight.step(k, p) for k, p in cmds]

    first = Runner()
    got = [first.step(k, p) for k, p in cmds[:cut]]
    restored = LockService()
    restored.restore(roundtrip(first.svc.snapshot()))
    assert restored.snapshot() == first.svc.snapshot()
    first.svc = restored
    got += [first.step(k, p) for k, p in cmds[cut:]]
    assert got == want
    assert restored.snapshot() == straight.svc.snapshot()
    check_invariants(restored)
