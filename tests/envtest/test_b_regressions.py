"""Regression tests of issue 18's F2-F8 on the real API server: each failed on the code
before its fix. The operator runs as the chart's Deployment (the stand-in kubelet runs its
pod, in-cluster, with the chart's ServiceAccount token: real RBAC); node pods run only where
the test needs a leader."""

from __future__ import annotations

import json

from envtest_helpers import condition, diag, events, get, release, release_values, status
from kubelet import StandInKubelet
from tier import Envtest, wait_for

NODES = {"app.kubernetes.io/component": "node"}


def install(et: Envtest, chart, ns: str, *extra: str) -> str:
    """helm install (no Redis) of a release named after the namespace (the chart's
    cluster-scoped objects carry the release name); returns the release name."""
    rel = release(ns)
    et.helm("install", rel, str(chart), "-n", ns, "--set", "redis.enabled=false",
            *release_values(), *extra)
    return rel


def apply_cr(et: Envtest, ns: str, spec: dict, name: str = "demo") -> None:
    et.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))


def test_f2_operator_may_set_block_owner_deletion(envtest: Envtest, kubelet: StandInKubelet,
                                                  namespace: str, chart):
    """F2: under OwnerReferencesPermissionEnforcement (OpenShift's default) an object whose
    ownerReference sets blockOwnerDeletion needs `update` on the owner's finalizers; the
    Role lacked it, so the operator got 403 on everything it created."""
    kubelet.hold(namespace)
    rel = install(envtest, chart, namespace)
    apply_cr(envtest, namespace, {"replicas": 3})
    uid = get(envtest, namespace, "distsynccluster", "demo")["metadata"]["uid"]
    sa = envtest.sa_kubeconfig(namespace, f"{rel}-distsync-operator")
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "demo-config", "namespace": namespace, "ownerReferences": [{
              "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster", "name": "demo",
              "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
          "data": {"k": "v"}}
    out = envtest.kubectl("create", "-f", "-", kubeconfig=sa, stdin=json.dumps(cm),
                          check=False)
    assert out.returncode == 0, out.stderr


def hook_log(envtest: Envtest, kubelet: StandInKubelet, namespace: str) -> str:
    """The namespace's events and the delete-cluster hook's log, for a failed uninstall
    (its Job and pods are in diag's listing)."""
    parts = [envtest.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp",
                             check=False).stdout[-3000:]]
    for ns, pod in list(kubelet.pods):
        if ns == namespace and "delete-cluster" in pod:
            parts.append(f"--- pod/{pod} ---\n" + kubelet.log_of(namespace, pod))
    return "\n".join(parts)


def test_f4_uninstall_with_the_chart_cluster_deletes_it(envtest: Envtest,
                                                        kubelet: StandInKubelet,
                                                        namespace: str, chart):
    """F4: `helm uninstall` removed the operator, its ServiceAccount and RBAC together with
    the DistSyncCluster, whose finalizer nothing could then remove: Terminating for ever."""
    kubelet.hold(namespace, NODES)  # the operator runs; the nodes are not needed
    rel = install(envtest, chart, namespace, "--set", "cluster.enabled=true")
    show = diag(envtest, kubelet, namespace, "demo")
    wait_for("the operator to handle the cluster", lambda: status(
        envtest, namespace, "demo").get("phase"), 60, show)
    out = envtest.helm("uninstall", rel, "-n", namespace, "--wait", "--timeout", "60s",
                       check=False)
    assert out.returncode == 0, (out.stderr[-2000:] + "\n" + show() + "\n--- events, hook ---\n"
                                 + hook_log(envtest, kubelet, namespace))
    wait_for("the DistSyncCluster gone", lambda: get(
        envtest, namespace, "distsynccluster", "demo") is None, 60, show)


def test_f5_api_errors_reach_status_and_events(envtest: Envtest, kubelet: StandInKubelet,
                                               namespace: str, chart):
    """F5: an error from the API server (here: a StatefulSet with a CPU request the server
    cannot parse, which the CRD's int-or-string schema lets through) was raised before the
    status was written: `kubectl describe` showed nothing."""
    kubelet.hold(namespace, NODES)
    install(envtest, chart, namespace)
    apply_cr(envtest, namespace, {"replicas": 3, "resources": {"requests": {"cpu": "lots"}}})
    show = diag(envtest, kubelet, namespace, "demo")
    st = wait_for("a Ready=False condition naming the API error", lambda: (
        s if "quantities" in condition(s := status(envtest, namespace, "demo"), "Ready")
        .get("message", "") else None), 60, show)
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ApplyFailed", ready
    assert st["phase"] == "Degraded"
    ev = wait_for("a Warning event on the DistSyncCluster", lambda: [
        e for e in events(envtest, namespace, "demo")
        if e["type"] == "Warning" and e["reason"] == "ApplyFailed"], 30, show)
    assert "StatefulSet" in ev[0]["message"] and "quantities" in ev[0]["message"]
    described = envtest.kubectl("-n", namespace, "describe", "distsynccluster", "demo").stdout
    assert "ApplyFailed" in described


def test_f6_storage_added_after_creation_does_not_wedge(envtest: Envtest,
                                                        kubelet: StandInKubelet,
                                                        namespace: str, chart):
    """F6: spec.storage added after creation passed the CRD (its immutability rule compares
    old and new only when both exist) and the operator re-rendered the StatefulSet's
    volumeClaimTemplates: every later StatefulSet update was refused with 422, scaling
    included. The operator keeps the storage the StatefulSet was created with and says so."""
    install(envtest, chart, namespace)
    apply_cr(envtest, namespace, {"replicas": 3})
    show = diag(envtest, kubelet, namespace, "demo")
    wait_for("Running", lambda: status(envtest, namespace, "demo").get("phase") == "Running",
             90, show)
    envtest.kubectl("-n", namespace, "patch", "distsynccluster", "demo", "--type=merge",
                    "-p", json.dumps({"spec": {"storage": {"size": "2Gi"}, "replicas": 5}}))
    wait_for("the StatefulSet grown to 5", lambda: (get(
        envtest, namespace, "statefulset", "demo") or {})["spec"]["replicas"] == 5, 60, show)
    sts = get(envtest, namespace, "statefulset", "demo")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "1Gi"}
    spec_valid = condition(status(envtest, namespace, "demo"), "SpecValid")
    assert spec_valid["reason"] == "StorageImmutable" and "1Gi" in spec_valid["message"]


def test_f7_scaling_before_the_first_leader_keeps_the_founders_pdb(
        envtest: Envtest, kubelet: StandInKubelet, namespace: str, chart):
    """F7: before the first leader, `kubectl scale --replicas=9` made the operator publish a
    PDB for 9 voters (maxUnavailable 4: every founding pod evictable) and status.replicas 9
    while no member existed."""
    kubelet.hold(namespace, NODES)  # no node answers: no leader ever
    install(envtest, chart, namespace)
    apply_cr(envtest, namespace, {"replicas": 3})
    show = diag(envtest, kubelet, namespace, "demo")
    wait_for("the StatefulSet", lambda: get(envtest, namespace, "statefulset", "demo"), 60,
             show)
    envtest.kubectl("-n", namespace, "scale", "distsynccluster", "demo", "--replicas=9")
    wait_for("the scale seen", lambda: condition(status(envtest, namespace, "demo"),
                                                 "Ready").get("observedGeneration") == 2,
             60, show)
    pdb = get(envtest, namespace, "poddisruptionbudget", "demo")
    assert pdb["spec"]["maxUnavailable"] == 1  # 3 founders: one may go, a quorum stays
    st = status(envtest, namespace, "demo")
    assert st["replicas"] == 0 and st["phase"] == "Creating"
    assert get(envtest, namespace, "statefulset", "demo")["spec"]["replicas"] == 3


def test_f8_node_pods_take_scheduling_and_security_settings(envtest: Envtest,
                                                           kubelet: StandInKubelet,
                                                           namespace: str, chart):
    """F8: the node pods got no imagePullSecrets (only the operator did), no nodeSelector,
    tolerations, affinity, priorityClassName, podAnnotations or serviceAccountName, and
    mounted the default token. Chart defaults reach every cluster; the CR overrides them."""
    kubelet.hold(namespace, NODES)
    envtest.kubectl("-n", namespace, "create", "serviceaccount", "nodes")
    install(envtest, chart, namespace, "--set", "imagePullSecrets[0].name=regcred",
            "--set", "nodes.nodeSelector.disk=ssd",
            "--set", "nodes.tolerations[0].key=dedicated",
            "--set", "nodes.tolerations[0].operator=Exists")
    apply_cr(envtest, namespace, {
        "replicas": 3, "serviceAccountName": "nodes", "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"team": "infra"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}})
    show = diag(envtest, kubelet, namespace, "demo")
    wait_for("the node pods", lambda: get(envtest, namespace, "pod", "demo-0"), 60, show)
    spec = get(envtest, namespace, "pod", "demo-0")["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert {"key": "dedicated", "operator": "Exists"} in spec["tolerations"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["serviceAccountName"] == "nodes"
    assert spec["automountServiceAccountToken"] is False
    assert not any(m["mountPath"].startswith("/var/run/secrets")
                   for m in spec["containers"][0].get("volumeMounts") or [])
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert spec["affinity"]["podAntiAffinity"]  # the operator's spreading stays
    pod = get(envtest, namespace, "pod", "demo-0")
    assert pod["metadata"]["annotations"]["team"] == "infra"
