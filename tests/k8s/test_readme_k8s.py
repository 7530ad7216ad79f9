"""README "Run on Kubernetes": the commands the kind e2e suite runs verbatim are all there and
agree with the chart, the manifests and kind-config.yaml (checked offline, every CI run)."""

from __future__ import annotations

import shlex
import sys

import yaml
from k8s_helpers import CHART, MANIFESTS, ROOT, load_yaml

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import readme_commands  # noqa: E402


def test_the_section_has_every_command_the_issue_names():
    setup, scale, teardown = readme_commands.blocks()
    text = "\n".join(setup)
    for needle in ("kind create cluster", "docker build", "kind load docker-image",
                   "helm install", "kubectl apply", "kubectl -n distsync get", "port-forward",
                   "curl -s"):
        assert needle in text, needle
    assert [ln for ln in setup if ln.endswith("&")] == [
        "kubectl -n distsync port-forward svc/demo-client 7001:7001 &"]
    assert any("scale distsynccluster/demo --replicas=5" in ln for ln in scale)
    assert teardown[-1] == "kind delete cluster --name distsync"
    for line in setup + scale + teardown:
        shlex.split(line.rstrip("&"))  # each line is one well-formed shell command


def test_the_commands_agree_with_the_files():
    setup, _, _ = readme_commands.blocks()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{chart['appVersion']}"
    assert f"docker build -t {image} ." in setup
    kind_cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert f"kind load docker-image {image} --name {kind_cfg['name']}" in setup
    assert "kind create cluster --config kind-config.yaml" in setup
    (sample,) = load_yaml(MANIFESTS / "cluster-sample.yaml")
    assert sample["spec"]["image"] == image
    ns, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    assert any(ln.startswith("helm install distsync charts/distsync") and f"--namespace {ns}"
               in ln for ln in setup)
    assert "kubectl apply -f manifests/cluster-sample.yaml" in setup
    assert f"kubectl -n {ns} port-forward svc/{name}-client 7001:7001 &" in setup


def test_e2e_skips_with_its_reason_without_docker_and_kind():
    import test_kind

    (skip,) = [m for m in test_kind.pytestmark if m.name == "skipif"]
    assert skip.kwargs["reason"] == "needs docker and kind"
    assert skip.args[0] is (not test_kind._docker_and_kind())
