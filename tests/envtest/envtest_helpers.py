"""Small helpers shared by the envtest tests: reading objects, the operator's pod and log,
the chart's names."""

from __future__ import annotations

import json
from typing import Any

from kubelet import StandInKubelet
from tier import Envtest

CRD = "distsyncclusters.distsync.io"


def get(et: Envtest, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    out = et.kubectl("-n", ns, "get", kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def items(et: Envtest, ns: str, kind: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["-n", ns, "get", kind, "-o", "json"] + (["-l", selector] if selector else [])
    return json.loads(et.kubectl(*args).stdout)["items"]


def status(et: Envtest, ns: str, name: str) -> dict[str, Any]:
    return (get(et, ns, "distsynccluster", name) or {}).get("status") or {}


def condition(st: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == ctype), {})


def events(et: Envtest, ns: str, name: str) -> list[dict[str, Any]]:
    return [e for e in items(et, ns, "events")
            if e["involvedObject"].get("kind") == "DistSyncCluster"
            and e["involvedObject"].get("name") == name]


def operator_pod(et: Envtest, ns: str) -> str | None:
    pods = items(et, ns, "pods", "app.kubernetes.io/component=operator")
    return pods[0]["metadata"]["name"] if pods else None


def diag(et: Envtest, k: StandInKubelet, ns: str, name: str = "") -> Any:
    """A closure printing what a failed wait needs: the CR, the pods, the operator log."""
    def show() -> str:
        parts = [et.kubectl("-n", ns, "get", "all,distsyncclusters", "-o", "wide",
                            check=False).stdout]
        if name:
            parts.append(json.dumps(status(et, ns, name), indent=1)[:3000])
        op = operator_pod(et, ns)
        if op:
            parts.append("--- operator log ---\n" + k.log_of(ns, op, 60))
        return "\n".join(parts)
    return show


def release_values(name: str = "demo") -> list[str]:
    """helm flags every test install uses: a 1-second operator interval (the tests wait
    for steps, not for timers)."""
    return ["--set", "operator.interval=1", "--set", f"cluster.name={name}"]


def release(ns: str) -> str:
    """A release name unique to the namespace: the chart's ClusterRole and ClusterRoleBinding
    are named after the release, and every test installs into its own namespace."""
    return "r" + ns.rsplit("-", 1)[1]
