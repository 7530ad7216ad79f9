"""Leader election, in the style of etcd's v3election, as a deterministic state machine.

An election is a name with a FIFO queue of candidates; the head of the queue leads. Every
candidate is a lock session (services/locks.py) campaigning with a value (any JSON value:
an address, a shard map). Everything here is a pure function of the applied log, so every
node agrees on who leads at every log index.

Rules (also in README "Leader election"):

* **campaign** puts the session at the tail of the queue, with its value; the candidacy's id
  is the log index of that command. When nobody leads, the head is elected at once. A
  session has at most one candidacy per election: campaigning again while a candidate or
  leader answers the existing candidacy (a retry is harmless).
* The **fencing token** of a leadership is the log index of the command that elected it (the
  campaign itself, or the resign, session end or withdrawal that handed it on), so tokens
  strictly increase per election across leaders, restarts and snapshots.
* **proclaim** changes the leader's value; refused with 409 `not_leader` unless the caller's
  session leads with the token it names.
* **resign** steps the leader down (with its token, when it names one) and elects the next
  candidate at the same index; a waiting candidate resigning withdraws from the queue.
* A session's end (close or expiry, `LockService.on_session_end`) does both at the index of
  the close or expiry: its leadership passes on and its candidacies leave their queues.
* An election with neither a leader nor candidates is forgotten; its next leadership still
  gets a larger token, since tokens are log indexes.

Each change of leader or value is a *revision* of the election (the index that made it);
observers stream them (api/elections.py). The recent changes per election are kept in memory
only (`changes`), as the kv history is for watches: not part of the snapshot, so a restarted
node's observers start from the current leader.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import MAX_INT, CommandError, dispatch, no_session
from .base import bad_arg as _bad
from .base import str_arg as _str

OUTCOME_LIMIT = 65_536  # finished candidacies remembered for long polls, oldest first
CHANGES_KEPT = 256  # recent leader changes per election, for observers (volatile)
CHANGES_NAMES = 10_000  # elections whose recent changes are kept, oldest forgotten first
_MAX_INT = MAX_INT


@dataclass
class Candidate:
    id: int  # log index of the campaign
    session: str
    value: Any


@dataclass
class Election:
    name: str
    leader: Candidate | None = None
    token: int = 0  # log index that elected the current leader (0: nobody leads)
    revision: int = 0  # log index of the last change of leader or value
    queue: list[Candidate] | None = None  # waiting candidates, FIFO

    def __post_init__(self) -> None:
        if self.queue is None:
            self.queue = []

    @property
    def waiting(self) -> list[Candidate]:
        assert self.queue is not None
        return self.queue




def _token(args: dict[str, Any], required: bool) -> int | None:
    v = args.get("token")
    if v is None and not required:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= _MAX_INT:
        raise _bad("token must be a positive integer")
    return v


class ElectionService:
    name = "elections"

    def __init__(self, locks: Any = None) -> None:
        # The lock service whose sessions campaign (read only: is a session open?). None in
        # a bare instance (the registry makes one for an empty state), where every session
        # counts as open.
        self.locks = locks
        self.elections: dict[str, Election] = {}
        self.outcomes: OrderedDict[int, dict[str, Any]] = OrderedDict()
        # Derived: session -> the elections it leads or waits in (session-end cleanup), and
        # each live candidacy's election (long polls look theirs up on every apply).
        self._by_session: dict[str, dict[str, None]] = {}
        self._cands: dict[int, str] = {}
        # Volatile: recent changes per election for observers, and applied-event counters.
        self.changes: dict[str, deque[dict[str, Any]]] = {}
        self._trimmed: set[str] = set()  # names whose recent changes lost their oldest
        self._since = 0  # changes are recorded for every index after this (restore's)
        self.stats = dict.fromkeys(("campaigns", "elected", "resigned", "proclaims",
                                    "session_ends"), 0)

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        return dispatch(self, _OPS, "elections", op, args, index)

    def _campaign(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        name = _str(args, "election")
        sid = _str(args, "session")
        if "value" not in args:
            raise _bad("value is required")
        value = args["value"]
        if self.locks is not None and not self.locks.session_open(sid):
            raise no_session(sid)
        el = self.elections.get(name)
        if el is not None:
            if el.leader is not None and el.leader.session == sid:
                return self._leading(el)
            for c in el.waiting:
                if c.session == sid:
                    return self._candidate_state(el, c)
        else:
            el = self.elections[name] = Election(name)
        cand = Candidate(index, sid, value)
        el.waiting.append(cand)
        self._cands[index] = name
        self._by_session.setdefault(sid, {})[name] = None
        self.stats["campaigns"] += 1
        if el.leader is None:
            self._elect_next(el, index)
        return self._candidate_state(el, cand)

    def _proclaim(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        name = _str(args, "election")
        sid = _str(args, "session")
        token = _token(args, required=True)
        if "value" not in args:
            raise _bad("value is required")
        el = self._leader_check(name, sid, token)
        assert el.leader is not None
        el.leader.value = args["value"]
        el.revision = index
        self.stats["proclaims"] += 1
        self._changed(el)
        return self._leading(el)

    def _resign(self, args: dict[str, Any], index: int) -> dict[str, Any]:
        name = _str(args, "election")
        sid = _str(args, "session")
        token = _token(args, required=False)
        el = self.elections.get(name)
        if el is not None and el.leader is not None and el.leader.session == sid:
            self._leader_check(name, sid, token)
            old = el.leader
            self._outcome(old, name, "resigned", token=el.token)
            self._cands.pop(old.id, None)
            self._unbind(sid, name)
            el.leader, el.token = None, 0
            self.stats["resigned"] += 1
            self._elect_next(el, index)
            self._gc(el)
            return {"resigned": True, "was_leader": True, "election": name, "session": sid,
                    "token": token if token is not None else old.id, "index": index,
                    "leader": self._leader_info(el)}
        if el is not None:
            for c in el.waiting:
                if c.session == sid:
                    el.waiting.remove(c)
                    self._unbind(sid, name)
                    self._outcome(c, name, "withdrawn")
                    self._cands.pop(c.id, None)
                    self._gc(el)
                    return {"resigned": True, "was_leader": False, "election": name,
                            "session": sid, "index": index, "leader": self._leader_info(el)}
        raise CommandError(
            "not_candidate", f"session {sid} neither leads nor campaigns in {name!r}", 409,
            election=name, session=sid,
        )

    # -- session ends (LockService.on_session_end) ---------------------------------------

    def session_ended(self, sid: str, index: int, reason: str) -> None:
        """The session's leaderships pass on and its candidacies leave their queues, at the
        index of the close or expiry, in election-name order (the same on every node)."""
        names = self._by_session.pop(sid, None)
        if not names:
            return
        self.stats["session_ends"] += 1
        for name in sorted(names):
            el = self.elections[name]
            if el.leader is not None and el.leader.session == sid:
                self._outcome(el.leader, name, "session_" + reason, token=el.token)
                self._cands.pop(el.leader.id, None)
                el.leader, el.token = None, 0
                self._elect_next(el, index)
            else:
                for c in el.waiting:
                    if c.session == sid:
                        el.waiting.remove(c)
                        self._outcome(c, name, "session_" + reason)
                        self._cands.pop(c.id, None)
                        break
            self._gc(el)

    # -- helpers -------------------------------------------------------------------------

    def _leader_check(self, name: str, sid: str, token: int | None) -> Election:
        el = self.elections.get(name)
        lead = el.leader if el is not None else None
        if el is None or lead is None or lead.session != sid or (
                token is not None and token != el.token):
            raise CommandError(
                "not_leader",
                f"session {sid} does not lead {name!r}"
                + ("" if token is None else f" with token {token}")
                + (f" (the leader is {lead.session} with token {el.token})"
                   if el is not None and lead is not None else " (nobody leads)"),
                409, election=name, session=sid,
                leader=self._leader_info(el) if el is not None else None,
            )
        return el

    def _elect_next(self, el: Election, index: int) -> None:
        """The head of the queue leads from `index` (its fencing token)."""
        if el.waiting:
            cand = el.waiting.pop(0)
            el.leader, el.token = cand, index
            self.stats["elected"] += 1
            self._outcome(cand, el.name, "elected", token=index)
        el.revision = index
        self._changed(el)

    def _changed(self, el: Election) -> None:
        ch = self.changes.get(el.name)
        if ch is None:
            if len(self.changes) >= CHANGES_NAMES:  # forget the longest-known name's
                old = next(iter(self.changes))
                del self.changes[old]
                self._trimmed.discard(old)
            ch = self.changes[el.name] = deque(maxlen=CHANGES_KEPT)
        elif len(ch) == CHANGES_KEPT:
            self._trimmed.add(el.name)
        ch.append(self._event(el))

    def _event(self, el: Election) -> dict[str, Any]:
        return {"type": "leader", "election": el.name, "revision": el.revision,
                "leader": self._leader_info(el)}

    def _unbind(self, sid: str, name: str) -> None:
        names = self._by_session.get(sid)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._by_session[sid]

    def _gc(self, el: Election) -> None:
        if el.leader is None and not el.waiting:
            del self.elections[el.name]

    def _outcome(self, c: Candidate, name: str, state: str, **extra: Any) -> None:
        self.outcomes[c.id] = {"state": state, "election": name, "session": c.session,
                               **extra}
        self.outcomes.move_to_end(c.id)
        while len(self.outcomes) > OUTCOME_LIMIT:
            self.outcomes.popitem(last=False)

    @staticmethod
    def _leader_info(el: Election) -> dict[str, Any] | None:
        if el.leader is None:
            return None
        return {"session": el.leader.session, "value": el.leader.value, "token": el.token,
                "candidate": el.leader.id}

    def _leading(self, el: Election) -> dict[str, Any]:
        assert el.leader is not None
        return {"elected": True, "election": el.name, "session": el.leader.session,
                "candidate": el.leader.id, "token": el.token, "value": el.leader.value,
                "revision": el.revision}

    def _candidate_state(self, el: Election, c: Candidate) -> dict[str, Any]:
        if el.leader is c:
            return self._leading(el)
        return {"elected": False, "waiting": True, "election": el.name, "session": c.session,
                "candidate": c.id, "position": el.waiting.index(c) + 1,
                "leader": self._leader_info(el)}

    # -- reads (local; linearizable after a ReadIndex barrier) ---------------------------

    def leader(self, name: str) -> dict[str, Any]:
        """Who leads `name` now: session, value and fencing token (None if nobody)."""
        el = self.elections.get(name)
        if el is None:
            return {"election": name, "leader": None, "revision": None, "candidates": 0}
        return {"election": name, "leader": self._leader_info(el), "revision": el.revision,
                "candidates": len(el.waiting)}

    def info(self, name: str) -> dict[str, Any]:
        """`leader` plus the waiting candidates in queue order."""
        out = self.leader(name)
        el = self.elections.get(name)
        out["waiting"] = [] if el is None else [
            {"session": c.session, "candidate": c.id, "value": c.value} for c in el.waiting]
        return out

    def candidacy(self, cid: int) -> dict[str, Any] | None:
        """A candidacy's state: leading, waiting (with its position), or how it ended; None
        if unknown (never existed, or its outcome was evicted)."""
        name = self._cands.get(cid)
        el = self.elections.get(name) if name is not None else None
        if el is not None:
            if el.leader is not None and el.leader.id == cid:
                return self._leading(el)
            for c in el.waiting:
                if c.id == cid:
                    return self._candidate_state(el, c)
        return self.outcomes.get(cid)

    def list_elections(self, prefix: str, after: str,
                       limit: int) -> tuple[list[dict[str, Any]], str | None]:
        names = sorted(n for n in self.elections if n.startswith(prefix) and n > after)
        page = names[:limit]
        return [self.leader(n) for n in page], (page[-1] if len(names) > limit else None)

    def changes_after(self, name: str, after: int) -> tuple[list[dict[str, Any]], bool]:
        """This node's recent changes of `name`'s leader after revision `after`, oldest
        first, and whether they are provably all of them (volatile: a restart from a
        snapshot, or a long history, leaves older ones out)."""
        ch = list(self.changes.get(name, ()))
        newer = [c for c in ch if c["revision"] > after]
        complete = len(newer) < len(ch) or (name not in self._trimmed
                                             and after >= self._since)
        return newer, complete

    def recent_changes(self, name: str) -> list[dict[str, Any]]:
        """This node's recent changes of `name`'s leader, oldest first (volatile)."""
        return list(self.changes.get(name, ()))

    def restored_at(self, index: int) -> None:
        """The registry restored a snapshot covering `index`: changes before it are not
        recorded here."""
        self._since = index

    def current_event(self, name: str) -> dict[str, Any]:
        el = self.elections.get(name)
        if el is None:
            return {"type": "leader", "election": name, "revision": None, "leader": None}
        return self._event(el)

    def candidate_count(self) -> int:
        return sum(len(el.waiting) for el in self.elections.values())

    def admit(self, op: str, args: Any, limits: dict[str, int]) -> None:
        """Quotas (quotas.py calls this before a campaign): elections count against
        `max_locks` and waiting candidates against `max_waiters`, as the lock-like things
        they are."""
        from .quotas import quota_error

        if op != "campaign" or not isinstance(args, dict):
            return
        el = self.elections.get(args.get("election"))  # type: ignore[arg-type]
        if el is None:
            if len(self.elections) >= limits["max_locks"]:
                raise quota_error("max_locks", limits["max_locks"], len(self.elections),
                                  "elections")
        elif el.leader is not None and all(c.session != args.get("session")
                                           for c in [el.leader, *el.waiting]):
            have = self.candidate_count()
            if have >= limits["max_waiters"]:
                raise quota_error("max_waiters", limits["max_waiters"], have,
                                  "waiting election candidates")

    def snapshot_size_hint(self) -> int:
        """About the bytes of this state (quotas.py weighs it against max_state_bytes)."""
        return 120 * len(self.elections) + 100 * self.candidate_count() \
            + 100 * len(self.outcomes)

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "elections": [
                [el.name, el.token, el.revision,
                 None if el.leader is None else [el.leader.id, el.leader.session,
                                                 el.leader.value],
                 [[c.id, c.session, c.value] for c in el.waiting]]
                for el in self.elections.values()
            ],
            "outcomes": [[k, v] for k, v in self.outcomes.items()],
        }

    def restore(self, data: Any) -> None:
        data = data or {}
        self.elections, self._by_session, self.changes = {}, {}, {}
        self._trimmed, self._cands = set(), {}
        for name, token, revision, lead, queue in data.get("elections", []):
            el = Election(name, token=token, revision=revision)
            if lead is not None:
                el.leader = Candidate(*lead)
                self._by_session.setdefault(el.leader.session, {})[name] = None
                self._cands[el.leader.id] = name
            for cid, sid, value in queue:
                el.waiting.append(Candidate(cid, sid, value))
                self._by_session.setdefault(sid, {})[name] = None
                self._cands[cid] = name
            self.elections[name] = el
        self.outcomes = OrderedDict((k, v) for k, v in data.get("outcomes", []))


_OPS: dict[str, Callable[[ElectionService, dict[str, Any], int], Any]] = {
    "campaign": ElectionService._campaign,
    "proclaim": ElectionService._proclaim,
    "resign": ElectionService._resign,
}
