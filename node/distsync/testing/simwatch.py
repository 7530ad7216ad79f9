"""Watchers in the whole-cluster simulation (sim.py): clients of `GET /v1/watch` on kv
prefixes, through each node's real HTTP app (simhttp.py streams the answer as the handler
writes it), checked against the kv changes of the applied log.

Each watcher does what `distsync.client.watch` does: it streams from one node, and after a
disconnect, a crash of that node, a read timeout (a paused node), a cancellation or a 503 it
resumes from the last revision it has settled + 1 (the last event's, or the last progress
line's) on a node picked at random. A watcher starts from the next change (plain, or with
`linearizable=true`) or from revision 1. Checked:

* **order, no duplicate**: each event's revision is above everything the watcher had
  (checked as it comes);
* **the first line** of a stream is a progress line at `start_revision - 1`; of a
  linearizable start, at or above every index some node knew committed when the request
  was sent (the start follows every write committed before it);
* **no gap**, after the run: the events of each unbroken run of streams (a *segment*) are
  exactly the applied log's kv changes under the prefix between its start and the last
  revision it settled, with the same type, key and value; a progress line at P came after
  exactly the changes up to P. A segment ends only where the API said the history no longer
  reaches back (410 `compacted` from every node tried in turn): the next starts at the
  `oldest_revision` it named;
* **liveness**: once the cluster is healed and every node has applied the last write, every
  watcher settles up to it.

The applied log's kv changes come from the simulation's apply hook (`applied`), so the
truth is the log every node applies, not the watch machinery's own history. The watchers
draw from their own random stream, so a seed's other clients and faults are as before.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgpack
import orjson

from .simhttp import SimHttp, SimStream
from .simproc import ConnectionLost

# The sim's kv keys are k0..k2 and "final". Not "" nor "e/": the ephemeral clients' keys
# (simephemeral.py) die several at one revision, which this model (one change per
# revision, settled at its event) does not follow yet.
PREFIXES = ("k", "k0", "k1", "f")
MODES = ("now", "linearizable", "from_start")
START_TIMEOUT_S = 5.0  # for a stream's status (a linearizable start may wait for a leader)
SETTLE_TIMEOUT_S = 15.0  # after healing, for every watcher to settle up to the last write


@dataclass
class Segment:
    """An unbroken run of streams: every matching change from `start` on was due."""

    start: int
    events: list[tuple[int, str, str, Any]] = field(default_factory=list)
    claims: list[tuple[int, int]] = field(default_factory=list)  # (progress, events before)


@dataclass
class SimWatcher:
    name: str
    prefix: str
    mode: str
    ip: str
    headers: dict[str, str]
    progress_ms: int
    rng: random.Random
    segments: list[Segment] = field(default_factory=list)
    next_rev: int | None = None  # where the next stream starts (None: a fresh start)

    def begin(self, start: int) -> None:
        self.segments.append(Segment(start))
        self.next_rev = start

    @property
    def settled(self) -> int:
        return (self.next_rev or 1) - 1


class SimWatchers:
    def __init__(self, seed: int, http: SimHttp, live: Callable[[], list[str]],
                 commit_now: Callable[[], int], trace: Callable[[str], None],
                 counts: Counter[str], fail: Callable[[str], None]) -> None:
        self.rng = random.Random(f"{seed}/watch")
        self.http, self.live, self.commit_now = http, live, commit_now
        self.trace, self.counts, self.fail = trace, counts, fail
        self.kv: dict[int, tuple[str, str, Any]] = {}  # revision -> (type, key, value)
        self.watchers = [self._watcher(i) for i in range(
            self.rng.choice((0, 0, 1, 2, 3)))]
        self.streams: dict[SimStream, None] = {}  # open ones (ordered: runs repeat)
        self.stopping = False

    def _watcher(self, i: int) -> SimWatcher:
        rng = random.Random(self.rng.random())
        headers = {"Client-Id": f"watcher-{i}"} if rng.random() < 0.5 else {}
        w = SimWatcher(f"watch{i}", rng.choice(PREFIXES), rng.choice(MODES), f"198.51.100.{i + 1}",
                       headers, rng.choice((100, 300, 1000)), rng)
        if w.mode == "from_start":
            w.begin(1)
        return w

    # -- the truth: the applied log ------------------------------------------------------

    def applied(self, index: int, data: bytes, result: Any) -> None:
        """A kv command applied at `index` (any node; every node applies the same): the
        change it made, if any (a retry answered from the dedupe table, a failed compare
        and a delete of an absent key make none)."""
        if not self.watchers or index in self.kv or not isinstance(result, dict) \
                or "error" in result or result.get("revision") != index:
            return
        cmd = msgpack.unpackb(data, raw=False)
        op, args = cmd["o"], cmd["a"]
        if op == "put":
            self.kv[index] = ("put", args["key"], args["value"])
        elif op == "delete" and result.get("deleted"):
            self.kv[index] = ("delete", args["key"], None)

    # -- the clients ---------------------------------------------------------------------

    def tasks(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[None]]:
        return [loop.create_task(self._run(w)) for w in self.watchers]

    async def _run(self, w: SimWatcher) -> None:
        rng = w.rng
        compacted = 0  # 410s in a row from the nodes tried
        while not self.stopping:
            nodes = self.live()
            if not nodes:
                await asyncio.sleep(0.05)
                continue
            nid = rng.choice(sorted(nodes))
            q = {"prefix": w.prefix, "progress_ms": str(w.progress_ms)}
            floor = None
            if w.next_rev is not None:
                q["start_revision"] = str(w.next_rev)
            elif w.mode == "linearizable":
                q["linearizable"] = "true"
                floor = self.commit_now()
            path = "/v1/watch?" + urlencode(q)
            try:
                st = self.http.open_stream(nid, "GET", path, headers=w.headers, remote=w.ip)
            except ConnectionLost:
                await asyncio.sleep(rng.uniform(0.01, 0.1))
                continue
            self.streams[st] = None
            try:
                await asyncio.wait_for(st.started(), START_TIMEOUT_S)
                if st.status == 200:
                    compacted = 0
                    self.counts["watch.streams"] += 1
                    self.trace(f"{w.name}: watching {nid} {path}")
                    await self._read(w, nid, st, floor)
                elif st.status == 410:
                    compacted += 1
                    self.counts["watch.compacted_410"] += 1
                    body = st.json() or {}
                    self.trace(f"{w.name}: {nid} 410 {body.get('oldest_revision')}")
                    if compacted >= 3:  # every node tried has lost that far back
                        compacted = 0
                        self.counts["watch.new_segment"] += 1
                        w.begin(int(body["oldest_revision"]))
                elif st.status == 503:
                    self.counts["watch.503"] += 1
                else:
                    self.fail(f"watch: {w.name}'s GET {path} on {nid} answered {st.status} "
                              f"{st.body[:300]!r}")
                    return
            except TimeoutError:
                self.counts["watch.timeout"] += 1
            except ConnectionLost:
                self.counts["watch.connection_lost"] += 1
            finally:
                st.close()
                self.streams.pop(st, None)
            self.counts["watch.resumed"] += 1
            await asyncio.sleep(rng.uniform(0.01, 0.1))

    async def _read(self, w: SimWatcher, nid: str, st: SimStream, floor: int | None) -> None:
        """One stream, line by line, until it ends, breaks or goes quiet for longer than
        three progress intervals (what the real client's read timeout does)."""
        quiet = max(3 * w.progress_ms / 1000, 2.0)
        first, rest = True, b""
        while not self.stopping:
            chunk = await asyncio.wait_for(st.read(), quiet)
            if not chunk:
                return
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                ev = orjson.loads(line)
                kind = ev.get("type")
                if first:
                    first = False
                    if kind != "progress":
                        self.fail(f"watch: {w.name}'s stream on {nid} began with {ev}")
                        return
                    if w.next_rev is None:
                        w.begin(ev["revision"] + 1)
                        if floor is not None:
                            self.counts["watch.linearizable_starts"] += 1
                            if ev["revision"] < floor:
                                self.fail(f"watch: {w.name}'s linearizable start on {nid} is "
                                          f"at {ev['revision']}, but {floor} was committed "
                                          "before the request")
                                return
                    elif ev["revision"] != w.next_rev - 1:
                        self.fail(f"watch: {w.name}'s stream on {nid} from {w.next_rev} began "
                                  f"with progress {ev['revision']}")
                        return
                assert w.next_rev is not None
                seg = w.segments[-1]
                if kind == "progress":
                    seg.claims.append((ev["revision"], len(seg.events)))
                    w.next_rev = max(w.next_rev, ev["revision"] + 1)
                elif kind in ("put", "delete"):
                    rev = ev["revision"]
                    if rev < w.next_rev:
                        self.fail(f"watch: {w.name} got revision {rev} on {nid} after "
                                  f"settling up to {w.next_rev - 1} (duplicate or disorder)")
                        return
                    seg.events.append((rev, kind, ev["key"], ev["value"]))
                    w.next_rev = rev + 1
                    self.counts["watch.events"] += 1
                elif kind == "canceled":
                    self.counts[f"watch.canceled.{ev['reason']}"] += 1
                    self.trace(f"{w.name}: {nid} canceled ({ev['reason']})")
                    return
                else:
                    self.fail(f"watch: {w.name} got an unknown line {ev} from {nid}")
                    return

    # -- after the run -------------------------------------------------------------------

    async def finish(self, target: int) -> None:
        """Wait until every watcher has settled up to `target` (the cluster is healed and
        every node has applied it), then stop them; a watcher that does not is a failure."""
        for _ in range(int(SETTLE_TIMEOUT_S / 0.05)):
            if all(w.settled >= target for w in self.watchers):
                break
            await asyncio.sleep(0.05)
        else:
            stuck = [(w.name, w.settled) for w in self.watchers if w.settled < target]
            self.fail(f"liveness: watchers {stuck} did not settle up to {target} within "
                      f"{SETTLE_TIMEOUT_S:.0f} s of healing")
        self.stopping = True
        for st in list(self.streams):
            st.close()

    def problems(self) -> list[str]:
        """Gaps, invented or altered events, and progress lines that claimed too much,
        against the applied log's kv changes."""
        out: list[str] = []
        revs = sorted(self.kv)
        for w in self.watchers:
            due_all = [r for r in revs if self.kv[r][1].startswith(w.prefix)]
            for seg in w.segments:
                got = seg.events
                end = max([seg.start - 1] + [e[0] for e in got] + [c for c, _ in seg.claims])
                lo, hi = bisect.bisect_left(due_all, seg.start), bisect.bisect_right(due_all, end)
                due = [(r, *self.kv[r]) for r in due_all[lo:hi]]
                if got != due:
                    out.append(self._diff(w, seg, got, due))
                    continue
                for claim, before in seg.claims:
                    if bisect.bisect_right(due_all, claim) - lo != before:
                        out.append(f"{w.name} (prefix {w.prefix!r}): progress {claim} came "
                                   f"after {before} events from {seg.start}, the log has "
                                   f"{bisect.bisect_right(due_all, claim) - lo}")
                        break
        return out

    @staticmethod
    def _diff(w: SimWatcher, seg: Segment, got: list[Any], due: list[Any]) -> str:
        i = next((k for k, (a, b) in enumerate(zip(got, due, strict=False)) if a != b),
                 min(len(got), len(due)))
        have = got[i] if i < len(got) else None
        want = due[i] if i < len(due) else None
        return (f"{w.name} (prefix {w.prefix!r}, from {seg.start}): event {i} is {have}, the "
                f"applied log has {want} ({len(got)} received, {len(due)} due)")
