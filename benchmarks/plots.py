"""PNG plots of a `run.py` report (matplotlib, Agg backend: no display needed): throughput
against concurrency per workload, one line per system; the PUT latency CDF at the lowest and
highest concurrency; distsync's throughput against cluster size. Drawn from the report dict
alone, so the plots can be redrawn from `results/run.json` without rerunning anything.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(r: dict[str, Any]) -> bool:
    v = r.get("per_s")
    return r.get("error") is None and v is not None and not math.isnan(v)


def throughput_plot(plt: Any, title: str, unit: str, rows: list[dict[str, Any]],
                    path: Path) -> None:
    by_sys: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if _ok(r):
            by_sys[r["system"]].append((r["concurrency"], r["per_s"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in by_sys.items():
        pts.sort()
        ax.plot([c for c, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    concs = sorted({c for pts in by_sys.values() for c, _ in pts})
    ax.set_xticks(concs, [str(c) for c in concs])
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if by_sys:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cdf_plot(plt: Any, rows: list[dict[str, Any]], path: Path) -> bool:
    """One panel per concurrency that has CDF points (the PUT phases at the lowest and
    highest concurrency)."""
    conc = sorted({r["concurrency"] for r in rows if r.get("cdf")})
    if not conc:
        return False
    panels = sorted({conc[0], conc[-1]})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, c in zip(axes[0], panels, strict=True):
        for r in rows:
            if r["concurrency"] == c and r.get("cdf"):
                ax.plot([p[1] for p in r["cdf"]], [p[0] for p in r["cdf"]], label=r["system"])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("percentile")
        ax.set_title(f"replicated PUT latency CDF, c={c}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def scaling_plot(plt: Any, rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if _ok(r):
            lines[(r["workload"], r["concurrency"])].append((r["nodes"], r["per_s"]))
    for (wl, c), pts in sorted(lines.items()):
        pts.sort()
        ax.plot([n for n, _ in pts], [v for _, v in pts], marker="o", label=f"{wl} c={c}")
    ax.set_xlabel("cluster size (nodes)")
    ax.set_ylabel("ops/s")
    ax.set_title("distsync: throughput against cluster size")
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_all(report: dict[str, Any], out: Path) -> list[str]:
    """Every plot the report has data for; returns the file names written."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for wl, sec in report.get("workloads", {}).items():
        name = f"throughput-{wl}.png"
        throughput_plot(plt, sec["title"], sec["unit"], sec["results"], out / name)
        written.append(name)
    put = report.get("workloads", {}).get("put")
    if put and cdf_plot(plt, put["results"], out / "put-latency-cdf.png"):
        written.append("put-latency-cdf.png")
    if report.get("scaling", {}).get("results"):
        scaling_plot(plt, report["scaling"]["results"], out / "scaling.png")
        written.append("scaling.png")
    return written
