"""The distributed lock manager: sessions with leases, exclusive/shared locks with FIFO
waiters, fencing tokens and deadlock detection, as a deterministic state machine.

Everything here except the leader-only lease view (`locks_lease.py`) is a pure function of the
applied log, so every node agrees on who holds and who waits at every log index.

Rules (also in README "Locks"):

* A **grant's fencing token** is the log index of the command that granted it, so tokens
  strictly increase per lock across leaders and restarts. Holders granted by one command (a
  release handing a lock to a run of shared waiters) share that command's token; an
  exclusive grant's token belongs to it alone.
* **FIFO**: a request is granted at once only if nobody waits and it is compatible with the
  holders; otherwise it queues. A shared request behind a waiting exclusive one waits (no
  writer starvation). Whenever a lock changes, the head of its queue is granted while
  compatible (a run of shared waiters together).
* **Reentrancy**: a session acquiring a lock it already holds, in the same mode (or asking
  for shared while holding exclusive), gets the same grant back (same token). Grants are not
  counted: one release frees the lock. Upgrading shared to exclusive is explicit
  (`upgrade: true`): granted at once if the session is the only holder, else it waits at the
  head of the queue, deadlock-checked like any wait. A second waiting request of a session
  for the same lock is answered with its existing wait.
* **Deadlocks**: a request that would wait is first checked against the wait-for graph
  (`locks_graph.py`); if it would close a cycle it is refused with 409 `deadlock` naming the
  cycle, and nothing changes. Try-locks (`wait_ms` 0) never wait, so never deadlock.
* **Time** enters only through commands the leader proposes: `expire` (a session missed its
  lease) and `timeout` (a waiter's deadline, carried in the acquire, passed). Both re-check
  their condition from replicated data and are idempotent.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import MAX_INT, CommandError, dispatch, no_session
from .base import bad_arg as _bad
from .base import int_arg as _int
from .base import str_arg as _str
from .locks_graph import EXCLUSIVE, SHARED, Hold, Lock, Waiter, all_cycles, find_cycle
from .locks_lease import RETRY_MS, LeaseTracker, NotReady

MODES = (EXCLUSIVE, SHARED)
MIN_TTL_MS, MAX_TTL_MS = 1_000, 3_600_000
MAX_WAIT_MS = 3_600_000
OUTCOME_LIMIT = 65_536  # finished waits remembered for long polls, oldest dropped first
RECENT_DEADLOCKS = 16  # refused acquires remembered for GET /v1/locks/deadlocks
_MAX_INT = MAX_INT

__all__ = ["EXCLUSIVE", "SHARED", "LockService", "NotReady"]


@dataclass
class Session:
    id: str
    ttl_ms: int
    name: str
    created: int  # log index of the open
    owner: str = ""  # the client that opened it (its address), for the per-client quota
    holds: dict[str, None] = field(default_factory=dict)  # lock names, in grant order
    waits: dict[str, Waiter] = field(default_factory=dict)  # lock name -> its waiter





class LockService:
    name = "locks"

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.sessions: dict[str, Session] = {}
        self.locks: dict[str, Lock] = {}
        self.waits: dict[int, Waiter] = {}  # wait id -> waiter
        self.outcomes: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._owners: dict[str, int] = {}  # derived: open sessions per owner (quotas.py)
        # Derived, not part of the state: wait deadlines for the leader's timer.
        self._heap: list[tuple[int, int]] = []
        # Volatile, leader-only (see locks_lease.py), on the node's clock (milliseconds).
        self.lease = LeaseTracker(clock)
        # Counters of applied events, for metrics (volatile: they restart with the process).
        self.stats = dict.fromkeys(
            ("grants", "releases", "expiries", "timeouts", "deadlocks", "opened", "closed"), 0
        )
        # The last refused acquires that would have closed a cycle, newest last (the wait-for
        # graph itself never holds a cycle, so this is where an operator sees one). Volatile
        # like the counters: a refusal changes no state, so it is not in the snapshot; every
        # node that applied the refusal since it started reports it.
        self.recent_deadlocks: deque[dict[str, Any]] = deque(maxlen=RECENT_DEADLOCKS)
        # Other services that bind state to a session (ephemeral keys, election candidates,
        # semaphore permits) hear of its end here, inside the same apply, so that their
        # cleanup lands at the same log index on every node. Wired by server.py, in a fixed
        # order; not state (the bound state lives, and is snapshotted, in each service).
        self._session_end: list[Callable[[str, int, str], None]] = []
        # Other resources whose waits join the wait-for graph (semaphores.py): each has
        # `wait_edges(session)`; locks_graph.py follows them. Wired by server.py, not state.
        self.wait_sources: list[Any] = []

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        return dispatch(self, _OPS, "locks", op, args, index)

    def _open(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        ttl = _int(args, "ttl_ms", MIN_TTL_MS, MAX_TTL_MS)
        label = args.get("name") or ""
        if not isinstance(label, str):
            raise _bad("name must be a string")
        owner = args.get("owner") or ""
        if not isinstance(owner, str):
            raise _bad("owner must be a string")
        sid = f"s{index}"
        self.sessions[sid] = Session(sid, ttl, label, index, owner)
        if owner:
            self._owners[owner] = self._owners.get(owner, 0) + 1
        self.stats["opened"] += 1
        self.lease.dirty = True
        return {"session": sid, "ttl_ms": ttl}

    def _close(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sess = self._session(_str(args, "session"))
        released = self._end_session(sess, index, "closed")
        self.stats["closed"] += 1
        return {"closed": True, "session": sess.id, "released": released, "index": index}

    def _expire(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sid = _str(args, "session")
        idle = _int(args, "idle_ms")
        sess = self.sessions.get(sid)
        if sess is None:
            return {"expired": False, "session": sid, "reason": "unknown session"}
        if idle < sess.ttl_ms:
            return {"expired": False, "session": sid, "reason": "not due"}
        released = self._end_session(sess, index, "expired")
        self.stats["expiries"] += 1
        return {"expired": True, "session": sid, "released": released, "index": index}

    def _acquire(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sess = self._session(_str(args, "session"))
        name = _str(args, "lock")
        mode = args.get("mode", EXCLUSIVE)
        if mode not in MODES:
            raise _bad("mode must be 'exclusive' or 'shared'")
        wait_ms = _int(args, "wait_ms", 0, MAX_WAIT_MS)
        deadline = _int(args, "deadline_ms") if wait_ms else 0
        upgrade = args.get("upgrade", False) is True
        sid = sess.id
        lk = self.locks.get(name)
        hold = lk.holders.get(sid) if lk is not None else None
        pending = sess.waits.get(name)
        if hold is not None and lk is not None:
            if hold.mode == EXCLUSIVE or hold.mode == mode:
                return self._granted(lk, sid, hold, reentrant=True)
            if not upgrade:
                raise CommandError(
                    "mode_conflict",
                    f"session {sid} holds {name!r} shared; acquire exclusive with "
                    "upgrade: true to upgrade",
                    409, lock=name, held_mode=SHARED, token=hold.token,
                )
            if pending is not None:
                return self._waiting(lk, pending)
            if len(lk.holders) == 1:
                hold.mode, hold.token, hold.wait_id = EXCLUSIVE, index, 0
                lk.token = index
                self.stats["grants"] += 1
                return self._granted(lk, sid, hold, upgraded=True)
            front = True
        else:
            if upgrade:
                raise CommandError(
                    "not_held", f"session {sid} does not hold {name!r}; nothing to upgrade",
                    409, lock=name,
                )
            if pending is not None and lk is not None:
                if pending.mode == mode:
                    return self._waiting(lk, pending)
                raise CommandError(
                    "already_waiting",
                    f"session {sid} already waits for {name!r} in {pending.mode} mode",
                    409, lock=name, mode=pending.mode, wait_id=pending.wait_id,
                )
            if lk is None:
                lk = Lock(name)
            if not lk.queue and self._compatible(lk, mode):
                self.locks[name] = lk
                hold = lk.holders[sid] = Hold(mode, index, 0)
                lk.token = index
                sess.holds[name] = None
                self.stats["grants"] += 1
                return self._granted(lk, sid, hold)
            front = False
        if wait_ms == 0:
            raise CommandError(
                "timeout", f"lock {name!r} is held (try-lock)", 409,
                lock=name, holders=sorted(lk.holders), waited_ms=0,
            )
        seq = lk.front_seq - 1 if front else lk.next_seq
        first = list(lk.blockers(sid, mode, seq))
        cycle = find_cycle(self, sid, name, first)
        if cycle is not None:
            self.stats["deadlocks"] += 1
            sessions, locks = cycle
            self.recent_deadlocks.append({
                "index": index, "session": sid, "lock": name, "cycle": list(sessions),
                "locks": list(locks), "at_ms": deadline - wait_ms,
            })
            path = " -> ".join(
                f"{s} (on {lock})" for s, lock in zip(sessions, locks, strict=True)
            )
            raise CommandError(
                "deadlock",
                f"waiting for {name!r} would close a cycle in the wait-for graph: "
                f"{path} -> {sid}",
                409, cycle=sessions, locks=locks, lock=name,
            )
        w = Waiter(index, sid, name, mode, deadline, front, 0)
        lk.add(w, front)
        sess.waits[name] = w
        self.waits[index] = w
        heapq.heappush(self._heap, (deadline, index))
        if len(self._heap) > 2 * len(self.waits) + 64:
            self._rebuild_heap()
        return self._waiting(lk, w)

    def _release(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        sess = self._session(_str(args, "session"))
        name = _str(args, "lock")
        lk = self.locks.get(name)
        hold = lk.holders.get(sess.id) if lk is not None else None
        pending = sess.waits.get(name)
        if lk is None or (hold is None and pending is None):
            raise CommandError(
                "not_held", f"session {sess.id} neither holds nor waits for {name!r}", 409,
                lock=name,
            )
        if pending is not None:
            self._drop_wait(pending, "cancelled")
        if hold is not None:
            del lk.holders[sess.id]
            del sess.holds[name]
            self.stats["releases"] += 1
        granted = self._grant(lk, index)
        self._gc(lk)
        return {
            "released": hold is not None, "cancelled": pending is not None, "lock": name,
            "session": sess.id, "token": hold.token if hold else None, "index": index,
            "granted": granted,
        }

    def _timeout(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        wid = _int(args, "wait_id")
        now_ms = _int(args, "now_ms")
        w = self.waits.get(wid)
        if w is None:
            return {"timed_out": False, "wait_id": wid, "reason": "not waiting"}
        if w.deadline_ms > now_ms:
            return {"timed_out": False, "wait_id": wid, "reason": "not due"}
        lk = self.locks[w.lock]
        self._drop_wait(w, "timeout")
        self.stats["timeouts"] += 1
        granted = self._grant(lk, index)
        self._gc(lk)
        return {"timed_out": True, "wait_id": wid, "lock": w.lock, "session": w.session,
                "granted": granted}

    # -- helpers -------------------------------------------------------------------------

    def _session(self, sid: str) -> Session:
        sess = self.sessions.get(sid)
        if sess is None:
            raise no_session(sid)
        return sess

    @staticmethod
    def _compatible(lk: Lock, mode: str) -> bool:
        return not lk.holders or (mode == SHARED and lk.mode == SHARED)

    def _granted(self, lk: Lock, sid: str, hold: Hold, reentrant: bool = False,
                 upgraded: bool = False) -> dict[str, Any]:
        return {
            "granted": True, "lock": lk.name, "session": sid, "mode": hold.mode,
            "token": hold.token, "reentrant": reentrant, "upgraded": upgraded,
        }

    def _waiting(self, lk: Lock, w: Waiter) -> dict[str, Any]:
        return {
            "granted": False, "waiting": True, "lock": lk.name, "session": w.session,
            "mode": w.mode, "wait_id": w.wait_id, "position": lk.position(w.seq),
            "deadline_ms": w.deadline_ms,
        }

    def _grant(self, lk: Lock, index: int) -> list[str]:
        """Grant the head of the queue while it is compatible; returns the new holders."""
        granted: list[str] = []
        while lk.queue:
            w = lk.queue[0]
            if w.mode == EXCLUSIVE:
                if any(s != w.session for s in lk.holders):
                    break
            elif lk.mode == EXCLUSIVE:
                break
            lk.remove(w)
            del self.waits[w.wait_id]
            sess = self.sessions[w.session]
            del sess.waits[lk.name]
            if w.upgrade:
                hold = lk.holders[w.session]
                hold.mode, hold.token, hold.wait_id = EXCLUSIVE, index, w.wait_id
            else:
                lk.holders[w.session] = Hold(w.mode, index, w.wait_id)
                sess.holds[lk.name] = None
            lk.token = index
            self.stats["grants"] += 1
            self._outcome(w, "granted", token=index, mode=w.mode, upgraded=w.upgrade)
            granted.append(w.session)
        return granted

    def _drop_wait(self, w: Waiter, state: str) -> None:
        self.locks[w.lock].remove(w)
        del self.waits[w.wait_id]
        del self.sessions[w.session].waits[w.lock]
        self._outcome(w, state)

    def _outcome(self, w: Waiter, state: str, **extra: Any) -> None:
        self.outcomes[w.wait_id] = {
            "state": state, "lock": w.lock, "session": w.session, **extra,
        }
        while len(self.outcomes) > OUTCOME_LIMIT:
            self.outcomes.popitem(last=False)

    def _gc(self, lk: Lock) -> None:
        if not lk.holders and not lk.queue:
            del self.locks[lk.name]

    def _end_session(self, sess: Session, index: int, reason: str) -> list[str]:
        """Drop a session's waits and holds, then hand each touched lock on (in name order,
        so that every node grants in the same order)."""
        touched = set(sess.waits) | set(sess.holds)
        for w in list(sess.waits.values()):
            self._drop_wait(w, "session_" + reason)
        released = []
        for name in sess.holds:
            del self.locks[name].holders[sess.id]
            released.append(name)
            self.stats["releases"] += 1
        del self.sessions[sess.id]
        self._disown(sess.owner)
        self.lease.dirty = True
        for name in sorted(touched):
            lk = self.locks[name]
            self._grant(lk, index)
            self._gc(lk)
        for fn in self._session_end:
            fn(sess.id, index, reason)
        return released

    def on_session_end(self, fn: Callable[[str, int, str], None]) -> None:
        """Call `fn(session_id, index, reason)` whenever a session ends ("closed" or
        "expired"), after its locks were handed on. `fn` must be deterministic like apply."""
        self._session_end.append(fn)

    def session_open(self, sid: str) -> bool:
        """Whether `sid` is a live session at this point of the applied log."""
        return sid in self.sessions

    def owned(self, owner: str) -> int:
        """Open sessions of `owner` (the per-client session quota)."""
        return self._owners.get(owner, 0)

    def _disown(self, owner: str) -> None:
        if owner:
            left = self._owners.get(owner, 0) - 1
            if left > 0:
                self._owners[owner] = left
            else:
                self._owners.pop(owner, None)

    def snapshot_size_hint(self) -> int:
        """About the bytes of this state (quotas.py weighs it against max_state_bytes)."""
        return 120 * len(self.sessions) + 120 * len(self.locks) + 100 * len(self.waits) \
            + 200 * len(self.outcomes)

    def _rebuild_heap(self) -> None:
        self._heap = [(w.deadline_ms, wid) for wid, w in self.waits.items()]
        heapq.heapify(self._heap)

    # -- leader-driven time (LeaderDriven) -----------------------------------------------

    def on_leader_start(self, now_ms: int, term: int) -> None:
        self.lease.start(self.sessions, term)
        self._rebuild_heap()

    def due_commands(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = [
            ("expire", {"session": sid, "idle_ms": idle})
            for sid, idle in self.lease.due(self.sessions)
        ]
        sent = self.lease.timeouts_sent
        while self._heap and self._heap[0][0] <= now_ms:
            deadline, wid = heapq.heappop(self._heap)
            w = self.waits.get(wid)
            if w is not None and w.deadline_ms == deadline and wid not in sent:
                sent[wid] = now_ms
                out.append(("timeout", {"wait_id": wid, "now_ms": now_ms}))
        for wid, at in list(sent.items()):
            if wid not in self.waits:
                del sent[wid]
            elif now_ms - at >= RETRY_MS:  # the proposal was lost: make it again
                sent[wid] = now_ms
                out.append(("timeout", {"wait_id": wid, "now_ms": now_ms}))
        return out

    def keepalive(self, sid: str, term: int | None) -> dict[str, Any]:
        """Extend a session's lease (leader only, no log write). The caller has passed a
        ReadIndex barrier in `term`; see locks_lease.py for why that makes it safe."""
        sess = self._session(sid)
        if self.lease.term is None or self.lease.term != term:
            raise NotReady("the leader is starting its lease view; retry")
        if sid in self.lease.expiring:
            raise CommandError(
                "session_not_found", f"session {sid!r} has expired", 404, session=sid
            )
        self.lease.keepalive(sid, sess.ttl_ms)
        return {"session": sid, "ttl_ms": sess.ttl_ms}

    # -- reads (local; linearizable after a ReadIndex barrier) ---------------------------

    def lock_info(self, name: str) -> dict[str, Any]:
        lk = self.locks.get(name)
        if lk is None:
            return {"lock": name, "mode": None, "holders": [], "waiters": [], "token": None}
        return {
            "lock": name, "mode": lk.mode, "token": lk.token,
            "holders": [
                {"session": s, "mode": h.mode, "token": h.token} for s, h in lk.holders.items()
            ],
            "waiters": [
                {"session": w.session, "mode": w.mode, "wait_id": w.wait_id,
                 "deadline_ms": w.deadline_ms, "upgrade": w.upgrade}
                for w in lk.queue
            ],
        }

    def list_locks(
        self, prefix: str, after: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        names = sorted(n for n in self.locks if n.startswith(prefix) and n > after)
        page = names[:limit]
        out = [
            {"lock": n, "mode": self.locks[n].mode, "holders": len(self.locks[n].holders),
             "waiters": len(self.locks[n].queue), "token": self.locks[n].token}
            for n in page
        ]
        return out, (page[-1] if len(names) > limit else None)

    def list_sessions(self, after: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Open sessions in id order, a page at a time (`after` the last id of the previous
        page), with the names of the locks each holds and waits for."""
        ids = sorted(s for s in self.sessions if s > after)
        page = ids[:limit]
        out = [
            {"session": sid, "name": self.sessions[sid].name,
             "ttl_ms": self.sessions[sid].ttl_ms, "holds": list(self.sessions[sid].holds),
             "waits": list(self.sessions[sid].waits)}
            for sid in page
        ]
        return out, (page[-1] if len(ids) > limit else None)

    def session_info(self, sid: str) -> dict[str, Any] | None:
        sess = self.sessions.get(sid)
        if sess is None:
            return None
        return {
            "session": sid, "ttl_ms": sess.ttl_ms, "name": sess.name, "created": sess.created,
            "holds": [
                {"lock": n, "mode": self.locks[n].holders[sid].mode,
                 "token": self.locks[n].holders[sid].token}
                for n in sess.holds
            ],
            "waits": [
                {"lock": n, "mode": w.mode, "wait_id": w.wait_id} for n, w in sess.waits.items()
            ],
        }

    def wait_state(self, wait_id: int) -> dict[str, Any] | None:
        """A wait's fate: still waiting (with its position), or its outcome; None if
        unknown (never existed, or its outcome was evicted)."""
        w = self.waits.get(wait_id)
        if w is not None:
            return self._waiting(self.locks[w.lock], w)
        return self.outcomes.get(wait_id)

    def deadlocks(self) -> list[dict[str, list[str]]]:
        return all_cycles(self)

    def recent(self) -> list[dict[str, Any]]:
        """The last refused acquires that would have closed a cycle, oldest first."""
        return list(self.recent_deadlocks)

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "sessions": [
                [s.id, s.ttl_ms, s.name, s.created, list(s.holds), list(s.waits),
                 *([s.owner] if s.owner else [])]
                for s in self.sessions.values()
            ],
            "locks": [
                [lk.name, lk.token, lk.next_seq, lk.front_seq,
                 [[sid, h.mode, h.token, h.wait_id] for sid, h in lk.holders.items()],
                 [[w.wait_id, w.session, w.mode, w.deadline_ms, w.upgrade, w.seq]
                  for w in lk.queue]]
                for lk in self.locks.values()
            ],
            "outcomes": [[k, v] for k, v in self.outcomes.items()],
        }

    def restore(self, data: Any) -> None:
        self.sessions, self.locks, self.waits = {}, {}, {}
        for name, token, next_seq, front_seq, holders, queue in data["locks"]:
            lk = Lock(name, token=token, next_seq=next_seq, front_seq=front_seq)
            lk.holders = {sid: Hold(mode, tok, wid) for sid, mode, tok, wid in holders}
            for wid, sid, mode, deadline, upgrade, seq in queue:
                w = Waiter(wid, sid, name, mode, deadline, upgrade, seq)
                lk.queue.append(w)
                lk.seqs.append(seq)
                if mode == EXCLUSIVE:
                    lk.excl.append(seq)
                self.waits[wid] = w
            self.locks[name] = lk
        by_key = {(w.session, w.lock): w for w in self.waits.values()}
        self._owners = {}
        for sid, ttl, label, created, holds, waits, *rest in data["sessions"]:
            sess = Session(sid, ttl, label, created, rest[0] if rest else "")
            if sess.owner:
                self._owners[sess.owner] = self._owners.get(sess.owner, 0) + 1
            sess.holds = dict.fromkeys(holds)
            sess.waits = {n: by_key[(sid, n)] for n in waits}
            self.sessions[sid] = sess
        self.outcomes = OrderedDict((k, v) for k, v in data["outcomes"])
        self._rebuild_heap()
        self.lease.dirty = True


_OPS: dict[str, Callable[[LockService, dict[str, Any], int], Any]] = {
    "open": LockService._open,
    "close": LockService._close,
    "expire": LockService._expire,
    "acquire": LockService._acquire,
    "release": LockService._release,
    "timeout": LockService._timeout,
}
