"""The Helm chart with the real helm v4 binary: lint --strict, template with several value
sets, every rendered object valid against the Kubernetes schemas, the values schema rejecting
bad values, RBAC least privilege, Prometheus and Grafana wiring."""

from __future__ import annotations

import json

import pytest
from k8s_helpers import CHART, NO_SCHEMA_KINDS, cr_errors, helm, k8s_validate, render

VALUE_SETS = {
    "defaults": [],
    "cluster": ["--set", "cluster.enabled=true", "--set", "cluster.replicas=5"],
    "external-redis": ["--set", "redis.enabled=false",
                       "--set", "redis.externalUrl=redis://cache.example:6379/0",
                       "--set", "cluster.enabled=true"],
    "no-redis": ["--set", "redis.enabled=false", "--set", "cluster.enabled=true"],
    "cluster-wide": ["--set", "operator.clusterWide=true"],
    "namespaces": ["--set", "operator.watchNamespaces={team-a,team-b}"],
    "monitoring": ["--api-versions", "monitoring.coreos.com/v1", "--set", "cluster.enabled=true",
                   "--set", "cluster.pvcRetention=Delete",
                   "--set", "cluster.storage.storageClassName=fast"],
    "minimal": ["--set", "metrics.grafanaDashboard.enabled=false",
                "--set", "operator.serviceAccount.create=false"],
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(*args) for name, args in VALUE_SETS.items()}


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def test_lint_strict_with_every_value_set():
    for name, args in VALUE_SETS.items():
        res = helm("lint", "--strict", str(CHART), *[a for a in args if a != "--api-versions"
                                                    and not a.startswith("monitoring.")],
                   check=False)
        assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}"


@pytest.mark.parametrize("args,needle", [
    (["--set", "cluster.replicas=10"], "cluster.replicas"),
    (["--set", "cluster.pvcRetention=Sometimes"], "pvcRetention"),
    (["--set", "redis.externalUrl=http://nope"], "externalUrl"),
    (["--set", "operator.replicas=2"], "operator.replicas"),
    (["--set", "cluster.name=Not_A_Name"], "cluster.name"),
    (["--set", "unknownKey=1"], "unknownKey"),
])
def test_values_schema_rejects_bad_values(args, needle):
    res = helm("lint", "--strict", str(CHART), *args, check=False)
    assert res.returncode != 0
    assert needle.split(".")[-1] in res.stdout + res.stderr


def test_every_rendered_object_is_valid_kubernetes(rendered):
    checked = 0
    for objs in rendered.values():
        for o in objs:
            if o["kind"] in NO_SCHEMA_KINDS:
                continue
            k8s_validate(o)
            checked += 1
    assert checked > 50


def test_the_chart_cluster_is_valid_against_the_crd(rendered):
    for name in ("cluster", "external-redis", "no-redis", "monitoring"):
        (dsc,) = by_kind(rendered[name], "DistSyncCluster")
        assert cr_errors(dsc) == [], name
    (dsc,) = by_kind(rendered["external-redis"], "DistSyncCluster")
    assert dsc["spec"]["redis"] == {"mode": "External", "url": "redis://cache.example:6379/0"}
    (dsc,) = by_kind(rendered["no-redis"], "DistSyncCluster")
    assert dsc["spec"]["redis"] == {"mode": "Disabled"}


def test_default_install(rendered):
    objs = rendered["defaults"]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted([
        "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount", "StatefulSet"])
    assert by_kind(objs, "DistSyncCluster") == []  # cluster.enabled is off by default
    (dep,) = by_kind(objs, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = operator_env(dep)
    assert c["command"] == ["distsync-operator"]
    assert env["DISTSYNC_OPERATOR_NAMESPACES"] == "ns"
    assert env["DISTSYNC_OPERATOR_REDIS_URL"] == "redis://t-distsync-redis.ns.svc.cluster.local:6379/0"
    assert env["DISTSYNC_OPERATOR_NODE_IMAGE"] == "distsync:0.1.0"
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (redis,) = by_kind(objs, "StatefulSet")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "1Gi"}


def test_crd_is_in_crds_so_helm_installs_it_first():
    """F3 of issue 18: in templates/ the CRD and the chart's DistSyncCluster went in one
    batch, and a fresh cluster refused the CR (no such kind yet). crds/ is installed first
    (tests/envtest checks it on a real API server). It carries no Helm ownership metadata,
    so `kubectl apply -f manifests/crd.yaml` before `helm install` does not conflict."""
    assert not (CHART / "templates" / "crd.yaml").exists()
    (crd,) = [o for o in render("--include-crds") if o["kind"] == "CustomResourceDefinition"]
    meta = crd["metadata"]
    assert not any(k.startswith("meta.helm.sh/") for k in meta.get("annotations") or {})
    assert "app.kubernetes.io/managed-by" not in meta["labels"]
    assert [o for o in render() if o["kind"] == "CustomResourceDefinition"] == []


def test_external_redis_replaces_the_in_chart_one(rendered):
    objs = rendered["external-redis"]
    assert by_kind(objs, "StatefulSet") == []
    (dep,) = by_kind(objs, "Deployment")
    env = operator_env(dep)
    assert env["DISTSYNC_OPERATOR_REDIS_URL"] == "redis://cache.example:6379/0"


def operator_env(dep: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value")
            for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def _rules(objs: list[dict], kind: str) -> list[dict]:
    return [r for o in by_kind(objs, kind) for r in o["rules"]]


def test_rbac_is_least_privilege(rendered):
    objs = rendered["defaults"]
    for r in _rules(objs, "Role") + _rules(objs, "ClusterRole"):
        assert "*" not in r["verbs"] and "*" not in r["resources"]
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(r["verbs"])
    (cluster_role,) = by_kind(objs, "ClusterRole")  # cluster-wide: read CRDs, namespaces
    assert cluster_role["rules"] == [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]
    role = {res: r["verbs"] for r in _rules(objs, "Role") for res in r["resources"]}
    assert role["secrets"] == ["create"]  # written once, never read back
    assert role["pods"] == ["list"]
    assert "delete" not in role["statefulsets"] and "delete" not in role["services"]
    (binding,) = by_kind(objs, "RoleBinding")
    assert binding["subjects"][0]["name"] == "t-distsync-operator"


def test_rbac_scopes(rendered):
    wide = rendered["cluster-wide"]
    assert by_kind(wide, "Role") == []
    assert {o["metadata"]["name"] for o in by_kind(wide, "ClusterRole")} == {
        "t-distsync-operator", "t-distsync-operator-crds"}
    (dep,) = by_kind(wide, "Deployment")
    env = operator_env(dep)
    assert env["DISTSYNC_OPERATOR_NAMESPACES"] == ""
    spaces = rendered["namespaces"]
    assert sorted(o["metadata"]["namespace"] for o in by_kind(spaces, "Role")) == [
        "team-a", "team-b"]


def test_servicemonitor_only_when_the_api_exists(rendered):
    assert all(by_kind(objs, "ServiceMonitor") == [] for name, objs in rendered.items()
               if name != "monitoring")
    (sm,) = by_kind(rendered["monitoring"], "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "distsync",
                                                     "distsync.io/service": "peers"}
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


def test_grafana_dashboard(rendered):
    (cm,) = [o for o in by_kind(rendered["defaults"], "ConfigMap")
             if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["distsync.json"])
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for needle in ("leader changes", "commit rate", "locks", "queues", "cache"):
        assert needle in titles
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    assert "distsync_raft_leader_changes_total" in exprs and "distsync_raft_commit_index" in exprs
    assert by_kind(rendered["minimal"], "ConfigMap") == []


def test_notes_tell_how_to_port_forward_and_try_the_api():
    res = helm("install", "t", str(CHART), "--namespace", "ns", "--dry-run=client",
               "--set", "cluster.enabled=true", "--set", "cluster.name=demo")
    assert "kubectl -n ns port-forward svc/demo-client 7001:7001" in res.stdout
    assert "curl -s -X PUT localhost:7001/v1/kv/hello" in res.stdout


def test_notes_heredoc_ends_when_pasted(tmp_path):
    """Issue 18: the NOTES heredoc was indented, so its terminator never matched and a
    pasted command waited for ever. Run the pasted lines through bash with kubectl replaced
    by `cat`: the heredoc must end and hand over exactly the resource."""
    import subprocess

    notes = helm("install", "t", str(CHART), "--namespace", "ns", "--dry-run=client").stdout
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if "<<'YAML'" in line)
    end = lines.index("YAML", start)
    snippet = "\n".join(lines[start:end + 1]).replace("kubectl -n ns apply -f -", "cat")
    out = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "kind: DistSyncCluster" in out.stdout
    assert "YAML" not in out.stdout
