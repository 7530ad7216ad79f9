"""Barriers, as a deterministic state machine: ZooKeeper's two barrier recipes, server side.

**Barrier** (ZooKeeper's Barrier: set, wait, remove). `set` raises the barrier, `remove`
lowers it, and a wait (a read: api/barriers.py long-polls this state) returns once the
barrier it found is gone. Each raising is a *generation*, the log index of its `set`, so a
waiter is released by the removal of the barrier it waited on even if the barrier is raised
again before the waiter looks (it compares generations, not presence). A `set` may name a
session: the barrier is then removed when that session ends (a coordinator that dies does
not keep everybody waiting).

**Double barrier** (ZooKeeper's DoubleBarrier). Participants are lock sessions. `enter`
blocks until `n` participants have entered; `leave` blocks until all that entered have
left. All participants must agree on `n` (409 `n_conflict`). A round is identified by the
log index of the command that opened it. Inside a round:

* *entering*: fewer than `n` entered. `leave` now withdraws (returns at once, not counted);
* *full*: `n` entered (at the index recorded as the round's `full`); enters are released.
  `leave` marks the participant as left; when every participant has left, the round is
  *done* and leaves are released;
* a session that enters while a round is full (a fast participant starting its next
  iteration) waits for the next round, which opens when the current one is done;
* a session's end counts as leaving a full round, and removes it from an entering round or
  from the next round's list.

Waits are not state: the handler polls this state (enter: "is my session in a full
round?"; leave: "is my round done?"), so no timer is needed here: a client that gives up
waiting on enter withdraws with `leave`. Nobody passes early: an enter is released only when
its round holds `n` entered sessions, a leave only when its round is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .base import CommandError, dispatch, no_session
from .base import bad_arg as _bad
from .base import str_arg as _str

MAX_PARTICIPANTS = 10_000


@dataclass
class Barrier:
    name: str
    generation: int  # log index of the set
    session: str = ""  # removed when this session ends ("" for none)


@dataclass
class DoubleBarrier:
    name: str
    n: int
    round: int  # log index of the command that opened the round
    entered: dict[str, None] = field(default_factory=dict)  # this round, in enter order
    left: dict[str, None] = field(default_factory=dict)  # left this (full) round
    full: int = 0  # log index at which n had entered (0: still entering)
    next: dict[str, None] = field(default_factory=dict)  # waiting for the next round


class Sessions(Protocol):
    def session_open(self, sid: str) -> bool: ...




class BarrierService:
    name = "barriers"

    def __init__(self, sessions: Sessions | None = None) -> None:
        self.barriers: dict[str, Barrier] = {}
        self.doubles: dict[str, DoubleBarrier] = {}
        self.sessions = sessions
        self.stats = dict.fromkeys(
            ("sets", "removes", "enters", "leaves", "rounds_full", "rounds_done"), 0)
        # Observers of round transitions (the simulation's checks): fn(kind, name, round,
        # index) with kind "full" or "done", called inside apply. Not state.
        self.observers: list[Callable[[str, str, int, int], None]] = []

    def bind(self, locks: Any) -> None:
        """Join the lock service's sessions (server.py, once, in a fixed order)."""
        self.sessions = locks
        locks.on_session_end(self.session_ended)

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        return dispatch(self, _OPS, "barriers", op, args, index)

    def _session(self, sid: str) -> str:
        if self.sessions is None or not self.sessions.session_open(sid):
            raise no_session(sid)
        return sid

    # -- barrier -------------------------------------------------------------------------

    def _set(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        name = _str(args, "barrier")
        sid = args.get("session") or ""
        if not isinstance(sid, str):
            raise _bad("session must be a string")
        if sid:
            self._session(sid)
        b = self.barriers.get(name)
        if b is not None:
            return {"barrier": name, "created": False, "generation": b.generation,
                    "session": b.session or None}
        self.barriers[name] = Barrier(name, index, sid)
        self.stats["sets"] += 1
        return {"barrier": name, "created": True, "generation": index,
                "session": sid or None}

    def _remove(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        name = _str(args, "barrier")
        b = self.barriers.pop(name, None)
        if b is None:
            return {"barrier": name, "removed": False}
        self.stats["removes"] += 1
        return {"barrier": name, "removed": True, "generation": b.generation, "index": index}

    def generation(self, name: str) -> int | None:
        """The generation of barrier `name` if it is raised, else None."""
        b = self.barriers.get(name)
        return None if b is None else b.generation

    # -- double barrier ------------------------------------------------------------------

    def _enter(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sid = self._session(_str(args, "session"))
        name = _str(args, "barrier")
        n = args.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_PARTICIPANTS:
            raise _bad(f"n must be an integer in [1, {MAX_PARTICIPANTS}]")
        db = self.doubles.get(name)
        if db is not None and db.n != n:
            raise CommandError(
                "n_conflict", f"double barrier {name!r} is for {db.n} participants; this "
                f"request says {n}", 409, barrier=name, n=db.n)
        if db is None:
            db = self.doubles[name] = DoubleBarrier(name, n, index)
        if sid in db.next or (sid in db.entered and sid not in db.left):
            return self.enter_state(name, sid)  # a retry, or entering twice: same answer
        if db.full:  # the round is under way (or this session already left it): next one
            db.next[sid] = None
        else:
            db.entered[sid] = None
            self.stats["enters"] += 1
            if len(db.entered) == db.n:
                self._fill(db, index)
        return self.enter_state(name, sid)

    def _leave(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sid = self._session(_str(args, "session"))
        name = _str(args, "barrier")
        db = self.doubles.get(name)
        if db is None or (sid not in db.entered and sid not in db.next):
            raise CommandError(
                "not_entered", f"session {sid} has not entered double barrier {name!r}", 409,
                barrier=name)
        if sid in db.next and (sid not in db.entered or sid in db.left):
            del db.next[sid]  # withdraw from the next round
            self._gc(db)
            return {"barrier": name, "left": True, "withdrawn": True, "done": True,
                    "round": None}
        r = db.round
        if not db.full:
            del db.entered[sid]
            self._gc(db)
            return {"barrier": name, "left": True, "withdrawn": True, "done": True,
                    "round": r}
        if sid not in db.left:
            db.left[sid] = None
            self.stats["leaves"] += 1
            self._maybe_done(db, index)
        return self.leave_state(name, r)

    def _fill(self, db: DoubleBarrier, index: int) -> None:
        db.full = index
        self.stats["rounds_full"] += 1
        for fn in self.observers:
            fn("full", db.name, db.round, index)

    def _maybe_done(self, db: DoubleBarrier, index: int) -> None:
        if not db.full or len(db.left) < len(db.entered):
            return
        self.stats["rounds_done"] += 1
        for fn in self.observers:
            fn("done", db.name, db.round, index)
        waiting = list(db.next)
        db.round, db.full = index, 0
        db.entered = dict.fromkeys(waiting[:db.n])
        db.next = dict.fromkeys(waiting[db.n:])
        db.left = {}
        self.stats["enters"] += len(db.entered)
        if len(db.entered) == db.n:
            self._fill(db, index)
        self._gc(db)

    def _gc(self, db: DoubleBarrier) -> None:
        if not db.entered and not db.next:
            del self.doubles[db.name]

    def enter_state(self, name: str, sid: str) -> dict[str, Any]:
        """Where `sid`'s enter stands: `ready` once its round is full; `waiting` while
        fewer than n entered (or it waits for the next round); `entered: false` if it is
        not in the barrier (withdrawn, or its session ended)."""
        db = self.doubles.get(name)
        if db is None or (sid not in db.entered and sid not in db.next) or (
                sid in db.left and sid not in db.next):
            return {"barrier": name, "entered": False, "ready": False}
        if sid in db.entered and sid not in db.left:
            return {"barrier": name, "entered": True, "ready": bool(db.full),
                    "round": db.round, "count": len(db.entered), "n": db.n,
                    "full": db.full or None}
        return {"barrier": name, "entered": True, "ready": False, "round": None,
                "count": 0, "n": db.n, "next_round": True,
                "position": list(db.next).index(sid)}

    def leave_state(self, name: str, round_: int) -> dict[str, Any]:
        """Whether round `round_` of `name` is done (every participant left)."""
        db = self.doubles.get(name)
        if db is None or db.round != round_:
            return {"barrier": name, "left": True, "done": True, "round": round_}
        return {"barrier": name, "left": True, "done": False, "round": round_,
                "remaining": len(db.entered) - len(db.left), "n": db.n}

    def session_ended(self, sid: str, index: int, reason: str) -> None:
        """A session's end: it leaves every full round it is in, withdraws from entering
        ones and from next rounds; barriers it set are removed. In name order."""
        for name in sorted(n for n, b in self.barriers.items() if b.session == sid):
            del self.barriers[name]
            self.stats["removes"] += 1
        for name in sorted(self.doubles):
            db = self.doubles[name]
            db.next.pop(sid, None)
            if sid in db.entered:
                if not db.full:
                    del db.entered[sid]
                elif sid not in db.left:
                    db.left[sid] = None
                    self.stats["leaves"] += 1
                    self._maybe_done(db, index)
                    if name not in self.doubles:
                        continue
            self._gc(db)

    # -- reads ---------------------------------------------------------------------------

    def barrier_info(self, name: str) -> dict[str, Any]:
        b = self.barriers.get(name)
        return {"barrier": name, "raised": b is not None,
                "generation": None if b is None else b.generation,
                "session": None if b is None else (b.session or None)}

    def double_info(self, name: str) -> dict[str, Any]:
        db = self.doubles.get(name)
        if db is None:
            return {"barrier": name, "n": None, "round": None, "entered": [], "left": [],
                    "full": None, "next": []}
        return {"barrier": name, "n": db.n, "round": db.round, "entered": list(db.entered),
                "left": list(db.left), "full": db.full or None, "next": list(db.next)}

    def list(self, kind: str, prefix: str, after: str, limit: int
             ) -> tuple[list[dict[str, Any]], str | None]:
        table: dict[str, Any] = self.barriers if kind == "barrier" else self.doubles
        names = sorted(n for n in table if n.startswith(prefix) and n > after)
        page = names[:limit]
        info = self.barrier_info if kind == "barrier" else self.double_info
        return [info(n) for n in page], (page[-1] if len(names) > limit else None)

    def snapshot_size_hint(self) -> int:
        return 80 * len(self.barriers) + sum(
            100 + 40 * (len(d.entered) + len(d.left) + len(d.next))
            for d in self.doubles.values())

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "barriers": [[b.name, b.generation, b.session] for b in self.barriers.values()],
            "doubles": [[d.name, d.n, d.round, list(d.entered), list(d.left), d.full,
                         list(d.next)] for d in self.doubles.values()],
        }

    def restore(self, data: Any) -> None:
        self.barriers = {n: Barrier(n, g, s) for n, g, s in data["barriers"]}
        self.doubles = {
            n: DoubleBarrier(n, k, r, dict.fromkeys(e), dict.fromkeys(lf), full,
                             dict.fromkeys(nx))
            for n, k, r, e, lf, full, nx in data["doubles"]
        }


_OPS: dict[str, Callable[[BarrierService, dict[str, Any], int], Any]] = {
    "set": BarrierService._set,
    "remove": BarrierService._remove,
    "enter": BarrierService._enter,
    "leave": BarrierService._leave,
}
