"""The report of a side-by-side run: the tables that are not one-per-workload (failover,
resources, scaling), `run.md`, and writing `run.json`, `run.md` and the plots. Everything is
built from the report dict the sections fill in, so the files and the console agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import _clean, describe, machine_summary, render, write_json

FAILOVER_NOTE = (
    "Writes retried through the live nodes every 5 ms from the kill on. Election settings: "
    "distsync 50 ms ticks, election after 10-20 ticks without a leader; etcd 100 ms "
    "heartbeat, 1000 ms election; PySyncObj as its adapter starts it. The killed node is "
    "restarted and the cluster settled before the next round.")


def failover_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = [["system", "median ms", "min ms", "max ms", "runs", "error"]]
    for n, f in out.items():
        s = f.get("samples_s") or []
        cell = [f"{f['median_s'] * 1e3:,.0f}" if "median_s" in f else "-",
                f"{min(s) * 1e3:,.0f}" if s else "-", f"{max(s) * 1e3:,.0f}" if s else "-"]
        rows.append([n, *cell, str(len(s)), (f.get("error") or "")[:80]])
    return rows


def resources_rows(b: Any) -> list[list[str]]:
    """RSS per node idle (just after start) and under the PUT load at the highest
    concurrency; start-to-ready time (first spawn to first acknowledged write)."""
    top = max(b.args.concurrency)
    put = {r.system: r for r in b.report["workloads"].get("put", {}).get("results", [])
           if r.concurrency == top and r.error is None}
    rows = [["system", "nodes", "start-to-ready s", "RSS idle MiB/node",
             f"RSS under PUT c={top} MiB/node", f"server CPU % under PUT c={top}"]]
    for n, s in b.report["systems"].items():
        if "error" in s:
            rows.append([n, "-", f"ERROR: {s['error'][:70]}", "-", "-", "-"])
            continue
        load = put.get(s["name"])

        def span(d: dict[str, Any] | None) -> str:
            v = [x for x in (d or {}).values() if x is not None]
            lo, hi = (f"{min(v):.0f}", f"{max(v):.0f}") if v else ("-", "-")
            return lo if lo == hi else f"{lo}-{hi}"

        rows.append([s["name"], str(s["nodes"]), f"{s['start_to_ready_s']:.2f}",
                     span(s["rss_idle_mb"]), span(load.rss_mb if load else None),
                     f"{load.cpu.get('servers_total', 0):.0f}" if load and load.cpu else "-"])
    return rows


def scaling_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["nodes", "workload", "c", "ops/s", "p50 ms", "p99 ms", "errors"]]
    for r in sorted(results, key=lambda r: (r["nodes"], r["workload"], r["concurrency"])):
        if r.get("error"):
            rows.append([str(r["nodes"]), r["workload"], str(r["concurrency"]),
                         f"ERROR: {r['error'][:70]}", "-", "-", "-"])
            continue

        def f(v: float | None, nd: int = 1) -> str:
            return "-" if v is None else f"{v:,.{nd}f}"

        rows.append([str(r["nodes"]), r["workload"], str(r["concurrency"]), f(r["per_s"]),
                     f(r["p50_ms"], 2), f(r["p99_ms"], 2), str(r["errors"])])
    return rows


def render_md(b: Any) -> str:
    rep = b.report
    lines = [f"# Side-by-side benchmark ({rep['started_at']}, git {rep['git']})", "",
             "```", machine_summary(rep["machine"]), "```", "",
             f"Phases: {b.args.duration:g} s measured after {b.args.warmup:g} s warm-up; "
             f"concurrency {', '.join(map(str, b.args.concurrency))}; one aiohttp client "
             "process on the same machine as the servers. Seconds per section: "
             + ", ".join(f"{k} {v:g}" for k, v in rep.get("section_seconds", {}).items())
             + ".", "", "## Systems", "",
             "| system | nodes | durability of an acknowledged write |", "|---|---:|---|"]
    for n, s in rep["systems"].items():
        lines.append(f"| {s.get('name', n)} | {s.get('nodes', '-')} | "
                     f"{s.get('durability') or 'ERROR: ' + s.get('error', '')} |")
    for n, why in b.down.items():
        if n not in rep["systems"]:
            lines.append(f"| {n} | - | NOT RUN: {why} |")
    for sec in rep["workloads"].values():
        lines += ["", f"## {sec['title']}", ""]
        if sec["note"]:
            lines += [sec["note"], ""]
        lines.append(render(sec["table"], markdown=True))
        if sec.get("rounds_table"):
            lines += ["", f"{len(sec['rounds'])} rounds of the phases above, interleaved in "
                      "one run (the table above is round 1); each round's ratio and their "
                      "median:", "", render(sec["rounds_table"], markdown=True)]
        notes = [f"- {r.system} c={r.concurrency}: {n}" for r in sec["results"] for n in r.notes]
        errors = {r.system: r.error for r in sec["results"] if r.error}  # once per system
        notes += [f"- {name}: {err}" for name, err in errors.items()]
        lines += ["", *notes] if notes else []
    if "cache_in_node" in rep:
        c = rep["cache_in_node"]
        lines += ["", "## Cache hit inside the node", "",
                  f"Mean hit latency in a node process (its /v1/cache/stats, over the hit "
                  f"phases): {c.get('node_mean_hit_us')} us; in cache_bench's in-process "
                  f"cluster: {c.get('inproc_mean_hit_us')} us."]
    if "failover" in rep:
        lines += ["", "## Failover: SIGKILL of the leader -> first acknowledged write", "",
                  FAILOVER_NOTE, "", render(failover_rows(rep["failover"]), markdown=True)]
    if "resources" in rep:
        lines += ["", "## Resources", "", render(rep["resources"], markdown=True)]
    if "scaling" in rep:
        lines += ["", "## Scaling: distsync at 3, 5 and 7 nodes", "",
                  render(scaling_rows(rep["scaling"]["results"]), markdown=True)]
    if rep.get("plots"):
        lines += ["", "## Plots", "", *(f"![{p}]({p})" for p in rep["plots"])]
    if rep["errors"]:
        lines += ["", "## Errors", "", *(f"- {e}" for e in rep["errors"])]
    return "\n".join(lines) + "\n"


def write_results(b: Any) -> None:
    out: Path = b.args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        from benchmarks.plots import draw_all

        b.report["plots"] = draw_all(_clean(b.report), out)
    except Exception as e:  # noqa: BLE001 - e.g. matplotlib missing: say so, keep the rest
        b.report["errors"].append(f"plots not drawn: {describe(e)} (pip install matplotlib)")
    write_json(out / "run.json", b.report)
    (out / "run.md").write_text(render_md(b))
    b.say(f"\nwrote {out / 'run.json'}, {out / 'run.md'} and {len(b.report.get('plots', []))}"
          " plots")
