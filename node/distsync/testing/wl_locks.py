"""The lock workload: sessions taking and releasing exclusive try-locks on a few locks at a
time, each grant held briefly.

Each worker opens a session (lease `SESSION_TTL_MS`, longer than a run, so no lease expires
during one and every change of holder is a client operation), then loops: try-lock a lock,
hold it for a few milliseconds, release it. An acquire or release whose outcome is unknown ends
the session (`DELETE /v1/sessions/{id}`, which releases whatever it held and drops its waits)
and the worker continues with a fresh one. After healing, every lock's holders are read once
(linearizably) and every session still open is closed.

Checked:

* linearizability per lock under `MutexModel(reentrant=True)` (acquire / release / close /
  a final read of the holder). An operation of a session whose close was acknowledged cannot
  take effect after that close, so its unknown outcome is bounded there;
* fencing tokens: unique per lock, strictly increasing in real-time order (a grant that
  completed before another was asked for has the smaller token);
* mutual exclusion by token intervals: if grant B (token Tb) completed before the holder of an
  earlier grant A (Ta < Tb) asked to release it, and that release succeeded, both held the lock
  at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import quote

from ..client import Client, DistSyncError
from .history import Event, History
from .linearizability import MutexModel, Operation, check
from .workload import INDETERMINATE, KeyPool, Verdict, Workload

SESSION_TTL_MS = 120_000
REFUSED = {"timeout", "not_held"}  # 409s that are definite answers, not errors


class LocksWorkload(Workload):
    name = "locks"

    def __init__(self, *a: Any, active_locks: int = 3, ops_per_lock: int = 100,
                 max_info_per_lock: int = 6, **kw: Any):
        super().__init__(*a, **kw)
        tag = f"{self.rng.getrandbits(32):08x}"
        self.pool = KeyPool(f"chaos-{tag}-L", active_locks, ops_per_lock, max_info_per_lock)
        self.open_sessions: dict[str, tuple[str, set[str]]] = {}  # sid -> (process, locks)

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("distsync.api.locks") is None:
            return "the lock service is not in this build"
        return None

    async def _call(self, c: Client, process: str, f: str, key: str | None, inp: list[Any],
                    method: str, path: str, body: Any) -> Event:
        h = self.history
        p = h.invoke(self.name, process, f, key, inp)
        try:
            r = await c.request_or_raise(method, path, body, mutating=method != "GET")
        except INDETERMINATE as e:
            return h.info(p, f"{type(e).__name__}: {e}"[:200])
        except DistSyncError as e:
            if e.code in REFUSED:
                return h.fail(p, {"error": e.code}, e.code)
            return h.info(p, f"unexpected {e.status} {e.code}: {e.message}"[:200])
        return h.ok(p, r)

    async def _open(self, c: Client, process: str) -> str | None:
        ev = await self._call(c, process, "open", None, ["open"], "POST", "/v1/sessions",
                              {"ttl_ms": SESSION_TTL_MS, "name": process})
        if ev.type != "ok":
            return None
        sid = ev.value["session"]
        self.open_sessions[sid] = (process, set())
        return sid

    async def _close(self, c: Client, process: str, sid: str) -> Event:
        locks = sorted(self.open_sessions.pop(sid, (process, set()))[1])
        return await self._call(c, process, "close", None, ["close", sid, locks], "DELETE",
                                f"/v1/sessions/{quote(sid)}", None)

    async def run(self, stop: asyncio.Event) -> None:
        async def worker(w: int) -> None:
            gen, sid = 0, None
            async with self.client(w) as c:
                while not stop.is_set():
                    proc = f"{w}.{gen}"
                    if sid is None:
                        sid = await self._open(c, proc)
                        if sid is None:
                            gen += 1
                            await asyncio.sleep(0.1)
                            continue
                    lock = self.pool.pick(self.rng)
                    self.open_sessions[sid][1].add(lock)
                    path = f"/v1/locks/{quote(lock)}"
                    ev = await self._call(c, proc, "acquire", lock, ["acquire", sid], "POST",
                                          f"{path}/acquire", {"session": sid, "wait_ms": 0})
                    if ev.type == "ok":
                        await asyncio.sleep(self.rng.uniform(0, 0.03))
                        ev = await self._call(c, proc, "release", lock, ["release", sid],
                                              "POST", f"{path}/release", {"session": sid})
                    if ev.type == "info":
                        self.pool.note_info(lock)
                        await self._close(c, proc, sid)
                        sid, gen = None, gen + 1
                    await asyncio.sleep(self.rng.uniform(0, self.think_s))

        await asyncio.gather(*(worker(w) for w in range(self.workers)))

    async def final(self) -> None:
        """Read every lock's holder, then close the sessions still open."""
        async with Client(self.addrs, timeout=15.0, request_timeout=3.0,
                          **self.client_kw) as c:
            for i, lock in enumerate(self.pool.all):
                await self._call(c, f"final.{i}", "holder", lock, ["holder", None], "GET",
                                 f"/v1/locks/{quote(lock)}", None)
            for sid, (proc, _) in list(self.open_sessions.items()):
                await self._close(c, proc, sid)

    # -- checking -----------------------------------------------------------------------------

    @classmethod
    def operations(cls, history: History) -> tuple[list[Operation], list[str]]:
        """MutexModel operations per lock (closes copied into every lock their session
        touched; unknown outcomes bounded by their session's acknowledged close)."""
        problems: list[str] = []
        closed_at: dict[str, int] = {}
        pairs = list(history.pairs(cls.name))
        for inv, comp in pairs:
            if inv.f == "close" and comp is not None and comp.type == "ok":
                closed_at[inv.value[1]] = comp.time
        ops: list[Operation] = []
        for inv, comp in pairs:
            f = inv.f
            if comp is not None and comp.error and comp.error.startswith("unexpected"):
                problems.append(f"{inv.key}: {inv.value} -> {comp.error}")
            known = comp is not None and comp.type in ("ok", "fail")
            if f == "open" or (f == "holder" and not known):
                continue
            if f == "close":
                sid, locks = inv.value[1], inv.value[2]
                ret = comp.time if known else None
                ops += [Operation(inv.time, ret, ["close", sid], None, inv.process, lk,
                                  inv.index) for lk in locks]
                continue
            if f == "holder":
                holders = [h["session"] for h in (comp.value or {}).get("holders", [])]
                if len(holders) > 1:
                    problems.append(f"{inv.key}: several holders of an exclusive lock: "
                                    f"{holders}")
                ops.append(Operation(inv.time, comp.time, ["holder", None],
                                     holders[0] if holders else None, inv.process, inv.key,
                                     inv.index))
                continue
            sid = inv.value[1]
            if known:
                out = comp.type == "ok" and (f == "acquire" or comp.value.get("released"))
                ops.append(Operation(inv.time, comp.time, [f, sid], bool(out), inv.process,
                                     inv.key, inv.index))
            else:
                ret = closed_at.get(sid)
                ops.append(Operation(inv.time, ret if ret and ret >= inv.time else None,
                                     [f, sid], None, inv.process, inv.key, inv.index))
        return ops, problems

    @classmethod
    def fencing_problems(cls, history: History) -> list[str]:
        grants: dict[str, list[tuple[Event, Event]]] = defaultdict(list)
        releases: dict[tuple[str, str], list[tuple[Event, Event]]] = defaultdict(list)
        for inv, comp in history.pairs(cls.name):
            if comp is None or comp.type != "ok":
                continue
            if inv.f == "acquire":
                grants[inv.key].append((inv, comp))
            elif inv.f == "release" and comp.value.get("released"):
                releases[(inv.key, inv.value[1])].append((inv, comp))
        problems = []
        for lock, gs in grants.items():
            by_token: dict[int, str] = {}
            for inv, comp in gs:
                t, sid = comp.value["token"], inv.value[1]
                if by_token.setdefault(t, sid) != sid:
                    problems.append(f"{lock}: token {t} granted to {by_token[t]} and {sid}")
            for ia, ca in gs:
                for ib, cb in gs:
                    ta, tb = ca.value["token"], cb.value["token"]
                    if ca.time < ib.time and not ta < tb:
                        problems.append(f"{lock}: token {tb} granted after token {ta} "
                                        f"(not increasing in real time)")
                    if ta < tb and ia.value[1] != ib.value[1]:
                        # A's release, if it succeeded and was asked for after B's grant
                        # completed, proves both held the lock at once.
                        later = [r for r, rc in releases[(lock, ia.value[1])]
                                 if r.time > ca.time]
                        if later and min(r.time for r in later) > cb.time:
                            problems.append(
                                f"{lock}: {ia.value[1]} (token {ta}) still held it when "
                                f"{ib.value[1]} was granted token {tb}")
        return problems

    @classmethod
    def check(cls, history: History) -> Verdict:
        ops, problems = cls.operations(history)
        problems += cls.fencing_problems(history)
        result = check(MutexModel(reentrant=True), ops)
        counts = dict(history.counts().get(cls.name, Counter()))
        finals = [c for i, c in history.pairs(cls.name) if i.process.startswith("final.")]
        if any(c is None or c.type != "ok" for c in finals):
            problems.append("final reads of the locks not served after healing")
        grants = sum(1 for i, c in history.pairs(cls.name)
                     if i.f == "acquire" and c is not None and c.type == "ok")
        if grants == 0:
            problems.append("no lock was ever granted")
        valid = result.valid if not problems else False
        return Verdict(cls.name, valid, counts, problems, result.summary())
