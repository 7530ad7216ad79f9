"""manifests/ (plain YAML generated from the chart) and the other deployment files: no drift,
every object valid against the Kubernetes schemas, the CRD structural and its samples valid
against it (jsonschema + CEL), broken manifests rejected; Dockerfile and kind-config.yaml."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from k8s_helpers import (
    MANIFESTS,
    NO_SCHEMA_KINDS,
    ROOT,
    cr_errors,
    crd,
    crd_schema,
    k8s_validate,
    load_yaml,
    structural_problems,
    tool,
)


def test_manifests_match_the_chart():
    env = {**os.environ, "HELM": tool("helm")}
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_manifests.py"), "--check"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr


def test_every_manifest_is_valid_kubernetes():
    kinds = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for obj in load_yaml(path):
            kinds.append(obj["kind"])
            if obj["kind"] not in NO_SCHEMA_KINDS:
                k8s_validate(obj)
    assert {"Namespace", "CustomResourceDefinition", "Deployment", "ServiceAccount", "Role",
            "RoleBinding", "ClusterRole", "ClusterRoleBinding", "DistSyncCluster"} <= set(kinds)


def kubectl_local(path) -> subprocess.CompletedProcess[str]:
    """kubectl decodes a file offline (`label --local` needs no API server)."""
    return subprocess.run([tool("kubectl"), "label", "--local", "-o", "name", "-f", str(path),
                           "checked=yes"], capture_output=True, text=True, timeout=60)


def test_kubectl_reads_every_manifest(tmp_path):
    names = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        res = kubectl_local(path)
        assert res.returncode == 0, res.stderr
        names += res.stdout.split()
    assert "distsynccluster.distsync.io/demo" in names
    assert "deployment.apps/distsync-operator" in names
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [1\n")
    res = kubectl_local(bad)
    assert res.returncode != 0 and "error parsing" in res.stderr


def test_crd_is_structural_with_scale_status_and_printer_columns():
    c = crd()
    assert c["spec"]["group"] == "distsync.io" and c["spec"]["names"]["kind"] == "DistSyncCluster"
    (v,) = c["spec"]["versions"]
    assert v["name"] == "v1alpha1"
    assert structural_problems(crd_schema()) == []
    assert v["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}}
    assert [col["name"] for col in v["additionalPrinterColumns"]] == [
        "Replicas", "Ready", "Leader", "Phase", "Age"]
    spec = crd_schema()["properties"]["spec"]["properties"]
    assert (spec["replicas"]["minimum"], spec["replicas"]["maximum"]) == (1, 9)
    assert spec["pvcRetention"]["enum"] == ["Retain", "Delete"]
    status = crd_schema()["properties"]["status"]["properties"]
    for field in ("phase", "leader", "members", "readyReplicas", "conditions",
                  "observedGeneration"):
        assert field in status


def test_samples_are_valid_against_the_crd():
    (sample,) = load_yaml(MANIFESTS / "cluster-sample.yaml")
    assert cr_errors(sample) == []
    for extra in ({"replicas": 1}, {"replicas": 9, "pvcRetention": "Delete"},
                  {"redis": {"mode": "External", "url": "rediss://r:6380/1",
                             "passwordSecretRef": {"name": "redis", "key": "password"}}},
                  {"resources": {"requests": {"cpu": "100m", "memory": 128}}}):
        obj = copy.deepcopy(sample)
        obj["spec"].update(extra)
        assert cr_errors(obj) == [], extra


@pytest.mark.parametrize("change,needle", [
    ({"replicas": 0}, "minimum"),
    ({"replicas": 11}, "maximum"),
    ({"replicas": "3"}, "not of type 'integer'"),
    ({"pvcRetention": "Forever"}, "is not one of"),
    ({"redis": {"mode": "External"}}, "redis.url is required"),
    ({"redis": {"mode": "InChart", "url": "redis://x:1"}}, "only used when"),
    ({"storage": {"size": "a lot"}}, "does not match"),
    ({"image": ""}, "non-empty"),
])
def test_broken_samples_are_rejected(change, needle):
    (sample,) = load_yaml(MANIFESTS / "cluster-sample.yaml")
    sample["spec"].update(change)
    errors = cr_errors(sample)
    assert errors and any(needle in e for e in errors), errors


def test_bad_name_and_storage_change_are_rejected_by_the_crd_rules():
    (sample,) = load_yaml(MANIFESTS / "cluster-sample.yaml")
    bad = copy.deepcopy(sample)
    bad["metadata"]["name"] = "Demo.Cluster"
    assert any("DNS label" in e for e in cr_errors(bad))
    new = copy.deepcopy(sample)
    new["spec"]["storage"] = {"size": "5Gi"}
    assert any("immutable" in e for e in cr_errors(new, old=sample))
    assert cr_errors(sample, old=sample) == []


def test_a_broken_manifest_is_rejected():
    docs = load_yaml(MANIFESTS / "operator.yaml")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    k8s_validate(dep)
    broken = [copy.deepcopy(dep) for _ in range(3)]
    broken[0]["spec"]["replicas"] = "one"                           # wrong type
    broken[1]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    broken[2]["spec"]["template"]["spec"]["contianers"] = []         # typo: unknown field
    for b in broken:
        with pytest.raises(kubernetes_validate.ValidationError):
            k8s_validate(b)
    del broken[0]["spec"]["selector"]  # a required field missing
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(broken[0])


def test_kind_config():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker", "worker", "worker"]


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) == 2 and all("-slim" in f for f in froms)  # multi-stage, slim base
    assert "pip wheel" in text and "--no-index --find-links /wheels" in text  # from the wheel
    assert any(ln.startswith("USER 10001") for ln in lines)  # non-root
    assert any(ln.startswith("HEALTHCHECK") for ln in lines) and "/healthz" in text
    assert 'VOLUME ["/data"]' in text
    assert 'ENTRYPOINT ["distsync"]' in text and 'CMD ["node"]' in text
    # the second entrypoint is installed by the wheel (project.scripts)
    assert 'distsync-operator = "distsync_operator.main:main"' in (
        ROOT / "pyproject.toml").read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:4] == [
        "!pyproject.toml", "!README.md", "!node/", "!operator/"]
