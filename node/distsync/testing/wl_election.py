"""Leader election inside the whole-node simulation (sim.py): clients that campaign, read
the leader, proclaim and resign through each node's real HTTP app, and checks that every
node's applied state keeps the election's rules at every index.

Clients: each opens a session (a short lease, so the nemesis's pauses and partitions expire
some), campaigns without waiting (`poll_ms` 0: the simulated client gives a request at most
2.5 s), then a few times keeps its session alive and reads the leader (linearizable); when
it leads it proclaims a new value with its token, and at the end resigns. An answer it could
not get ends the session (`DELETE`), as the lock clients do.

Checked on every node's apply (of an elections command, or a lock command, which may end a
session), exactly, from the applied state:

* a leader, and every waiting candidate, is a live session at that index;
* nobody campaigns twice in one election (the leader is not also queued);
* an election's fencing token never goes back on a node, is never past the index applied,
  and changes only with its leader (a new leadership);
* every node that applies index i elects the same session with the same token (the state
  machines agree, beyond the results that sim.py compares).

Checked on the clients' answers: every leadership a client was told of (a campaign, a leader
read, a proclaim) is one that the log elected: that session, with that token; and a leader
read that completed before another began never shows a smaller token (tokens are log
indexes, reads are linearizable).
"""

from __future__ import annotations

import asyncio
import random
import weakref
from typing import Any

from ..services.elections import ElectionService

ELECTIONS = ("E0", "E1")
SESSION_TTL_MS = 1000


class ElectionSim:
    """Election clients and checks for one simulation run (`sim` is the Simulation)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        # Its own stream, so that adding it leaves the run's other random choices alone.
        self.rng = random.Random(f"elections-{sim.seed}")
        self.clients = self.rng.choice((0, 2, 2, 3))
        self.names = ELECTIONS[:self.rng.choice((1, 2))]  # one: candidates wait in line
        self.elected: dict[tuple[str, int], str] = {}  # (election, token) -> session
        self.reads: list[tuple[float, float, str, int, str]] = []  # call, ret, name, token
        self.told: list[tuple[str, int, str, str]] = []  # (election, token, session, what)
        # Per registry (one per node incarnation): election -> (token, session) last seen.
        self._last: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, str]]] = \
            weakref.WeakKeyDictionary()
        self.stats = {"campaigns": 0, "elected": 0, "proclaims": 0, "resigns": 0}

    # -- checks on apply -------------------------------------------------------------------

    def check_apply(self, nid: str, reg: Any, index: int) -> None:
        svc: ElectionService | None = reg.services.get("elections")
        if svc is None:
            return
        locks = reg.services["locks"]
        last = self._last.setdefault(reg, {})
        fail = self.sim.fail
        for name, el in svc.elections.items():
            lead = el.leader
            if lead is None:
                fail(f"{nid}: election {name} at {index} has candidates but no leader")
                return
            members = [lead.session, *(c.session for c in el.waiting)]
            dead = [s for s in members if not locks.session_open(s)]
            if dead:
                fail(f"{nid}: election {name} at {index}: sessions {dead} lead or wait but "
                     "are not open")
                return
            if len(set(members)) != len(members):
                fail(f"{nid}: election {name} at {index}: a session campaigns twice "
                     f"{members}")
                return
            tok, who = last.get(name, (0, ""))
            if el.token < tok or el.token > index:
                fail(f"{nid}: election {name}'s token went {tok} -> {el.token} at {index}")
                return
            if el.token == tok and who != lead.session:
                fail(f"{nid}: election {name}: token {tok} held by {who}, then by "
                     f"{lead.session}")
                return
            if el.token > tok:
                prior = self.elected.setdefault((name, el.token), lead.session)
                if prior != lead.session:
                    fail(f"{nid}: election {name}: token {el.token} elected {lead.session}; "
                         f"another node elected {prior}")
                    return
            last[name] = (el.token, lead.session)

    # -- clients -----------------------------------------------------------------------------

    async def client(self, name: str, end: float) -> None:
        sim = self.sim
        rng = random.Random(self.rng.random())
        n = 0
        sid: str | None = None
        while sim.loop.time() < end:
            n += 1
            if sid is None:
                ok, _, res = await sim._http(name, "POST", "/v1/sessions", {
                    "ttl_ms": SESSION_TTL_MS, "name": name}, rid=f"{name}-{n}")
                sid = res["session"] if ok and isinstance(res, dict) and "session" in res \
                    else None
                continue
            el = rng.choice(self.names)
            ok, status, res = await sim._http(
                name, "POST", f"/v1/elections/{el}/campaign",
                {"session": sid, "value": f"{name}.{n}", "poll_ms": 0}, rid=f"{name}-{n}",
                expect=(200, 404))
            self.stats["campaigns"] += 1
            if not ok or status == 404:
                sid = await self._end(name, sid, f"{name}-{n}c", ok)
                continue
            if res.get("elected"):
                self._told(el, res["token"], sid, "campaign")
            token = res.get("token")
            for _ in range(rng.randrange(1, 4)):
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                await sim._http(name, "POST", f"/v1/sessions/{sid}/keepalive",
                                expect=(200, 404))
                call = sim.loop.time()
                ok, _, info = await sim._http(name, "GET", f"/v1/elections/{el}")
                if not ok:
                    continue
                lead = info.get("leader")
                if lead is not None:
                    self._told(el, lead["token"], lead["session"], "leader read")
                    self.reads.append((call, sim.loop.time(), el, lead["token"],
                                       lead["session"]))
                    if lead["session"] == sid:
                        token = lead["token"]
                if token is not None and lead is not None and lead["session"] == sid:
                    n += 1
                    ok, status, res = await sim._http(
                        name, "POST", f"/v1/elections/{el}/proclaim",
                        {"session": sid, "token": token, "value": f"{name}.{n}"},
                        rid=f"{name}-{n}", expect=(200, 409))
                    if ok and status == 200:
                        self.stats["proclaims"] += 1
                        self._told(el, res["token"], sid, "proclaim")
            n += 1
            body: dict[str, Any] = {"session": sid}
            ok, status, res = await sim._http(name, "POST", f"/v1/elections/{el}/resign",
                                              body, rid=f"{name}-{n}", expect=(200, 409))
            if ok and status == 200:
                self.stats["resigns"] += 1
            elif not ok:
                sid = await self._end(name, sid, f"{name}-{n}c", False)

    async def _end(self, name: str, sid: str, rid: str, known: bool) -> str | None:
        """Close the session after an answer we could not get (or a 404: it is gone)."""
        if not known:
            await self.sim._http(name, "DELETE", f"/v1/sessions/{sid}", rid=rid,
                                 expect=(200, 404))
        return None

    def _told(self, el: str, token: int, session: str, what: str) -> None:
        self.told.append((el, token, session, what))

    # -- checks after the run ------------------------------------------------------------------

    def problems(self) -> list[str]:
        out = []
        for el, token, session, what in self.told:
            who = self.elected.get((el, token))
            if who != session:
                out.append(f"election {el}: a {what} said {session} leads with token {token}; "
                           f"the log elected {who} with it")
        for a in self.reads:
            for b in self.reads:
                if a[2] == b[2] and a[1] < b[0] and a[3] > b[3]:
                    out.append(f"election {a[2]}: a leader read saw token {a[3]}, a later one "
                               f"token {b[3]}")
                    return out
        self.stats["elected"] = len(self.elected)
        return out

