"""Ephemeral keys inside the whole-cluster simulation (sim.py; README "Ephemeral keys").

Clients open lock sessions (TTL 1 s), put keys of a small shared pool bound to them (and
sometimes the same keys without a session, which unbinds them, or bound to a session they
saw closed, which must be refused with 404 `session_not_found`), keep them alive a while,
list the pool's prefix, then end the session: they close it, or they "crash" (stop sending
keepalives and walk away), so that the leader expires it. All through each node's real HTTP
app, retried with one Request-Id, under every fault the simulator injects.

Checked on every node, at every apply:

* **The bindings are the log's.** A model, built from the applied commands' arguments and
  results (the first time any node applies each index: every node applies the same command
  with the same result there, which sim.py checks), says which session each pool key is
  bound to after every index; the node's kv must hold exactly that after each apply, and
  no key bound to a session that has ended (at an index at or before this one).
* **A session's end deletes exactly its keys, then and there.** In the apply of a close or
  expiry that ended a session, the kv's delete events at that index are exactly the keys
  the model had bound to that session just before, in key order.
* **Listings are the state at their revision**: a `GET /v1/kv?prefix=` page holds exactly
  the model's pool keys at the page's `revision` (value, revision and session), and a
  linearizable one's revision is at least that of every write acknowledged before it was
  asked for.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from ..services.kv import KVStore

PREFIX = "e/"
KEYS = [f"{PREFIX}{i}" for i in range(5)]
TTL_MS = 1000

# sim.Simulation._http: (client, method, path, body, rid=, expect=) -> (known, status, body)
Http = Callable[..., Awaitable[tuple[bool, int, Any]]]


class EphemeralModel:
    """What the applied log says about the pool's keys: for each key, the indexes at which
    it changed and what it was then (absent, or its value, revision and session)."""

    def __init__(self) -> None:
        self.last_index = 0  # the highest index recorded (applies come in index order)
        self.changes: dict[str, tuple[list[int], list[tuple[Any, int, str | None] | None]]] \
            = {k: ([0], [None]) for k in KEYS}
        self.ended: dict[str, int] = {}  # session -> the index of its end
        self.bound: dict[str, set[str]] = {}  # session -> keys ever bound to it

    def at(self, key: str, index: int) -> tuple[Any, int, str | None] | None:
        idx, states = self.changes[key]
        return states[bisect.bisect_right(idx, index) - 1]

    def _set(self, key: str, index: int, state: tuple[Any, int, str | None] | None) -> None:
        idx, states = self.changes[key]
        idx.append(index)
        states.append(state)

    def record(self, index: int, service: str, op: str, args: dict[str, Any],
               result: Any) -> None:
        self.last_index = index
        if not isinstance(result, dict) or "error" in result:
            return
        if service == "kv" and args.get("key") in self.changes:
            key = args["key"]
            if result.get("revision") != index:
                return  # a retry answered from the request-id table: applied earlier
            if op == "put":
                sid = args.get("session")
                self._set(key, index, (args.get("value"), index, sid))
                if sid is not None:
                    self.bound.setdefault(sid, set()).add(key)
            elif op == "delete" and result.get("deleted"):
                self._set(key, index, None)
        elif service == "locks" and op in ("close", "expire") and result.get("index") == index \
                and (result.get("closed") or result.get("expired")):
            sid = result["session"]
            self.ended[sid] = index
            for key in self.keys_of(sid, index - 1):
                self._set(key, index, None)

    def keys_of(self, sid: str, index: int) -> list[str]:
        """The pool keys bound to `sid` just after `index`, in key order."""
        out = []
        for key in sorted(self.bound.get(sid, ())):
            st = self.at(key, index)
            if st is not None and st[2] == sid:
                out.append(key)
        return out


class EphemeralClients:
    def __init__(self, rng: random.Random, http: Http, now: Callable[[], float],
                 trace: Callable[[str], None], counts: Any) -> None:
        self.rng = rng
        self.http = http
        self.now = now
        self.trace = trace
        self.counts = counts  # the simulation's fault and feature counters
        self.model = EphemeralModel()
        self.acked_rev = 0  # the highest revision of an acknowledged pool write
        self.problems: list[str] = []

    # -- the checks, at every apply of every node ----------------------------------------

    def on_apply(self, nid: str, reg: Any, index: int, data: bytes, result: Any,
                 service: str | None) -> str | None:
        """None, or what is wrong on node `nid` after it applied `index`."""
        op, args = "", {}
        if service in ("kv", "locks"):
            try:
                cmd = msgpack.unpackb(data, raw=False)
                op, args = cmd["o"], cmd["a"]
            except Exception:  # noqa: BLE001 - the registry reports a bad command itself
                pass
        m = self.model
        if index > m.last_index:
            m.record(index, service or "", op, args if isinstance(args, dict) else {}, result)
        kv: KVStore = reg.services["kv"]
        for key in KEYS:
            want = m.at(key, index)
            got = kv.data.get(key)
            have = None if got is None else (got[0], got[1], kv.owner.get(key))
            if have != want:
                return (f"ephemeral: {nid} holds {key} = {have} after {index}; the log says "
                        f"{want}")
        for key, sid in kv.owner.items():
            end = m.ended.get(sid)
            if end is not None and end <= index:
                return (f"ephemeral: {nid} holds {key} bound to {sid} after {index}, though "
                        f"{sid} ended at {end}")
        if service == "locks" and m.ended.get(args.get("session", "")) == index:
            sid = args["session"]
            want_keys = m.keys_of(sid, index - 1)
            got_keys = [e.key for e in kv.history.events_from(index)
                        if e.revision == index and e.type == "delete"]
            if got_keys != want_keys:
                return (f"ephemeral: the end of {sid} at {index} deleted {got_keys} on {nid}; "
                        f"bound to it were {want_keys}")
            if got_keys:
                self.counts[f"workload.ephemeral_{op}_deletes"] += len(got_keys)
        return None

    def check_listing(self, page: Any, linearizable: bool, acked_before: int) -> str | None:
        if not isinstance(page, dict) or not isinstance(page.get("keys"), list):
            return f"ephemeral: a listing answered {page!r}"
        rev = page["revision"]
        if linearizable and rev < acked_before:
            return (f"ephemeral: a linearizable listing at revision {rev} misses a write "
                    f"acknowledged at {acked_before} before it was asked for")
        got = {i["key"]: (i["value"], i["revision"], i.get("session")) for i in page["keys"]}
        want = {k: st for k in KEYS if (st := self.model.at(k, rev)) is not None}
        if got != want:
            return f"ephemeral: the listing at revision {rev} is {got}; the log says {want}"
        return None

    # -- the clients ---------------------------------------------------------------------

    async def client(self, name: str, end: float) -> None:
        rng = random.Random(self.rng.random())
        n = 0
        closed: list[str] = []  # sessions this client closed, acknowledged

        def rid() -> str:
            nonlocal n
            n += 1
            return f"{name}-{n}"

        while self.now() < end:
            ok, _, res = await self.http(name, "POST", "/v1/sessions",
                                         {"ttl_ms": TTL_MS, "name": name}, rid=rid())
            if not ok or not isinstance(res, dict) or "session" not in res:
                await asyncio.sleep(0.1)
                continue
            sid = res["session"]
            alive = True
            for _ in range(rng.randrange(2, 8)):
                if self.now() >= end:
                    break
                r = rng.random()
                key = rng.choice(KEYS)
                if r < 0.45:
                    alive = await self._put(name, key, sid, rid())
                elif r < 0.55:
                    await self._put(name, key, None, rid())
                elif r < 0.62 and closed:
                    await self._put(name, key, rng.choice(closed), rid(), gone=True)
                elif r < 0.72:
                    await self._list(name, rng.random() < 0.7)
                else:
                    ok, status, _ = await self.http(
                        name, "POST", f"/v1/sessions/{sid}/keepalive", expect=(200, 404))
                    alive = not (ok and status == 404)
                if not alive:
                    break
                await asyncio.sleep(rng.uniform(0.02, 0.4))
            if alive and rng.random() < 0.6:
                ok, status, res = await self.http(name, "DELETE", f"/v1/sessions/{sid}",
                                                  rid=rid(), expect=(200, 404))
                if ok and status == 200:
                    closed.append(sid)
                self.trace(f"{name}: closed {sid} ({status})")
            else:
                # A crash: no close, no more keepalives; the leader expires the session.
                self.trace(f"{name}: walks away from {sid}")
                await asyncio.sleep(rng.uniform(0.0, 0.5))

    async def _put(self, name: str, key: str, sid: str | None, rid: str,
                   gone: bool = False) -> bool:
        """A put (bound to `sid`, if any); False if the session turned out to be gone.
        `gone`: `sid` was closed, so the put must be refused."""
        body: dict[str, Any] = {"value": f"{name}/{rid}"}
        if sid is not None:
            body["session"] = sid
        expect = (404,) if gone else (200, 404) if sid is not None else (200,)
        ok, status, res = await self.http(name, "PUT", f"/v1/kv/{key}", body, rid=rid,
                                          expect=expect)
        if not ok:
            return True
        if status == 404:
            if not isinstance(res, dict) or res.get("error") != "session_not_found":
                self.problems.append(f"ephemeral: {name}'s put of {key} answered 404 {res}")
            self.counts["workload.ephemeral_refused_puts"] += 1
            return False
        self.acked_rev = max(self.acked_rev, int(res["revision"]))
        self.counts["workload.ephemeral_puts" if sid else "workload.ephemeral_unbinding_puts"] \
            += 1
        return True

    async def _list(self, name: str, linearizable: bool) -> None:
        acked_before = self.acked_rev
        q = "" if linearizable else "&consistency=stale"
        ok, _, page = await self.http(name, "GET", f"/v1/kv?prefix={PREFIX}{q}")
        if ok:
            self.counts["workload.ephemeral_listings"] += 1
            problem = self.check_listing(page, linearizable, acked_before)
            if problem is not None:
                self.problems.append(problem)
