"""The kv register workload: random get / put / cas / delete, checked for linearizability."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any
from urllib.parse import quote

from ..client import Client, CompareFailed, DistSyncError, NotFound
from .history import Event, History
from .linearizability import CheckResult, KVModel, Operation, check
from .workload import INDETERMINATE, KeyPool, Verdict, Workload


class KVWorkload(Workload):
    """Random get / put / cas / delete on a few keys at a time, each written value unique, all
    reads linearizable. Checked: the history is linearizable for a register per key, and
    revisions agree with values (one revision per written value and vice versa)."""

    name = "kv"

    def __init__(self, *a: Any, active_keys: int = 3, ops_per_key: int = 120,
                 max_info_per_key: int = 6, **kw: Any):
        super().__init__(*a, **kw)
        run_tag = f"{self.rng.getrandbits(32):08x}"
        self.pool = KeyPool(f"chaos/{run_tag}/kv/k", active_keys, ops_per_key, max_info_per_key)
        self.values = iter(range(1, 1 << 62))

    async def _op(self, c: Client, process: str, key: str, inp: list[Any]) -> Event:
        """Run one operation and record it; returns its completion event."""
        h = self.history
        p = h.invoke(self.name, process, inp[0], key, inp)
        path = f"/v1/kv/{quote(key)}"
        try:
            if inp[0] == "get":
                try:
                    r = await c.get(key)
                    return h.ok(p, {"value": r["value"], "revision": r["revision"]})
                except NotFound:
                    return h.ok(p, {"value": None, "revision": 0})
            if inp[0] == "put":
                r = await c.put(key, inp[1])
                return h.ok(p, {"revision": r["revision"]})
            if inp[0] == "cas":
                body: dict[str, Any] = {"value": inp[2]}
                if inp[1] is None:
                    body["expect_revision"] = 0
                else:
                    body["expect_value"] = inp[1]
                try:
                    r = await c.request_or_raise("PUT", path, body, mutating=True)
                    return h.ok(p, {"ok": True, "revision": r["revision"]})
                except CompareFailed as e:
                    return h.fail(p, {"ok": False, "revision": e.body.get("revision")}, e.code)
            if inp[0] == "delete":
                r = await c.delete(key)
                return h.ok(p, {"deleted": r["deleted"], "revision": r["revision"]})
            raise ValueError(inp)
        except INDETERMINATE as e:
            return h.info(p, f"{type(e).__name__}: {e}"[:200])
        except DistSyncError as e:
            # Any other error answer is a bug (4xx for valid input, or a 500); it is recorded as
            # indeterminate so the history stays checkable, and reported by check().
            return h.info(p, f"unexpected {e.status} {e.code}: {e.message}"[:200])

    def _choose(self, key: str) -> list[Any]:
        r = self.rng.random()
        if r < 0.40:
            return ["get"]
        if r < 0.65:
            return ["put", next(self.values)]
        if r < 0.90:
            known = self.pool.last.get(key)
            expected = known if self.rng.random() < 0.8 else self.rng.choice([None, 0])
            return ["cas", expected, next(self.values)]
        return ["delete"]

    def _learn(self, key: str, inp: list[Any], ev: Event) -> None:
        if ev.type != "ok":
            return
        if inp[0] == "get":
            self.pool.last[key] = ev.value["value"]
        elif inp[0] == "put":
            self.pool.last[key] = inp[1]
        elif inp[0] == "cas":
            self.pool.last[key] = inp[2]
        elif inp[0] == "delete":
            self.pool.last[key] = None

    async def run(self, stop: asyncio.Event) -> None:
        async def worker(w: int) -> None:
            gen = 0
            async with self.client(w) as c:
                while not stop.is_set():
                    key = self.pool.pick(self.rng)
                    inp = self._choose(key)
                    ev = await self._op(c, f"{w}.{gen}", key, inp)
                    if ev.type == "info":
                        gen += 1
                        self.pool.note_info(key)
                    self._learn(key, inp, ev)
                    await asyncio.sleep(self.rng.uniform(0, self.think_s))

        await asyncio.gather(*(worker(w) for w in range(self.workers)))

    async def final(self) -> None:
        """Read every key ever used, once, after healing."""
        sem = asyncio.Semaphore(8)
        async with Client(self.addrs, timeout=15.0, request_timeout=3.0,
                          **self.client_kw) as c:
            async def one(i: int, key: str) -> None:
                async with sem:
                    await self._op(c, f"final.{i}", key, ["get"])

            await asyncio.gather(*(one(i, k) for i, k in enumerate(self.pool.all)))

    @classmethod
    def operations(cls, history: History) -> tuple[list[Operation], list[str]]:
        """Checker input (ops with model outputs) and the problems found on the way."""
        ops, problems = [], []
        by_value: dict[Any, int] = {}
        by_rev: dict[int, Any] = {}

        def observe(key: Any, value: Any, rev: Any) -> None:
            if value is None or not rev:
                return
            if by_value.setdefault(value, rev) != rev:
                problems.append(f"{key}: value {value!r} seen with revisions "
                                f"{by_value[value]} and {rev}")
            if by_rev.setdefault(rev, value) != value:
                problems.append(f"{key}: revision {rev} seen with values "
                                f"{by_rev[rev]!r} and {value!r}")

        for inv, comp in history.pairs(cls.name):
            inp = list(inv.value)
            f = inp[0]
            if comp is None or comp.type == "info":
                if comp is not None and comp.error and comp.error.startswith("unexpected"):
                    problems.append(f"{inv.key}: {inp} -> {comp.error}")
                if f != "get":  # an unanswered read tells nothing
                    ops.append(Operation(inv.time, None, inp, None, inv.process, inv.key,
                                         inv.index))
                continue
            out_v = comp.value or {}
            if f == "get":
                out: Any = out_v.get("value")
                observe(inv.key, out, out_v.get("revision"))
            elif f == "put":
                out = None
                observe(inv.key, inp[1], out_v.get("revision"))
            elif f == "cas":
                out = comp.type == "ok"
                if out:
                    observe(inv.key, inp[2], out_v.get("revision"))
            else:
                out = bool(out_v.get("deleted"))
            ops.append(Operation(inv.time, comp.time, inp, out, inv.process, inv.key,
                                 inv.index))
        return ops, problems

    @classmethod
    def check(cls, history: History) -> Verdict:
        ops, problems = cls.operations(history)
        result: CheckResult = check(KVModel(), ops)
        counts = dict(history.counts().get(cls.name, Counter()))
        final = [(i, c) for i, c in history.pairs(cls.name) if i.process.startswith("final.")]
        unserved = [i.key for i, c in final if c is None or c.type != "ok"]
        if unserved:
            problems.append(f"{len(unserved)} final reads not served after healing: "
                            f"{unserved[:5]}")
        if counts.get("ok", 0) == 0:
            problems.append("no operation succeeded at all")
        valid = result.valid if not problems else False
        detail = result.summary()
        return Verdict(cls.name, valid, counts, problems, detail)
