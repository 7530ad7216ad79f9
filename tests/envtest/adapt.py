"""Every adaptation of the product to the envtest tier's Kubernetes 1.20.2, in one place.

The chart and the operator target Kubernetes 1.27 or later (Chart.yaml `kubeVersion`); the
only API server this machine kind can build is Debian bookworm's 1.20.2. The product is not
changed for it: the tests adapt what they hand to 1.20, here, and nowhere else.

ADAPTATIONS lists them (README's Kubernetes section repeats the list as "what this tier
cannot check").
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "distsync"

ADAPTATIONS: list[tuple[str, str]] = [
    ("Chart.yaml kubeVersion >=1.27.0-0 -> >=1.20.0-0 (a copy of the chart)",
     "helm refuses to install a chart whose kubeVersion the server does not meet"),
    ("CRD: x-kubernetes-validations (CEL rules) removed from a copy of the chart's CRD",
     "1.20 has no CEL and refuses the unknown field. The rules are checked offline "
     "(tests/k8s, cel-python); here only the structural schema is"),
    ("operator: PodDisruptionBudget as policy/v1beta1 instead of policy/v1",
     "policy/v1 is served from 1.21"),
    ("operator: StatefulSet without persistentVolumeClaimRetentionPolicy",
     "the field exists from 1.23 (server-side apply rejects it); the operator deletes "
     "PVCs itself by pvcRetention, which is what the tests check"),
]


def chart_copy(dst: Path) -> Path:
    """The chart with its kubeVersion lowered to 1.20; nothing else changes."""
    out = dst / "distsync"
    if out.exists():
        return out
    shutil.copytree(CHART, out)
    meta = yaml.safe_load((out / "Chart.yaml").read_text())
    meta["kubeVersion"] = ">=1.20.0-0"
    (out / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for crd in [*out.glob("crds/*.yaml"), *out.glob("templates/crd*.yaml")]:
        crd.write_text(strip_block(crd.read_text(), "x-kubernetes-validations:"))
    return out


def strip_block(text: str, key: str) -> str:
    """Remove every `key` line and the lines indented under it (YAML or a YAML template)."""
    out, cut = [], None
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        if cut is not None and (not line.strip() or indent > cut or (
                indent == cut and line.lstrip().startswith("- "))):
            continue  # indented under the key, or its list at the key's own indent
        cut = None
        if line.lstrip().startswith(key):
            cut = indent
            continue
        out.append(line)
    return "".join(out)


def patch_operator() -> None:
    """Make the operator's objects acceptable to 1.20 (see ADAPTATIONS)."""
    from distsync_operator import kube, reconcile, resources

    kube.KINDS["PodDisruptionBudget"] = ("policy", "v1beta1", "poddisruptionbudgets")
    pdb, sts = resources.pdb, resources.statefulset

    def pdb_1_20(*a: Any, **kw: Any) -> dict[str, Any]:
        return {**pdb(*a, **kw), "apiVersion": "policy/v1beta1"}

    def sts_1_20(*a: Any, **kw: Any) -> dict[str, Any]:
        obj = sts(*a, **kw)
        obj["spec"].pop("persistentVolumeClaimRetentionPolicy", None)
        return obj

    resources.pdb, resources.statefulset = pdb_1_20, sts_1_20
    assert reconcile.res is resources  # plan() builds through this module


def operator_argv(args: list[str]) -> list[str]:
    """How the stand-in kubelet runs the operator container: `distsync-operator ARGS` with
    the 1.20 patches applied first."""
    return [sys.executable, str(Path(__file__).resolve()), "operator", *args]


if __name__ == "__main__" and sys.argv[1:2] == ["operator"]:
    patch_operator()
    from distsync_operator.main import main

    sys.argv = ["distsync-operator", *sys.argv[2:]]
    main()
