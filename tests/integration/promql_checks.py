"""Checks of a Grafana dashboard's PromQL against what a node really exposes.

A dashboard is only text until Prometheus runs it, and a query of a series that does not
exist draws an empty panel without any error; so the queries are parsed (promql-parser, the
Rust parser's Python binding) and every series they name is looked up in a real `/metrics`
exposition, with the `# TYPE` of its family:

- each selector names its series (no `{__name__=~...}`: a renamed series must fail here
  rather than silently drop off a panel) and that series is in the exposition;
- `rate()` / `irate()` / `increase()` only over counters (a histogram's `_bucket`, `_sum` and
  `_count` are counters); `histogram_quantile()` only over a histogram's `_bucket`;
- no `avg()` of a `*_ratio` series (the mean of per-node ratios weighs an idle node like a
  busy one: divide summed rates instead);
- one unit per axis: the dimension of every query of a panel (seconds, bytes, a ratio, a
  rate per second, a count) is the one of the panel's unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import promql_parser as pq
from prometheus_client.parser import text_string_to_metric_families

RATE_FUNCS = {"rate", "irate", "increase"}
PER_SECOND_FUNCS = {"rate", "irate", "deriv"}
COUNT_FUNCS = {"increase", "changes", "resets", "count_over_time"}
# Prometheus makes these itself at scrape time; no target exposes them.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
UNIT_DIMENSION = {
    None: "count", "none": "count", "short": "count",
    "s": "seconds", "ms": "seconds", "µs": "seconds",
    "bytes": "bytes", "decbytes": "bytes",
    "percentunit": "ratio",
    "ops": "per_second", "reqps": "per_second", "rps": "per_second", "wps": "per_second",
}


def exposition_types(text: str) -> dict[str, str]:
    """Sample name -> the `# TYPE` of its family (`distsync_x_total` -> counter)."""
    out: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:  # a family declared without samples has no series yet
            out[s.name] = fam.type
    return out


def sample_kind(name: str, types: dict[str, str]) -> str | None:
    """What a sample behaves as: histogram parts are counters, apart from the bucket's `le`."""
    t = types.get(name)
    if t in ("histogram", "summary"):
        return "bucket" if name.endswith("_bucket") else "counter"
    return t


@dataclass(frozen=True)
class Selector:
    name: str | None  # None when the selector does not name its series
    text: str
    under_rate: str | None  # the rate-like function applied to it, if any
    under_avg: bool
    under_quantile: bool


def _selector_name(vs: pq.VectorSelector) -> str | None:
    if vs.name:
        return str(vs.name)
    for m in vs.matchers.matchers:
        if m.name == "__name__" and str(m.op) == "MatchOp.Equal":
            return str(m.value)
    return None


def selectors(e: object, rate: str | None = None, avg: bool = False,
              quantile: bool = False) -> Iterator[Selector]:
    """Every series selector of a parsed expression, with the functions around it."""
    if isinstance(e, pq.VectorSelector):
        yield Selector(_selector_name(e), str(e), rate, avg, quantile)
    elif isinstance(e, pq.MatrixSelector):
        yield from selectors(e.vector_selector, rate, avg, quantile)
    elif isinstance(e, pq.Call):
        fn = e.func.name
        for a in e.args:
            yield from selectors(a, fn if fn in RATE_FUNCS else rate, avg,
                                 quantile or fn == "histogram_quantile")
    elif isinstance(e, pq.AggregateExpr):
        yield from selectors(e.expr, rate, avg or str(e.op) == "avg", quantile)
    elif isinstance(e, pq.BinaryExpr):
        yield from selectors(e.lhs, rate, avg, quantile)
        yield from selectors(e.rhs, rate, avg, quantile)
    elif isinstance(e, (pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
        yield from selectors(e.expr, rate, avg, quantile)


def dimension(e: object) -> str | None:
    """What a query's values measure; None for a plain number (it takes the other side's)."""
    if isinstance(e, pq.VectorSelector):
        name = _selector_name(e) or ""
        for suffix, dim in (("_seconds", "seconds"), ("_bytes", "bytes"), ("_ratio", "ratio")):
            if name.endswith(suffix):
                return dim
        return "count"
    if isinstance(e, pq.MatrixSelector):
        return dimension(e.vector_selector)
    if isinstance(e, pq.Call):
        fn = e.func.name
        if fn == "histogram_quantile":
            return "seconds" if "_seconds_bucket" in str(e) else "count"
        if fn in PER_SECOND_FUNCS:
            return "per_second"
        if fn in COUNT_FUNCS:
            return "count"
        dims = {d for a in e.args if (d := dimension(a)) is not None}
        return dims.pop() if len(dims) == 1 else ("mixed" if dims else None)
    if isinstance(e, pq.AggregateExpr):
        return "count" if str(e.op) in ("count", "count_values") else dimension(e.expr)
    if isinstance(e, (pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
        return dimension(e.expr)
    if isinstance(e, pq.BinaryExpr):
        left, right = dimension(e.lhs), dimension(e.rhs)
        op = str(e.op)
        if op in ("==", "!=", ">", "<", ">=", "<=", "and", "unless"):
            return left
        if op == "/" and left is not None and left == right:
            return "ratio"
        if op in ("+", "-", "or"):
            if left is None or right is None or left == right:
                return left or right
            return "mixed"
        return left if right is None else (right if left is None else "mixed")
    return None


_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.S)


def dashboard_queries(dash: dict) -> Iterator[tuple[str, str, dict | None]]:
    """(where, PromQL, panel) for every target and every templating query of a dashboard."""
    def panels(ps: list[dict]) -> Iterator[dict]:
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"], p
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = _LABEL_VALUES.match(q or "")
        yield f"variable {var['name']!r}", (m.group(1) if m else q), None


def check_dashboard(dash: dict, expositions: list[str]) -> list[str]:
    """Every fault found, as a line naming the panel (empty when the dashboard is sound).
    `expositions` are the nodes' `/metrics`: a series exists if any node exposes it (the
    lock latency is observed on the leader only, a near-cache's on the node that served)."""
    types: dict[str, str] = {}
    for text in expositions:
        types.update(exposition_types(text))
    faults: list[str] = []
    for where, expr, panel in dashboard_queries(dash):
        try:
            ast = pq.parse(expr)
        except Exception as e:  # noqa: BLE001 - the parser's error is the fault to report
            faults.append(f"{where}: does not parse ({e}): {expr}")
            continue
        for s in selectors(ast):
            if s.name is None:
                faults.append(f"{where}: selector {s.text} does not name its series")
                continue
            if s.name in SYNTHETIC:
                continue
            kind = sample_kind(s.name, types)
            if kind is None:
                faults.append(f"{where}: {s.name} is not in the node's /metrics")
                continue
            if s.under_rate and kind not in ("counter", "bucket"):
                faults.append(f"{where}: {s.under_rate}() over {s.name}, a {kind}")
            if s.under_quantile and kind != "bucket":
                faults.append(f"{where}: histogram_quantile() over {s.name}, not a _bucket")
            if s.under_avg and s.name.endswith("_ratio"):
                faults.append(f"{where}: avg() of the ratio {s.name}")
        if panel is not None:
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            want = UNIT_DIMENSION.get(unit, f"unknown unit {unit!r}")
            got = dimension(ast) or "count"
            if got != want:
                faults.append(f"{where}: measures {got}, on an axis of unit {unit!r}: {expr}")
    return faults


def undrawn_latency_histograms(dash: dict, expositions: list[str]) -> list[str]:
    """The `*_seconds` histograms the nodes expose that no `histogram_quantile()` draws: a
    latency measured and never looked at."""
    exposed = {name[: -len("_bucket")] for text in expositions
               for name, t in exposition_types(text).items()
               if t == "histogram" and name.endswith("_seconds_bucket")}
    drawn = {s.name[: -len("_bucket")] for _, expr, _ in dashboard_queries(dash)
             for s in selectors(pq.parse(expr)) if s.under_quantile and s.name}
    return sorted(exposed - drawn)
