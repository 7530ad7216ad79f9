"""The simulation's semaphore and barrier clients (sim.py runs them in some seeds), and their
checks.

Clients, over each node's real HTTP API (the simulation's `_http`: retries under one
Request-Id, a 4xx the request did not earn is a violation):

* semaphore clients: one session each (a long lease, so every change of holder is a client
  operation), try-acquires and short waits for 1 or 2 permits of a semaphore of 2 or 3,
  held briefly, released; an operation with no answer closes the session (releasing all)
  and the client goes on with a new one;
* a barrier controller raising and removing a barrier, and waiters long-polling it;
* double-barrier participants (n of them, each its own session) entering, holding, leaving,
  round after round; a participant that loses track closes its session (its leave).

Checked on every node's apply, after each semaphore, barrier or lock command (a session's
end changes semaphores and barriers too): at most N permits held, and the holders' counts
add up; a semaphore's token never goes back, and a new grant's token is above the last;
a double barrier never has more than n in a round, only participants leave, and only a
full round is left. Checked on the clients' answers, against the first apply of the
event on any node:

* semaphores: client-observed holds (from the grant's answer to the release's request)
  never overlap beyond N permits, and a grant seen before another was asked for has the
  smaller token;
* barrier: a wait released for generation g returned after g's removal was applied;
* double barrier: an enter released for round r returned after r filled (n entered), a
  leave released for round r after r was done (all left): nobody passes early.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..services.barriers import BarrierService
from ..services.semaphores import SemaphoreService

if TYPE_CHECKING:
    from ..services.registry import Registry
    from .sim import Simulation

SESSION_TTL_MS = 120_000
GONE = (200, 404, 409)


class CoordClients:
    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.enabled = rng.random() < 0.4
        self.sems = {"S0": rng.choice((2, 3)), "S1": 1}
        self.n = rng.choice((2, 3))
        self.counts: Counter[str] = Counter()
        # client-side records
        self.holds: list[tuple[float, float, str, int, int, str]] = []  # start,end,sem,count,token,who
        self.grants: list[tuple[float, float, str, int]] = []  # asked, seen, sem, token
        self.waits_released: list[tuple[float, str, int]] = []  # seen, barrier, generation
        self.enters: list[tuple[float, int]] = []  # seen, round
        self.leaves: list[tuple[float, int]] = []
        # first apply anywhere (virtual time)
        self.removed_at: dict[int, float] = {}
        self.full_at: dict[int, float] = {}
        self.done_at: dict[int, float] = {}
        self._tokens: weakref.WeakKeyDictionary[Registry, dict[str, int]] = \
            weakref.WeakKeyDictionary()
        self._observed: weakref.WeakSet[BarrierService] = weakref.WeakSet()

    # -- checks on apply ----------------------------------------------------------------

    def on_apply(self, nid: str, reg: Registry, index: int, result: Any,
                 service: str | None) -> None:
        if not self.enabled or service not in ("semaphores", "barriers", "locks"):
            return
        now = self.sim.loop.time()
        sems: SemaphoreService = reg.services["semaphores"]  # type: ignore[assignment]
        bars: BarrierService = reg.services["barriers"]  # type: ignore[assignment]
        if bars not in self._observed:
            self._observed.add(bars)
            bars.observers.append(self._barrier_event)
        seen = self._tokens.setdefault(reg, {})
        for name, s in sems.sems.items():
            if s.used > s.permits or s.used != sum(p.count for p in s.holders.values()):
                self.sim.fail(f"{nid}: semaphore {name} at {index}: {s.used} of {s.permits} "
                              f"permits held by {s.holders}")
            last = seen.get(name, 0)
            if s.token < last:
                self.sim.fail(f"{nid}: semaphore {name}'s token went back {last} -> "
                              f"{s.token} at {index}")
            for sid, p in s.holders.items():
                if p.token > s.token or (p.token == index and p.token <= last):
                    self.sim.fail(f"{nid}: semaphore {name}: {sid}'s token {p.token} "
                                  f"(latest {s.token}, before {last}) at {index}")
            seen[name] = s.token
        for name, d in bars.doubles.items():
            if len(d.entered) > d.n or not set(d.left) <= set(d.entered) or (
                    d.left and not d.full) or (d.full and len(d.entered) != d.n):
                self.sim.fail(f"{nid}: double barrier {name} at {index}: n={d.n} "
                              f"entered={list(d.entered)} left={list(d.left)} full={d.full}")
        if service == "barriers" and isinstance(result, dict) and result.get("removed"):
            self.removed_at.setdefault(result["generation"], now)

    def _barrier_event(self, kind: str, name: str, round_: int, index: int) -> None:
        now = self.sim.loop.time()
        (self.full_at if kind == "full" else self.done_at).setdefault(round_, now)

    # -- clients -------------------------------------------------------------------------

    def tasks(self, end: float) -> list[Any]:
        if not self.enabled:
            return []
        out = [self._sem_client(f"sem{i}", end) for i in range(self.rng.choice((1, 2, 3)))]
        out += [self._barrier_controller(end)]
        out += [self._barrier_waiter(f"bw{i}", end) for i in range(2)]
        out += [self._participant(f"db{i}", end) for i in range(self.n)]
        return out

    async def _session(self, who: str, n: int) -> str | None:
        ok, _, res = await self.sim._http(who, "POST", "/v1/sessions", {
            "ttl_ms": SESSION_TTL_MS, "name": who}, rid=f"{who}-{n}")
        return res["session"] if ok and isinstance(res, dict) and "session" in res else None

    async def _close(self, who: str, sid: str, n: int) -> None:
        await self.sim._http(who, "DELETE", f"/v1/sessions/{sid}", rid=f"{who}-{n}",
                             expect=(200, 404))

    def _unexpected(self, who: str, what: str, res: Any, codes: tuple[str, ...]) -> bool:
        err = res.get("error") if isinstance(res, dict) else None
        if err is not None and err not in codes:
            self.sim.fail(f"api: {who}'s {what} answered {res}")
            return True
        return False

    async def _sem_client(self, who: str, end: float) -> None:
        rng = random.Random(self.rng.random())
        sim, n, sid = self.sim, 0, None
        while sim.loop.time() < end:
            n += 1
            if sid is None:
                sid = await self._session(who, n)
                continue
            name = rng.choice(list(self.sems))
            permits = self.sems[name]
            count = rng.randint(1, permits)
            wait_ms = rng.choice((0, 0, 200))
            asked = sim.loop.time()
            n += 1
            ok, _, res = await sim._http(who, "POST", f"/v1/semaphores/{name}/acquire", {
                "session": sid, "permits": permits, "count": count, "wait_ms": wait_ms},
                rid=f"{who}-{n}", expect=GONE)
            while ok and isinstance(res, dict) and res.get("waiting"):
                if sim.loop.time() >= end:
                    # The run ends (a wait asked of a leader cut off from the others, with no
                    # check-quorum, is answered "waiting" until the network heals, which is
                    # after the run): the session goes, as for an unknown outcome.
                    ok = False
                    break
                ok, _, res = await sim._http(
                    who, "GET", f"/v1/semaphores/{name}/waits/{res['wait_id']}", expect=GONE)
            if not ok:  # unknown: close the session, which releases whatever it got
                n += 1
                await self._close(who, sid, n)
                sid = None
                continue
            if self._unexpected(who, "acquire", res, ("timeout", "deadlock", "cancelled")):
                return
            if "error" in res:
                self.counts["semaphore.refused"] += 1
                await asyncio.sleep(rng.uniform(0.01, 0.1))
                continue
            start = sim.loop.time()
            self.counts["semaphore.grants"] += 1
            if not res.get("reentrant"):
                self.grants.append((asked, start, name, res["token"]))
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            stop = sim.loop.time()
            self.holds.append((start, stop, name, count, res["token"], who))
            n += 1
            ok, _, res = await sim._http(who, "POST", f"/v1/semaphores/{name}/release",
                                         {"session": sid}, rid=f"{who}-{n}", expect=GONE)
            if not ok:
                n += 1
                await self._close(who, sid, n)
                sid = None
            elif self._unexpected(who, "release", res, ()):
                return
            await asyncio.sleep(rng.uniform(0.0, 0.05))

    async def _barrier_controller(self, end: float) -> None:
        rng = random.Random(self.rng.random())
        sim, n = self.sim, 0
        while sim.loop.time() < end:
            n += 1
            await sim._http("bctl", "PUT", "/v1/barriers/B", {}, rid=f"bctl-{n}")
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            n += 1
            await sim._http("bctl", "DELETE", "/v1/barriers/B", rid=f"bctl-{n}")
            await asyncio.sleep(rng.uniform(0.0, 0.2))
        n += 1
        await sim._http("bctl", "DELETE", "/v1/barriers/B", rid=f"bctl-{n}")

    async def _barrier_waiter(self, who: str, end: float) -> None:
        rng = random.Random(self.rng.random())
        sim = self.sim
        while sim.loop.time() < end:
            gen: int | None = None
            while sim.loop.time() < end + 2:
                q = "wait_ms=1500" + ("" if gen is None else f"&generation={gen}")
                ok, _, res = await sim._http(who, "GET", f"/v1/barriers/B/wait?{q}")
                if not ok:
                    break
                if res["released"]:
                    if res["generation"] is not None:
                        self.waits_released.append((sim.loop.time(), "B", res["generation"]))
                        self.counts["barrier.released"] += 1
                    break
                gen = res["generation"]
            await asyncio.sleep(rng.uniform(0.0, 0.2))

    async def _participant(self, who: str, end: float) -> None:
        rng = random.Random(self.rng.random())
        sim, n, sid = self.sim, 0, None
        base = "/v1/double-barriers/D"
        while sim.loop.time() < end:
            n += 1
            if sid is None:
                sid = await self._session(who, n)
                continue
            n += 1
            ok, _, res = await sim._http(who, "POST", f"{base}/enter", {
                "session": sid, "n": self.n, "wait_ms": 1500}, rid=f"{who}-{n}", expect=GONE)
            while ok and isinstance(res, dict) and "error" not in res and not res["ready"] \
                    and sim.loop.time() < end:
                ok, _, res = await sim._http(who, "GET",
                                             f"{base}/enter?session={sid}&wait_ms=1500",
                                             expect=GONE)
            if ok and self._unexpected(who, "enter", res, ()):
                return
            if not ok or not res.get("ready"):  # unknown, or the run ends: the session goes
                n += 1
                await self._close(who, sid, n)
                sid = None
                continue
            self.enters.append((sim.loop.time(), res["round"]))
            self.counts["double_barrier.enters"] += 1
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            n += 1
            ok, _, res = await sim._http(who, "POST", f"{base}/leave", {
                "session": sid, "wait_ms": 1500}, rid=f"{who}-{n}", expect=GONE)
            r = res.get("round") if ok and isinstance(res, dict) else None
            while ok and isinstance(res, dict) and "error" not in res and not res["done"] \
                    and sim.loop.time() < end + 2:
                ok, _, res = await sim._http(who, "GET", f"{base}/leave?round={r}&wait_ms=1500")
            if ok and self._unexpected(who, "leave", res, ()):
                return
            if ok and res.get("done") and not res.get("withdrawn"):
                self.leaves.append((sim.loop.time(), res["round"]))
                self.counts["double_barrier.leaves"] += 1
            else:
                n += 1
                await self._close(who, sid, n)
                sid = None

    # -- checks on the answers -----------------------------------------------------------

    def problems(self) -> list[str]:
        out: list[str] = []
        for name, permits in self.sems.items():
            events = sorted([(s, c) for s, _, nm, c, _, _ in self.holds if nm == name] +
                            [(e, -c) for _, e, nm, c, _, _ in self.holds if nm == name],
                            key=lambda x: (x[0], x[1]))
            level = 0
            for t, d in events:
                level += d
                if level > permits:
                    out.append(f"semaphore {name}: {level} permits held at once at "
                               f"{t:.6f} (N={permits})")
                    break
        for _, seen_a, nm_a, tok_a in self.grants:
            for asked_b, _, nm_b, tok_b in self.grants:
                if nm_a == nm_b and seen_a < asked_b and tok_a >= tok_b:
                    out.append(f"semaphore {nm_a}: token {tok_a} seen before a grant with "
                               f"token {tok_b} was asked for")
        for t, name, gen in self.waits_released:
            at = self.removed_at.get(gen)
            if at is None or at > t:
                out.append(f"barrier {name}: a wait on generation {gen} was released at "
                           f"{t:.6f}, its removal applied at {at}")
        for t, r in self.enters:
            at = self.full_at.get(r)
            if at is None or at > t:
                out.append(f"double barrier: an enter of round {r} released at {t:.6f}, the "
                           f"round filled at {at}")
        for t, r in self.leaves:
            at = self.done_at.get(r)
            if at is None or at > t:
                out.append(f"double barrier: a leave of round {r} released at {t:.6f}, the "
                           f"round was done at {at}")
        return out[:5]
