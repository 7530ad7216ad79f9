"""A linearizability checker: Wing & Gong's search with Lowe's memoization, the algorithm
Porcupine (anishathalye/porcupine) uses, plus P-compositionality (check each key alone).

Input is a list of `Operation`s: each has a call time, a return time (None when the client
never learnt the outcome: a timeout or a lost connection), an input and an output. An
operation with an unknown outcome may or may not have taken effect, at any moment after its
call, so it is checked as if its return were at the end of time; linearizing it last of all
is the same as it never having happened, which is therefore always allowed. Its output is
`None` and the model accepts any output for it.

No maintained PyPI package does this (checked: nothing in the registry's listing under
linearizab*, porcupine*, knossos*, jepsen*: `porcupine-python` and `knossos` are unrelated
projects), so this is a direct, small implementation. The search is exponential in the worst
case; histories are kept small per key by the workloads (each key gets a bounded number of
operations) and the search has a step budget: past it the verdict is `None` (unknown), never
a guess.

Models are deterministic: `step(state, input, output) -> (ok, new_state)`; states must be
hashable (they are memoized with the set of linearized operations).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

INF = float("inf")


@dataclass(frozen=True)
class Operation:
    """One client operation. `ret` None means indeterminate (the client gave up): it may have
    taken effect at any point after `call`, or never. `output` None then means "unknown"."""

    call: int | float
    ret: int | float | None
    input: Any
    output: Any
    process: Any = None
    key: Any = None
    id: int = 0

    @property
    def pending(self) -> bool:
        return self.ret is None

    def describe(self) -> str:
        span = f"[{_fmt_t(self.call)}, {_fmt_t(self.ret) if self.ret is not None else 'inf'}]"
        out = "?" if self.ret is None else repr(self.output)
        return f"op#{self.id} p={self.process} {self.input!r} -> {out} {span}"


def _fmt_t(t: int | float) -> str:
    return f"{t / 1e9:.6f}s" if isinstance(t, int) and t > 10_000_000 else str(t)


class Model:
    """A sequential specification. Subclasses define `init`, `step` and, optionally,
    `partition` (split a history into independent sub-histories, e.g. per key)."""

    name = "model"

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Any, inp: Any, out: Any) -> tuple[bool, Any]:
        """Apply `inp` to `state`; ok is False if `out` is impossible there. `out` is None
        for an operation whose outcome is unknown: any outcome is then acceptable."""
        raise NotImplementedError

    def partition(self, ops: list[Operation]) -> dict[Any, list[Operation]]:
        return {None: ops}

    def describe_state(self, state: Any) -> str:
        return repr(state)


class RegisterModel(Model):
    """A kv register (one key; partition by key for many). Inputs are tuples:

    * ("get",) -> output: the value, or None when absent
    * ("put", v) -> output: anything (ignored)
    * ("cas", expected, new) -> output: True (swapped) or False (compare failed); `expected`
      None means "only if absent"
    * ("delete",) -> output: True if a value was there, False if not

    An unknown output (None, from an indeterminate op) is never checked. A "get" with an unknown
    outcome says nothing and should be left out of the history (as the workloads do).
    """

    name = "register"

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, inp: Any, out: Any) -> tuple[bool, Any]:
        f = inp[0]
        if f == "get":
            return out == state, state
        if f == "put":
            return True, inp[1]
        if f == "cas":
            swapped = state == inp[1]
            if out is not None and bool(out) != swapped:
                return False, state
            return True, inp[2] if swapped else state
        if f == "delete":
            if out is not None and bool(out) != (state is not None):
                return False, state
            return True, None
        raise ValueError(f"unknown register op {inp!r}")


class KVModel(RegisterModel):
    """Many independent registers: each operation's `key` selects one."""

    name = "kv"

    def partition(self, ops: list[Operation]) -> dict[Any, list[Operation]]:
        parts: dict[Any, list[Operation]] = defaultdict(list)
        for op in ops:
            parts[op.key].append(op)
        return dict(parts)


class MutexModel(Model):
    """A lock (one lock; partition by lock name for many). Inputs:

    * ("acquire", owner) -> output True (granted) or False (refused: held by someone else)
    * ("release", owner) -> output True (released) or False (refused: `owner` did not hold it)
    * ("close", owner) -> output ignored: the owner's session ends, releasing what it held
    * ("holder", None) -> output: the holder, or None (a read; leave unanswered ones out)

    With `reentrant`, an acquire by the current holder is granted again (distsync's rule: the
    same grant comes back); without, it is refused. A try-lock that timed out is an operation
    with an unknown outcome (it may have been granted). State: the holder, or None.
    """

    name = "mutex"

    def __init__(self, reentrant: bool = False):
        self.reentrant = reentrant

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, inp: Any, out: Any) -> tuple[bool, Any]:
        f, owner = inp[0], inp[1]
        if f == "acquire":
            can = state is None or (self.reentrant and state == owner)
            if out is not None and bool(out) != can:
                return False, state
            return True, owner if can else state
        if f == "release":
            can = state == owner
            if out is not None and bool(out) != can:
                return False, state
            return True, None if can else state
        if f == "close":
            return True, None if state == owner else state
        if f == "holder":
            return out == state, state
        raise ValueError(f"unknown mutex op {inp!r}")

    def partition(self, ops: list[Operation]) -> dict[Any, list[Operation]]:
        parts: dict[Any, list[Operation]] = defaultdict(list)
        for op in ops:
            parts[op.key].append(op)
        return dict(parts)


@dataclass
class PartitionResult:
    key: Any
    valid: bool | None  # None: the step budget ran out before a verdict
    ops: int
    steps: int
    linearization: list[int] | None = None  # op ids in a valid order
    explanation: str = ""


@dataclass
class CheckResult:
    valid: bool | None  # False if any partition is not linearizable, None if any is unknown
    partitions: list[PartitionResult] = field(default_factory=list)

    @property
    def failures(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.valid is False]

    @property
    def unknown(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.valid is None]

    def summary(self) -> str:
        verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown"}[self.valid]
        n_ops = sum(p.ops for p in self.partitions)
        lines = [f"{verdict}: {len(self.partitions)} partitions, {n_ops} operations"]
        for p in self.failures + self.unknown:
            lines.append(f"--- key {p.key!r}: {'unknown' if p.valid is None else 'violation'} "
                         f"({p.ops} ops, {p.steps} search steps)")
            lines.append(p.explanation)
        return "\n".join(lines)


class _Entry:
    """A node of the doubly linked list of call and return events (Porcupine's layout)."""

    __slots__ = ("op", "is_call", "match", "prev", "next", "idx")

    def __init__(self, op: Operation | None, is_call: bool, idx: int):
        self.op, self.is_call, self.idx = op, is_call, idx
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build_list(ops: list[Operation]) -> _Entry:
    events: list[tuple[float, int, int, _Entry]] = []
    for i, op in enumerate(ops):
        call = _Entry(op, True, i)
        ret = _Entry(op, False, i)
        call.match = ret
        # At equal times a call sorts before a return: such operations count as concurrent.
        events.append((op.call, 0, i, call))
        events.append((INF if op.ret is None else op.ret, 1, i, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(None, False, -1)
    prev = head
    for *_, e in events:
        prev.next, e.prev = e, prev
        prev = e
    return head


def _lift(e: _Entry) -> None:
    e.prev.next = e.next  # type: ignore[union-attr]
    if e.next is not None:
        e.next.prev = e.prev
    m = e.match
    assert m is not None
    m.prev.next = m.next  # type: ignore[union-attr]
    if m.next is not None:
        m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    assert m is not None
    m.prev.next = m  # type: ignore[union-attr]
    if m.next is not None:
        m.next.prev = m
    e.prev.next = e  # type: ignore[union-attr]
    if e.next is not None:
        e.next.prev = e


def check_operations(
    model: Model, ops: list[Operation], max_steps: int = 2_000_000, key: Any = None,
) -> PartitionResult:
    """Is this (single-partition) history linearizable under `model`?"""
    ops = [op for op in ops if op.ret is None or op.ret >= op.call]
    n = len(ops)
    if n == 0:
        return PartitionResult(key, True, 0, 0, [])
    head = _build_list(ops)
    state: Any = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    calls: list[tuple[_Entry, Any]] = []
    steps = 0
    best: tuple[int, int, Any, _Entry | None] = (-1, 0, state, None)  # depth, set, state, stuck
    entry = head.next
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            return PartitionResult(
                key, None, n, steps,
                explanation=f"search gave up after {max_steps} steps (history too concurrent)",
            )
        assert entry is not None
        if entry.is_call:
            ok, new_state = model.step(state, entry.op.input, entry.op.output)  # type: ignore[union-attr]
            if ok:
                new_lin = linearized | (1 << entry.idx)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    calls.append((entry, state))
                    state, linearized = new_state, new_lin
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not linearized yet: backtrack.
            if len(calls) > best[0]:
                best = (len(calls), linearized, state, entry)
            if not calls:
                return PartitionResult(
                    key, False, n, steps, explanation=_explain(model, ops, best),
                )
            top, state = calls.pop()
            linearized &= ~(1 << top.idx)
            _unlift(top)
            entry = top.next
    order = [e.idx for e, _ in calls]
    return PartitionResult(key, True, n, steps, [ops[i].id for i in order])


def _explain(model: Model, ops: list[Operation], best: tuple[int, int, Any, _Entry | None]) -> str:
    depth, lin_set, state, stuck = best
    done = [ops[i] for i in range(len(ops)) if lin_set >> i & 1]
    lines = [f"longest linearizable prefix: {depth} of {len(ops)} operations, ending in state "
             f"{model.describe_state(state)}"]
    if done:
        last = sorted(done, key=lambda o: o.call)[-3:]
        lines.append("  last operations in that prefix (by call time):")
        lines += [f"    {o.describe()}" for o in last]
    if stuck is not None and stuck.op is not None:
        op = stuck.op
        lines.append(f"  could not linearize: {op.describe()}")
        others = [o for o in ops if not (lin_set >> ops.index(o) & 1) and o is not op
                  and o.call <= (op.ret if op.ret is not None else INF)]
        if others:
            lines.append("  other operations still open then:")
            lines += [f"    {o.describe()}" for o in sorted(others, key=lambda o: o.call)[:10]]
    return "\n".join(lines)


def check(model: Model, ops: Iterable[Operation], max_steps: int = 2_000_000) -> CheckResult:
    """Check a whole history: split it with `model.partition`, check each part."""
    ops = list(ops)
    results = [
        check_operations(model, part, max_steps=max_steps, key=k)
        for k, part in sorted(model.partition(ops).items(), key=lambda kv: str(kv[0]))
    ]
    if any(r.valid is False for r in results):
        valid: bool | None = False
    elif any(r.valid is None for r in results):
        valid = None
    else:
        valid = True
    return CheckResult(valid, results)


MODELS: dict[str, Callable[[], Model]] = {
    "register": RegisterModel, "kv": KVModel, "mutex": MutexModel,
}
