"""The queue workload: producers enqueue uniquely identified messages (with keys, so they
spread over partitions), consumers dequeue, and mostly ack, sometimes nack or drop a message
(its visibility timeout then redelivers it). After healing the consumers drain the queue until
every acknowledged enqueue has been delivered (or a deadline passes).

Checked (the queue's promises in README "Queue"):

* every acknowledged enqueue is delivered (at least once);
* nothing is invented: every delivered message was enqueued by the workload, with that body,
  and keeps one `seq` and one partition;
* per-partition FIFO of first deliveries: in the order the leader made them (the Raft index in
  the receipt), the first deliveries (`deliveries` == 1) of a partition have increasing
  `seq`, and `seq` follows real time (an enqueue acknowledged before another was sent has the
  smaller `seq`, when both land in one partition);
* an acknowledged ack is final: the message is never delivered by a dequeue sent after it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import quote

from ..client import Client, DistSyncError
from .history import Event, History
from .workload import INDETERMINATE, Verdict, Workload

QUEUE_OPTIONS = {"partitions": 4, "visibility_ms": 2000, "max_deliveries": 0,
                 "consumer_ttl_ms": 3000}
DEFINITE = {"unknown_receipt"}  # a refusal that changed nothing
DRAIN_S = 25.0


class QueueWorkload(Workload):
    name = "queue"

    def __init__(self, *a: Any, producers: int = 2, **kw: Any):
        super().__init__(*a, **kw)
        self.queue = f"chaos-{self.rng.getrandbits(32):08x}"
        self.producers = producers
        self.delivered: set[str] = set()
        self.enqueued_ok: set[str] = set()

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("distsync.api.queues") is None:
            return "the queue service is not in this build"
        return None

    @property
    def path(self) -> str:
        return f"/v1/queues/{quote(self.queue)}"

    async def _call(self, c: Client, process: str, f: str, key: Any, inp: list[Any],
                    path: str, body: Any, method: str = "POST") -> Event:
        h = self.history
        p = h.invoke(self.name, process, f, key, inp)
        try:
            r = await c.request_or_raise(method, path, body, mutating=True)
        except INDETERMINATE as e:
            return h.info(p, f"{type(e).__name__}: {e}"[:200])
        except DistSyncError as e:
            if e.code in DEFINITE:
                return h.fail(p, {"error": e.code}, e.code)
            return h.info(p, f"unexpected {e.status} {e.code}: {e.message}"[:200])
        return h.ok(p, r)

    async def _setup(self) -> None:
        async with Client(self.addrs, timeout=15.0, **self.client_kw) as c:
            await c.request_or_raise("PUT", self.path, QUEUE_OPTIONS, mutating=True)

    async def _consume(self, c: Client, process: str, consumer: str) -> int:
        """One dequeue and the acks/nacks of what it got; returns the number of messages."""
        ev = await self._call(c, process, "dequeue", None, ["dequeue", consumer],
                              f"{self.path}/dequeue",
                              {"consumer": consumer, "max": 4, "wait_ms": 300})
        if ev.type != "ok":
            return 0
        msgs = ev.value.get("messages", [])
        for m in msgs:
            self.delivered.add(m["id"])
            r = self.rng.random()
            if r < 0.85:
                await self._call(c, process, "ack", m["id"], ["ack", m["receipt"]],
                                 f"{self.path}/ack", {"receipt": m["receipt"]})
            elif r < 0.95:
                await self._call(c, process, "nack", m["id"], ["nack", m["receipt"]],
                                 f"{self.path}/nack", {"receipt": m["receipt"]})
            # else: dropped; redelivered when its visibility timeout passes
        return len(msgs)

    async def run(self, stop: asyncio.Event) -> None:
        await self._setup()

        async def producer(w: int) -> None:
            n = 0
            async with self.client(w) as c:
                while not stop.is_set():
                    mid = f"m{w}-{n}"
                    body = {"w": w, "n": n}
                    ev = await self._call(c, f"p{w}", "enqueue", mid, ["enqueue", mid, body],
                                          f"{self.path}/messages",
                                          {"id": mid, "key": f"k{self.rng.randrange(16)}",
                                           "body": body})
                    if ev.type == "ok":
                        self.enqueued_ok.add(mid)
                    n += 1
                    await asyncio.sleep(self.rng.uniform(0, self.think_s * 2))

        async def consumer(w: int) -> None:
            async with self.client(w) as c:
                while not stop.is_set():
                    await self._consume(c, f"c{w}", f"c{w}")
                    await asyncio.sleep(self.rng.uniform(0, self.think_s))

        await asyncio.gather(*(producer(w) for w in range(self.producers)),
                             *(consumer(w) for w in range(self.producers, self.workers)))

    async def final(self) -> None:
        """Drain: the consumers go on until every acknowledged enqueue was delivered."""
        deadline = time.monotonic() + DRAIN_S

        async def drainer(w: int) -> None:
            async with Client(self.addrs, timeout=5.0, request_timeout=3.0,
                              **self.client_kw) as c:
                while time.monotonic() < deadline and not self.enqueued_ok <= self.delivered:
                    await self._consume(c, f"final.c{w}", f"c{w}")

        await asyncio.gather(*(drainer(w) for w in range(self.producers, self.workers)))

    # -- checking -----------------------------------------------------------------------------

    @classmethod
    def check(cls, history: History) -> Verdict:
        problems: list[str] = []
        sent: dict[str, Any] = {}  # id -> body, for every enqueue invoked
        acked_enq: dict[str, tuple[Event, Event]] = {}
        deliveries: list[tuple[Event, Event, int, dict[str, Any]]] = []
        acks_ok: dict[str, int] = {}  # message id -> earliest time an ack of it succeeded
        for inv, comp in history.pairs(cls.name):
            if comp is not None and comp.error and comp.error.startswith("unexpected"):
                problems.append(f"{inv.f} {inv.key}: {comp.error}")
            if inv.f == "enqueue":
                sent[inv.value[1]] = inv.value[2]
                if comp is not None and comp.type == "ok":
                    acked_enq[inv.value[1]] = (inv, comp)
            elif inv.f == "dequeue" and comp is not None and comp.type == "ok":
                for pos, m in enumerate(comp.value.get("messages", [])):
                    deliveries.append((inv, comp, pos, m))
            elif inv.f == "ack" and comp is not None and comp.type == "ok":
                acks_ok[inv.key] = min(acks_ok.get(inv.key, comp.time), comp.time)

        seen: dict[str, dict[str, Any]] = {}
        for inv, _comp, _pos, m in deliveries:
            mid = m["id"]
            if mid not in sent:
                problems.append(f"delivered {mid}, which was never enqueued")
            elif m.get("body") != sent[mid]:
                problems.append(f"{mid} delivered with body {m.get('body')!r}, enqueued "
                                f"{sent[mid]!r}")
            first = seen.setdefault(mid, m)
            if (first["seq"], first["partition"]) != (m["seq"], m["partition"]):
                problems.append(f"{mid} changed seq/partition between deliveries")
            if mid in acks_ok and inv.time > acks_ok[mid]:
                problems.append(f"{mid} delivered again by a dequeue sent after its ack "
                                f"succeeded")
        by_seq: dict[int, str] = {}
        for mid, m in seen.items():
            if by_seq.setdefault(m["seq"], mid) != mid:
                problems.append(f"seq {m['seq']} carried by {by_seq[m['seq']]} and {mid}")

        lost = sorted(set(acked_enq) - set(seen))
        if lost:
            problems.append(f"{len(lost)} acknowledged enqueues never delivered: {lost[:10]}")

        # FIFO of first deliveries, per partition, in the leader's order of dequeues.
        firsts: dict[int, list[tuple[int, int, int, str]]] = defaultdict(list)
        for _inv, _comp, pos, m in deliveries:
            if m.get("deliveries") == 1:
                index = int(str(m["receipt"]).split(":", 1)[0])
                firsts[m["partition"]].append((index, pos, m["seq"], m["id"]))
        for part, items in firsts.items():
            items = sorted(set(items))
            for a, b in zip(items, items[1:], strict=False):
                if b[2] < a[2]:
                    problems.append(f"partition {part}: {b[3]} (seq {b[2]}) first delivered "
                                    f"after {a[3]} (seq {a[2]})")
        # seq follows real time within a partition (for delivered, acknowledged enqueues).
        per_part: dict[int, list[tuple[int, int, int, str]]] = defaultdict(list)
        for mid, (inv, comp) in acked_enq.items():
            if mid in seen:
                per_part[seen[mid]["partition"]].append((seen[mid]["seq"], inv.time, comp.time,
                                                         mid))
        for part, items in per_part.items():
            items.sort()
            suffix_min: list[tuple[float, str]] = []
            best: tuple[float, str] = (float("inf"), "")
            for _seq, _call, ret, mid in reversed(items):
                best = min(best, (ret, mid))
                suffix_min.append(best)
            suffix_min.reverse()
            for i, (seq, call, _ret, mid) in enumerate(items[:-1]):
                later_ret, later_mid = suffix_min[i + 1]
                if later_ret < call:
                    problems.append(f"partition {part}: {later_mid} was acknowledged before "
                                    f"{mid} was sent, yet has a larger seq than its {seq}")
                    break

        counts = dict(history.counts().get(cls.name, Counter()))
        if not acked_enq:
            problems.append("no enqueue was acknowledged")
        detail = (f"{len(acked_enq)} acknowledged enqueues, {len(sent)} sent, "
                  f"{len(seen)} distinct messages delivered ({len(deliveries)} deliveries)")
        return Verdict(cls.name, not problems, counts, problems, detail)
