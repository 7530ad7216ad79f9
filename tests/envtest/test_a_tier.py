"""The tier itself: a real 1.20 API server with RBAC and the OpenShift-like admission plugin,
and the stand-in kubelet running a pod's process with the pod's environment. Named `a_` so
it runs first: the F3 test needs an API server that has never seen the CRD."""

from __future__ import annotations

import json

import adapt
from envtest_helpers import CRD, get, release
from kubelet import StandInKubelet
from tier import ADMISSION, Envtest, wait_for


def test_real_api_server_with_rbac_and_admission(envtest: Envtest):
    version = json.loads(envtest.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.20.")
    pid = (envtest.run / "kube-apiserver.pid").read_text().strip()
    cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
    assert ADMISSION in cmdline and "RBAC" in cmdline
    # RBAC is real: a ServiceAccount with no bindings may do nothing.
    envtest.kubectl("create", "namespace", "rbac-probe")
    envtest.kubectl("-n", "rbac-probe", "create", "serviceaccount", "nobody")
    sa = envtest.sa_kubeconfig("rbac-probe", "nobody")
    denied = envtest.kubectl("-n", "rbac-probe", "get", "configmaps", kubeconfig=sa,
                             check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_f3_helm_install_with_cluster_on_a_fresh_server(envtest: Envtest, kubelet:
                                                        StandInKubelet, namespace: str, chart):
    """F3: `helm install --set cluster.enabled=true` on a server that has never seen the
    CRD failed with `no matches for kind "DistSyncCluster"` while the CRD sat in templates/
    beside the CR: Helm must install the CRD first (crds/)."""
    kubelet.hold(namespace)  # the install is under test, not the pods
    envtest.kubectl("delete", "crd", CRD, "--ignore-not-found", "--timeout=60s")
    out = envtest.helm("install", release(namespace), str(chart), "-n", namespace, "--set",
                       "cluster.enabled=true", "--set", "cluster.name=demo", check=False)
    assert out.returncode == 0, out.stderr
    assert get(envtest, namespace, "distsynccluster", "demo") is not None
    wait_for("the CRD established", lambda: "Established" in envtest.kubectl(
        "get", "crd", CRD, "-o", "jsonpath={.status.conditions[*].type}").stdout, 30)


def test_crd_applied_from_manifests_then_helm_install(envtest: Envtest, kubelet: StandInKubelet,
                                                      namespace: str, chart):
    """README's "without Helm" path first (`kubectl apply -f manifests/crd.yaml`), then
    `helm install`: it failed on the CRD's missing Helm ownership metadata while the CRD was
    a template; crds/ leaves an existing CRD alone."""
    kubelet.hold(namespace)
    crd = adapt.strip_block((adapt.ROOT / "manifests" / "crd.yaml").read_text(),
                            "x-kubernetes-validations:")  # 1.20: see adapt.ADAPTATIONS
    envtest.kubectl("apply", "-f", "-", stdin=crd)
    out = envtest.helm("install", release(namespace), str(chart), "-n", namespace,
                       "--set", "cluster.enabled=true", check=False)
    assert out.returncode == 0, out.stderr
