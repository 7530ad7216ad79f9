"""The wait-for graph of the lock service: who waits for whom, and cycle detection.

The graph is not stored separately: it is a pure function of the replicated lock state (who
holds what, and each lock's FIFO queue), so every node derives the same graph at every log
index and a snapshot carries it implicitly.

Nodes are sessions. A waiter `w` of session `s` on lock `L` gives edges `s -> t` for the
sessions `t` that must let go before `w` can be granted. Under strict FIFO that is every
holder incompatible with `w` and every waiter ahead of `w` incompatible with it. We use a
transitive reduction of that relation, which has the same reachability but O(1) to O(run)
edges per waiter instead of O(queue length):

* shared `w`: the nearest exclusive waiter ahead of it, if any (it in turn waits for
  everything ahead of it); otherwise the exclusive holder(s);
* exclusive `w`: the waiter directly ahead if that one is exclusive, else the whole run of
  shared waiters directly ahead (they are granted together and released independently);
  at the head of the queue, every other holder.

Other resources join the same graph through the lock service's `wait_sources` (a semaphore
waiter waits for the holders of its semaphore, semaphores.py): `_edges` follows them too.

Detection is incremental: before a session starts to wait, a depth-first search from the
sessions it would wait for looks for the requester. The search touches only what is
reachable from there (O(reachable edges)), never the whole graph.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

EXCLUSIVE = "exclusive"
SHARED = "shared"


@dataclass(slots=True)
class Waiter:
    wait_id: int  # log index of the acquire that enqueued it; unique
    session: str
    lock: str
    mode: str
    deadline_ms: int  # leader wall clock; a replicated 'timeout' command removes it after
    upgrade: bool
    seq: int  # position key in the lock's queue (front inserts get smaller numbers)


@dataclass(slots=True)
class Hold:
    mode: str
    token: int  # log index of the grant: the fencing token
    wait_id: int  # the waiter this grant came from, 0 when granted at once


@dataclass
class Lock:
    name: str
    holders: dict[str, Hold] = field(default_factory=dict)  # session -> hold, grant order
    queue: list[Waiter] = field(default_factory=list)  # FIFO, sorted by seq
    seqs: list[int] = field(default_factory=list)  # the queue's seqs (bisect at C speed)
    excl: list[int] = field(default_factory=list)  # seqs of exclusive waiters, sorted
    token: int = 0  # token of the latest grant
    next_seq: int = 0  # seq of the next appended waiter
    front_seq: int = 0  # seq of the last front insert (upgrades)

    @property
    def mode(self) -> str | None:
        for h in self.holders.values():
            return EXCLUSIVE if h.mode == EXCLUSIVE else SHARED
        return None

    def position(self, seq: int) -> int:
        """Index in `queue` of the waiter with this seq (or where it would go)."""
        return bisect_left(self.seqs, seq)

    def waiter_at_seq(self, seq: int) -> Waiter:
        return self.queue[self.position(seq)]

    def add(self, w: Waiter, front: bool) -> None:
        if front:
            self.front_seq -= 1
            w.seq = self.front_seq
            self.queue.insert(0, w)
            self.seqs.insert(0, w.seq)
            if w.mode == EXCLUSIVE:
                self.excl.insert(0, w.seq)
        else:
            w.seq = self.next_seq
            self.next_seq += 1
            self.queue.append(w)
            self.seqs.append(w.seq)
            if w.mode == EXCLUSIVE:
                self.excl.append(w.seq)

    def remove(self, w: Waiter) -> None:
        i = self.position(w.seq)
        del self.queue[i]
        del self.seqs[i]
        if w.mode == EXCLUSIVE:
            del self.excl[bisect_left(self.excl, w.seq)]

    def blockers(self, session: str, mode: str, seq: int) -> Iterator[str]:
        """Sessions a waiter (`session`, `mode`) at `seq` waits for directly; see the module
        docstring. `seq` may be hypothetical (a request about to be enqueued)."""
        i = bisect_left(self.excl, seq) - 1  # nearest exclusive waiter ahead, if any
        if mode == SHARED:
            if i >= 0:
                yield self.waiter_at_seq(self.excl[i]).session
                return
            for sid, h in self.holders.items():
                if h.mode == EXCLUSIVE and sid != session:
                    yield sid
            return
        j = self.position(seq)
        if j > 0:
            prev = self.queue[j - 1]
            if prev.mode == EXCLUSIVE:
                yield prev.session
                return
            lo = bisect_right(self.seqs, self.excl[i]) if i >= 0 else 0
            for x in self.queue[lo:j]:
                yield x.session
            return
        for sid in self.holders:
            if sid != session:
                yield sid


class WaitingSession(Protocol):
    waits: dict[str, Waiter]  # lock name -> this session's waiter on it


class LockState(Protocol):
    """What the graph reads of the lock service's state (locks.py's LockService): the
    graph is derived from it, and the service builds on the graph, not the other way."""

    @property
    def sessions(self) -> Mapping[str, WaitingSession]: ...

    @property
    def locks(self) -> Mapping[str, Lock]: ...


def find_cycle(
    svc: LockState, requester: str, lock: str, first: list[str]
) -> tuple[list[str], list[str]] | None:
    """Would `requester`, waiting on `lock` for the sessions `first`, close a cycle? Returns
    (sessions, locks) along the cycle, starting at the requester: sessions[i] waits on
    locks[i] for sessions[i + 1] (and the last one for the requester), or None.

    Iterative DFS over what is reachable from `first`; each session is expanded once."""
    parent: dict[str, tuple[str, str]] = {}
    stack: list[str] = []
    for b in first:
        if b != requester and b not in parent:
            parent[b] = (requester, lock)
            stack.append(b)
    while stack:
        s = stack.pop()
        for b, lname in _edges(svc, s):
            if b == requester:
                parent[b] = (s, lname)
                return _unwind(parent, requester)
            if b not in parent:
                parent[b] = (s, lname)
                stack.append(b)
    return None


def _edges(svc: LockState, s: str) -> Iterator[tuple[str, str]]:
    """(blocker, resource) for every session `s` waits for: its lock waits, then its waits
    in each of the service's `wait_sources` (semaphores.py: other resources that sessions
    hold and wait for, so that one graph covers them all)."""
    sess = svc.sessions.get(s)
    if sess is not None and sess.waits:
        locks = svc.locks
        for lname, w in sess.waits.items():
            for b in locks[lname].blockers(s, w.mode, w.seq):
                yield b, lname
    for src in getattr(svc, "wait_sources", ()):
        yield from src.wait_edges(s)


def _unwind(parent: dict[str, tuple[str, str]], requester: str) -> tuple[list[str], list[str]]:
    sessions: list[str] = []
    locks: list[str] = []
    cur = requester
    while True:
        prev, lname = parent[cur]
        sessions.append(prev)
        locks.append(lname)
        cur = prev
        if cur == requester:
            break
    sessions.reverse()
    locks.reverse()
    return sessions, locks


def all_cycles(svc: LockState, limit: int = 100) -> list[dict[str, list[str]]]:
    """Every cycle the full graph has (there should never be one), found by one colored DFS
    over all waiting sessions: O(sessions + edges). Used by GET /v1/locks/deadlocks and by
    the tests as the independent check."""
    WHITE, GREY, BLACK = 0, 1, 2
    color: dict[str, int] = {}
    out: list[dict[str, list[str]]] = []

    def edges(s: str) -> Iterator[tuple[str, str]]:
        return _edges(svc, s)

    for root in svc.sessions:
        if color.get(root, WHITE) != WHITE:
            continue
        color[root] = GREY
        path: list[tuple[str, str]] = []  # (session, lock it waits on to the next)
        stack = [(root, edges(root))]
        while stack:
            s, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[s] = BLACK
                stack.pop()
                if path:
                    path.pop()
                continue
            b, lname = nxt
            c = color.get(b, WHITE)
            if c == GREY:
                chain = path + [(s, lname)]
                start = next(k for k, (x, _) in enumerate(chain) if x == b)
                cyc = chain[start:]
                out.append({"sessions": [x for x, _ in cyc], "locks": [lk for _, lk in cyc]})
                if len(out) >= limit:
                    return out
            elif c == WHITE:
                color[b] = GREY
                path.append((s, lname))
                stack.append((b, edges(b)))
    return out
