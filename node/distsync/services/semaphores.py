"""Counting semaphores on lock sessions: N permits, FIFO waiters, leases, fencing tokens, and
waits that the lock service's deadlock detector sees. A deterministic state machine.

Why a service of its own rather than a lock kind inside `locks.py`: a semaphore shares the
lock service's *sessions* (its leases) and its *wait-for graph*, and nothing else. Its grant
rule (permits counted against N) and its state (N, permit counts) are different, and
locks.py is past the size where a module should split. So it binds to the lock service
through the two seams that service offers: `on_session_end` (a session's permits and waits
go, inside the same apply, at the same index on every node) and `wait_sources` (the
wait-for graph in `locks_graph.py` follows a session's semaphore waits as well as its lock
waits). A lock acquire that would close a cycle through a semaphore is refused, and so is
a semaphore acquire that would close one through locks.

Rules (also in README "Semaphores"):

* A semaphore exists while it has holders or waiters. Every request names its permit count
  `permits` (N); all holders and waiters must agree on it: a request with another N is
  refused with 409 `permits_conflict` (naming the current N). Once the semaphore is empty it
  is forgotten, and the next request sets N afresh.
* A session holds at most one grant per semaphore, of `count` permits (1..N). A second
  acquire by a holder gets the same grant back (`reentrant`), if it asks for the same count
  (else 409 `count_conflict`). A second acquire by a waiter gets its existing wait.
* **FIFO**: a request is granted at once only if nobody waits and `count` permits are free;
  otherwise it queues. Whenever permits come back, the head of the queue is granted while
  enough permits are free (a waiter never overtakes the one ahead of it: no starvation of
  large requests).
* **Fencing token**: the log index of the command that granted the permit, so tokens
  strictly increase per semaphore across leaders and restarts; waiters granted together by
  one release share that command's token (as shared lock holders do).
* **Leases**: when the session closes or expires, its permits are released and its waits
  dropped, and the freed permits go to the waiters, at that same log index.
* **Wait-for graph**: a waiter at the head of the queue waits for every current holder;
  one further back waits for the waiter directly ahead (who in turn reaches the holders:
  the same reachability with O(1) edges per waiter). This is conservative: a semaphore
  waiter is free once *enough* holders let go, not all of them, so a cycle through a
  semaphore is refused even where another holder, outside the cycle, could still release a
  permit and break it. The detector stays a reachability check over the part of the graph
  reachable from the requester (no global graph reduction per acquire); a refused acquire
  changed nothing and may be retried, or taken as a try-acquire.
* **Time** enters as in the lock service: a waiter's deadline travels in its acquire and
  the leader proposes `timeout` once it has passed (idempotent, re-checked on apply).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .base import MAX_INT, CommandError, dispatch, no_session
from .base import bad_arg as _bad
from .base import int_arg as _int
from .base import str_arg as _str
from .locks_graph import find_cycle
from .locks_lease import RETRY_MS

MAX_PERMITS = 1_000_000
MAX_WAIT_MS = 3_600_000
OUTCOME_LIMIT = 65_536
GRAPH_PREFIX = "semaphore/"  # how a semaphore is named in a wait-for cycle (no lock has '/')
_MAX_INT = MAX_INT


@dataclass(slots=True)
class Permit:
    count: int
    token: int  # log index of the grant: the fencing token
    wait_id: int  # the wait it came from, 0 when granted at once


@dataclass(slots=True, eq=False)  # identity: list.index/remove find this very waiter
class SemWaiter:
    wait_id: int  # log index of the acquire that queued it
    session: str
    sem: str
    count: int
    deadline_ms: int


@dataclass
class Semaphore:
    name: str
    permits: int  # N
    holders: dict[str, Permit] = field(default_factory=dict)  # session -> grant, grant order
    queue: list[SemWaiter] = field(default_factory=list)  # FIFO
    used: int = 0  # permits held
    token: int = 0  # token of the latest grant

    @property
    def free(self) -> int:
        return self.permits - self.used

    def blockers(self, w: SemWaiter) -> Iterator[str]:
        """Sessions the waiter `w` waits for directly (see the module docstring)."""
        i = self.queue.index(w)
        if i > 0:
            yield self.queue[i - 1].session
            return
        for sid in self.holders:
            if sid != w.session:
                yield sid


class Sessions(Protocol):
    """What this service needs of the lock service (locks.py's LockService)."""

    def session_open(self, sid: str) -> bool: ...





class SemaphoreService:
    name = "semaphores"

    def __init__(self, sessions: Sessions | None = None) -> None:
        self.sems: dict[str, Semaphore] = {}
        self.waits: dict[int, SemWaiter] = {}  # wait id -> waiter
        self.outcomes: OrderedDict[int, dict[str, Any]] = OrderedDict()
        # Derived from the above (rebuilt on restore), per session: semaphores held, and
        # waits in the order they began (the graph walks them in that order, so a refusal
        # names the same cycle on every node, restored from a snapshot or not).
        self.held_by: dict[str, dict[str, None]] = {}
        self.waits_of: dict[str, dict[str, SemWaiter]] = {}
        # The lock service whose sessions we bind to and whose graph we join (server.py).
        self.sessions = sessions
        self.graph: Any = None  # the LockService, for find_cycle (set with `sessions`)
        self._heap: list[tuple[int, int]] = []  # derived: (deadline, wait id)
        self._sent: dict[int, int] = {}  # leader-only: timeouts proposed, at what time
        self.stats = dict.fromkeys(
            ("grants", "releases", "timeouts", "deadlocks", "conflicts"), 0)

    def bind(self, locks: Any) -> None:
        """Join the lock service `locks`: its sessions, its session ends, its wait-for
        graph. Called once by server.py, in the same order on every node."""
        self.sessions = locks
        self.graph = locks
        locks.on_session_end(self.session_ended)
        locks.wait_sources.append(self)

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        return dispatch(self, _OPS, "semaphores", op, args, index)

    def _session(self, sid: str) -> str:
        if self.sessions is None or not self.sessions.session_open(sid):
            raise no_session(sid)
        return sid

    def _acquire(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sid = self._session(_str(args, "session"))
        name = _str(args, "semaphore")
        n = _int(args, "permits", 1, MAX_PERMITS)
        count = _int(args, "count", 1, MAX_PERMITS)
        if count > n:
            raise _bad(f"count ({count}) must be at most permits ({n})")
        wait_ms = _int(args, "wait_ms", 0, MAX_WAIT_MS)
        deadline = _int(args, "deadline_ms") if wait_ms else 0
        sem = self.sems.get(name)
        if sem is not None and sem.permits != n:
            self.stats["conflicts"] += 1
            raise CommandError(
                "permits_conflict",
                f"semaphore {name!r} has {sem.permits} permits; this request says {n}", 409,
                semaphore=name, permits=sem.permits)
        if sem is not None:
            held = sem.holders.get(sid)
            if held is not None:
                if held.count != count:
                    raise CommandError(
                        "count_conflict",
                        f"session {sid} holds {held.count} permits of {name!r}; release them "
                        f"before asking for {count}", 409,
                        semaphore=name, count=held.count, token=held.token)
                return self._granted(sem, sid, held, reentrant=True)
            pending = self.waits_of.get(sid, {}).get(name)
            if pending is not None:
                if pending.count != count:
                    raise CommandError(
                        "already_waiting",
                        f"session {sid} already waits for {pending.count} permits of "
                        f"{name!r}", 409, semaphore=name, count=pending.count,
                        wait_id=pending.wait_id)
                return self._waiting(sem, pending)
        else:
            sem = Semaphore(name, n)
        if not sem.queue and count <= sem.free:
            self.sems[name] = sem
            p = self._hold(sem, sid, count, index, 0)
            return self._granted(sem, sid, p)
        if wait_ms == 0:
            raise CommandError(
                "timeout", f"semaphore {name!r} has {sem.free} of {n} permits free and "
                f"{len(sem.queue)} waiters (try-acquire)", 409,
                semaphore=name, free=sem.free, holders=sorted(sem.holders), waited_ms=0)
        first = [sem.queue[-1].session] if sem.queue else [s for s in sem.holders if s != sid]
        cycle = find_cycle(self.graph, sid, GRAPH_PREFIX + name, first) \
            if self.graph is not None else None
        if cycle is not None:
            self.stats["deadlocks"] += 1
            sessions, via = cycle
            recent = getattr(self.graph, "recent_deadlocks", None)
            if recent is not None:
                recent.append({"index": index, "session": sid, "lock": GRAPH_PREFIX + name,
                               "cycle": list(sessions), "locks": list(via),
                               "at_ms": deadline - wait_ms})
            path = " -> ".join(f"{s} (on {r})" for s, r in zip(sessions, via, strict=True))
            raise CommandError(
                "deadlock",
                f"waiting for semaphore {name!r} would close a cycle in the wait-for graph: "
                f"{path} -> {sid}", 409, cycle=sessions, locks=via, semaphore=name)
        self.sems[name] = sem
        w = SemWaiter(index, sid, name, count, deadline)
        sem.queue.append(w)
        self.waits[index] = w
        self.waits_of.setdefault(sid, {})[name] = w
        heapq.heappush(self._heap, (deadline, index))
        if len(self._heap) > 2 * len(self.waits) + 64:
            self._rebuild_heap()
        return self._waiting(sem, w)

    def _release(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sid = self._session(_str(args, "session"))
        name = _str(args, "semaphore")
        sem = self.sems.get(name)
        held = sem.holders.get(sid) if sem is not None else None
        pending = self.waits_of.get(sid, {}).get(name)
        if sem is None or (held is None and pending is None):
            raise CommandError(
                "not_held", f"session {sid} neither holds nor waits for semaphore {name!r}",
                409, semaphore=name)
        if pending is not None:
            self._drop_wait(pending, "cancelled")
        if held is not None:
            self._unhold(sem, sid)
        granted = self._grant(sem, index)
        self._gc(sem)
        return {"released": held is not None, "cancelled": pending is not None,
                "semaphore": name, "session": sid, "count": held.count if held else 0,
                "token": held.token if held else None, "index": index, "granted": granted}

    def _timeout(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        wid = _int(args, "wait_id")
        now_ms = _int(args, "now_ms")
        w = self.waits.get(wid)
        if w is None:
            return {"timed_out": False, "wait_id": wid, "reason": "not waiting"}
        if w.deadline_ms > now_ms:
            return {"timed_out": False, "wait_id": wid, "reason": "not due"}
        sem = self.sems[w.sem]
        self._drop_wait(w, "timeout")
        self.stats["timeouts"] += 1
        granted = self._grant(sem, index)  # a big waiter at the head may have blocked others
        self._gc(sem)
        return {"timed_out": True, "wait_id": wid, "semaphore": w.sem, "session": w.session,
                "granted": granted}

    def session_ended(self, sid: str, index: int, reason: str) -> None:
        """The lock service ended session `sid` (closed or expired) at `index`: its waits go,
        its permits go back, and the waiters behind get them, in semaphore-name order."""
        touched = set(self.waits_of.get(sid, ())) | set(self.held_by.get(sid, ()))
        for w in list(self.waits_of.get(sid, {}).values()):
            self._drop_wait(w, "session_" + reason)
        for name in list(self.held_by.get(sid, ())):
            self._unhold(self.sems[name], sid)
        for name in sorted(touched):
            sem = self.sems[name]
            self._grant(sem, index)
            self._gc(sem)

    # -- helpers -------------------------------------------------------------------------

    def _hold(self, sem: Semaphore, sid: str, count: int, index: int, wait_id: int) -> Permit:
        p = sem.holders[sid] = Permit(count, index, wait_id)
        sem.used += count
        sem.token = index
        self.held_by.setdefault(sid, {})[sem.name] = None
        self.stats["grants"] += 1
        return p

    def _unhold(self, sem: Semaphore, sid: str) -> None:
        p = sem.holders.pop(sid)
        sem.used -= p.count
        held = self.held_by[sid]
        del held[sem.name]
        if not held:
            del self.held_by[sid]
        self.stats["releases"] += 1

    def _grant(self, sem: Semaphore, index: int) -> list[str]:
        granted: list[str] = []
        while sem.queue and sem.queue[0].count <= sem.free:
            w = sem.queue.pop(0)
            self._forget_wait(w)
            self._hold(sem, w.session, w.count, index, w.wait_id)
            self._outcome(w, "granted", token=index, count=w.count)
            granted.append(w.session)
        return granted

    def _drop_wait(self, w: SemWaiter, state: str) -> None:
        self.sems[w.sem].queue.remove(w)
        self._forget_wait(w)
        self._outcome(w, state)

    def _forget_wait(self, w: SemWaiter) -> None:
        del self.waits[w.wait_id]
        mine = self.waits_of[w.session]
        del mine[w.sem]
        if not mine:
            del self.waits_of[w.session]

    def _outcome(self, w: SemWaiter, state: str, **extra: Any) -> None:
        self.outcomes[w.wait_id] = {"state": state, "semaphore": w.sem, "session": w.session,
                                    **extra}
        while len(self.outcomes) > OUTCOME_LIMIT:
            self.outcomes.popitem(last=False)

    def _gc(self, sem: Semaphore) -> None:
        if not sem.holders and not sem.queue:
            self.sems.pop(sem.name, None)

    @staticmethod
    def _granted(sem: Semaphore, sid: str, p: Permit, reentrant: bool = False
                 ) -> dict[str, Any]:
        return {"granted": True, "semaphore": sem.name, "session": sid, "count": p.count,
                "permits": sem.permits, "token": p.token, "reentrant": reentrant}

    @staticmethod
    def _waiting(sem: Semaphore, w: SemWaiter) -> dict[str, Any]:
        return {"granted": False, "waiting": True, "semaphore": sem.name,
                "session": w.session, "count": w.count, "permits": sem.permits,
                "wait_id": w.wait_id, "position": sem.queue.index(w),
                "deadline_ms": w.deadline_ms}

    def _rebuild_heap(self) -> None:
        self._heap = [(w.deadline_ms, wid) for wid, w in self.waits.items()]
        heapq.heapify(self._heap)

    # -- the wait-for graph (locks_graph.py follows these) -------------------------------

    def wait_edges(self, sid: str) -> Iterator[tuple[str, str]]:
        """(blocker, resource) for each session `sid` waits for on a semaphore."""
        for name, w in self.waits_of.get(sid, {}).items():
            for b in self.sems[name].blockers(w):
                yield b, GRAPH_PREFIX + name

    # -- leader-driven time (LeaderDriven) -----------------------------------------------

    def on_leader_start(self, now_ms: int, term: int) -> None:
        self._sent = {}
        self._rebuild_heap()

    def due_commands(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        while self._heap and self._heap[0][0] <= now_ms:
            deadline, wid = heapq.heappop(self._heap)
            w = self.waits.get(wid)
            if w is not None and w.deadline_ms == deadline and wid not in self._sent:
                self._sent[wid] = now_ms
                out.append(("timeout", {"wait_id": wid, "now_ms": now_ms}))
        for wid, at in list(self._sent.items()):
            if wid not in self.waits:
                del self._sent[wid]
            elif now_ms - at >= RETRY_MS:  # the proposal was lost: make it again
                self._sent[wid] = now_ms
                out.append(("timeout", {"wait_id": wid, "now_ms": now_ms}))
        return out

    # -- reads ---------------------------------------------------------------------------

    def info(self, name: str) -> dict[str, Any]:
        sem = self.sems.get(name)
        if sem is None:
            return {"semaphore": name, "permits": None, "free": None, "token": None,
                    "holders": [], "waiters": []}
        return {
            "semaphore": name, "permits": sem.permits, "free": sem.free, "token": sem.token,
            "holders": [{"session": s, "count": p.count, "token": p.token}
                        for s, p in sem.holders.items()],
            "waiters": [{"session": w.session, "count": w.count, "wait_id": w.wait_id,
                         "deadline_ms": w.deadline_ms} for w in sem.queue],
        }

    def list(self, prefix: str, after: str, limit: int
             ) -> tuple[list[dict[str, Any]], str | None]:
        names = sorted(n for n in self.sems if n.startswith(prefix) and n > after)
        page = names[:limit]
        out = [{"semaphore": n, "permits": self.sems[n].permits, "free": self.sems[n].free,
                "holders": len(self.sems[n].holders), "waiters": len(self.sems[n].queue),
                "token": self.sems[n].token} for n in page]
        return out, (page[-1] if len(names) > limit else None)

    def wait_state(self, wait_id: int) -> dict[str, Any] | None:
        w = self.waits.get(wait_id)
        if w is not None:
            return self._waiting(self.sems[w.sem], w)
        return self.outcomes.get(wait_id)

    def snapshot_size_hint(self) -> int:
        return 120 * len(self.sems) + 100 * (len(self.waits) + sum(
            len(s.holders) for s in self.sems.values())) + 160 * len(self.outcomes)

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "sems": [[s.name, s.permits, s.token,
                      [[sid, p.count, p.token, p.wait_id] for sid, p in s.holders.items()],
                      [[w.wait_id, w.session, w.count, w.deadline_ms] for w in s.queue]]
                     for s in self.sems.values()],
            "wait_order": [[sid, list(ws)] for sid, ws in self.waits_of.items()],
            "hold_order": [[sid, list(hs)] for sid, hs in self.held_by.items()],
            "outcomes": [[k, v] for k, v in self.outcomes.items()],
        }

    def restore(self, data: Any) -> None:
        self.sems, self.waits = {}, {}
        for name, permits, token, holders, queue in data["sems"]:
            sem = Semaphore(name, permits, token=token)
            for sid, count, tok, wid in holders:
                sem.holders[sid] = Permit(count, tok, wid)
                sem.used += count
            for wid, sid, count, deadline in queue:
                w = SemWaiter(wid, sid, name, count, deadline)
                sem.queue.append(w)
                self.waits[wid] = w
            self.sems[name] = sem
        self.waits_of = {sid: {n: self.sems[n].queue[self._pos(n, sid)] for n in names}
                         for sid, names in data["wait_order"]}
        self.held_by = {sid: dict.fromkeys(names) for sid, names in data["hold_order"]}
        self.outcomes = OrderedDict((k, v) for k, v in data["outcomes"])
        self._rebuild_heap()
        self._sent = {}

    def _pos(self, name: str, sid: str) -> int:
        return next(i for i, w in enumerate(self.sems[name].queue) if w.session == sid)


_OPS: dict[str, Callable[[SemaphoreService, dict[str, Any], int], Any]] = {
    "acquire": SemaphoreService._acquire,
    "release": SemaphoreService._release,
    "timeout": SemaphoreService._timeout,
}
