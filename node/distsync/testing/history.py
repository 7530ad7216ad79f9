"""A history of client operations, in the style of Jepsen's: every operation is an `invoke`
event followed by exactly one completion: `ok` (it happened, with this result), `fail` (it
certainly did not happen, or, for a compare-and-set, it happened and refused), or `info` (the
client does not know: a timeout, a lost connection, a 503 after retries; it may or may not
take effect, even later).

Times are `time.monotonic_ns()` of the one process that runs all clients, relative to the
history's start, so every invoke/complete pair bounds when the operation could have taken
effect. Each event also carries the wall clock (`wall`, seconds) to line it up with node logs.

A process (`process`) is one logical client that runs one operation at a time. After an
`info` the process is considered hung (its request may still be in flight), so the worker
continues under a new process id (`worker.generation`), as Jepsen does.

Nemesis actions are recorded in the same history (`process` "nemesis", type "info").
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .linearizability import Operation

TYPES = ("invoke", "ok", "fail", "info")


@dataclass
class Event:
    index: int
    type: str  # invoke | ok | fail | info
    workload: str
    process: str
    f: str
    key: Any
    value: Any  # invoke: the input; completion: the output
    time: int  # monotonic ns since the history started
    wall: float
    error: str | None = None
    invoke: int | None = None  # for a completion: the index of its invoke event


@dataclass
class Pending:
    """What `History.invoke` returns; hand it to ok/fail/info."""

    event: Event
    done: bool = False


@dataclass
class History:
    events: list[Event] = field(default_factory=list)
    t0: int = field(default_factory=time.monotonic_ns)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _now(self) -> int:
        return time.monotonic_ns() - self.t0

    def _append(self, **kw: Any) -> Event:
        with self._lock:
            ev = Event(index=len(self.events), time=self._now(), wall=time.time(), **kw)
            self.events.append(ev)
            return ev

    # -- recording ------------------------------------------------------------------------

    def invoke(self, workload: str, process: str, f: str, key: Any, value: Any) -> Pending:
        return Pending(self._append(type="invoke", workload=workload, process=process, f=f,
                                    key=key, value=value))

    def _complete(self, p: Pending, type_: str, value: Any, error: str | None) -> Event:
        if p.done:
            raise RuntimeError(f"operation {p.event.index} completed twice")
        p.done = True
        e = p.event
        return self._append(type=type_, workload=e.workload, process=e.process, f=e.f,
                            key=e.key, value=value, error=error, invoke=e.index)

    def ok(self, p: Pending, value: Any = None) -> Event:
        return self._complete(p, "ok", value, None)

    def fail(self, p: Pending, value: Any = None, error: str | None = None) -> Event:
        return self._complete(p, "fail", value, error)

    def info(self, p: Pending, error: str | None = None) -> Event:
        return self._complete(p, "info", None, error)

    def nemesis(self, f: str, value: Any = None) -> Event:
        return self._append(type="info", workload="nemesis", process="nemesis", f=f,
                            key=None, value=value)

    # -- reading ----------------------------------------------------------------------------

    def pairs(self, workload: str | None = None) -> Iterator[tuple[Event, Event | None]]:
        """(invoke, completion) for every client operation; completion None if the run ended
        with the operation still open (it is then indeterminate)."""
        done: dict[int, Event] = {}
        for e in self.events:
            if e.type != "invoke" and e.invoke is not None:
                done[e.invoke] = e
        for e in self.events:
            if e.type == "invoke" and (workload is None or e.workload == workload):
                yield e, done.get(e.index)

    def operations(self, workload: str, *, skip_failed: bool = True) -> list[Operation]:
        """Client operations as checker input: `ret` is None for info (and unfinished) ones;
        `fail`ed operations are left out when `skip_failed` (they did not happen)."""
        out = []
        for inv, comp in self.pairs(workload):
            if comp is None or comp.type == "info":
                out.append(Operation(inv.time, None, inv.value, None, inv.process, inv.key,
                                     inv.index))
            elif comp.type == "ok" or not skip_failed:
                out.append(Operation(inv.time, comp.time, inv.value, comp.value, inv.process,
                                     inv.key, inv.index))
        return out

    def counts(self) -> dict[str, Counter]:
        """workload -> Counter of completion types (ok / fail / info)."""
        out: dict[str, Counter] = {}
        for inv, comp in self.pairs():
            if inv.workload == "nemesis":
                continue
            out.setdefault(inv.workload, Counter())[comp.type if comp else "info"] += 1
        return out

    def nemesis_events(self) -> list[Event]:
        return [e for e in self.events if e.workload == "nemesis"]

    def only_keys(self, keys: set[Any]) -> History:
        """A copy holding only these keys' operations (and the nemesis events), re-indexed:
        a failing history cut down to what shows the failure."""
        out = History(t0=self.t0, meta=dict(self.meta))
        renum: dict[int, int] = {}
        for e in self.events:
            if e.workload != "nemesis" and e.key not in keys:
                continue
            renum[e.index] = len(out.events)
            out.events.append(Event(**{**asdict(e), "index": len(out.events),
                                       "invoke": renum.get(e.invoke) if e.invoke is not None
                                       else None}))
        return out

    # -- files --------------------------------------------------------------------------------

    def dump(self, path: str | Path) -> Path:
        path = Path(path)
        with self._lock, path.open("w") as f:
            f.write(json.dumps({"meta": self.meta}) + "\n")
            for e in self.events:
                f.write(json.dumps(asdict(e), default=repr) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> History:
        h = cls(t0=0)
        with Path(path).open() as f:
            for line in f:
                obj = json.loads(line)
                if "meta" in obj and "type" not in obj:
                    h.meta = obj["meta"]
                    continue
                h.events.append(Event(**obj))
        return h

    def format(self, last: int | None = None) -> str:
        evs = self.events if last is None else self.events[-last:]
        return "\n".join(
            f"{e.time / 1e9:10.6f} {e.process:>8} {e.type:<6} {e.workload}:{e.f} {e.key!r} "
            f"{e.value!r}" + (f" ({e.error})" if e.error else "")
            for e in evs
        )
