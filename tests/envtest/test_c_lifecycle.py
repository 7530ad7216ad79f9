"""The chart and the operator through a cluster's whole life on the real API server, under
the chart's own ServiceAccount token (the operator runs as the chart's Deployment, in-cluster):
helm install with cluster.enabled and the in-chart Redis, phase Running with real nodes,
scale 3 -> 5 -> 3 with `kubectl scale`, helm upgrade between (keeping the scaled count), a
node down and back (status and Events), a pod deleted, an invalid CR, helm uninstall."""

from __future__ import annotations

import json
import sys
from typing import Any

from envtest_helpers import condition, diag, events, get, items, operator_pod, release, status
from kubelet import StandInKubelet
from tier import Envtest, wait_for

CLIENT = """
import json, sys
from distsync.client import BlockingClient
addrs, ops = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = []
with BlockingClient(addrs) as c:
    for op, key, value in ops:
        if op == "put":
            c.put(key, value)
        elif op == "get":
            out.append(c.get(key)["value"])
        elif op == "cache_set":
            c.cache.set(key, value.encode())
        elif op == "cache_get":
            out.append(c.cache.get(key).decode())
print(json.dumps(out))
"""


def client(kubelet: StandInKubelet, addrs: list[str], ops: list[tuple]) -> list[Any]:
    """distsync's client, run inside the cluster (it follows the leader's advertised name)."""
    out = kubelet.run_in_cluster([sys.executable, "-c", CLIENT, json.dumps(addrs),
                                  json.dumps(ops)])
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def running(et: Envtest, ns: str, n: int) -> Any:
    def ok() -> dict | None:
        st = status(et, ns, "demo")
        voters = [m for m in st.get("members") or [] if m.get("voter") and m.get("ready")]
        if st.get("phase") == "Running" and st.get("replicas") == n and len(voters) == n \
                and st.get("readyReplicas") == n:
            return st
        return None
    return ok


def test_install_scale_upgrade_fail_recover_uninstall(envtest: Envtest, kubelet: StandInKubelet,
                                                      namespace: str, chart):
    ns, rel = namespace, release(namespace)
    show = diag(envtest, kubelet, ns, "demo")
    envtest.helm("install", rel, str(chart), "-n", ns, "--set", "cluster.enabled=true",
                 "--set", "cluster.name=demo", "--set", "operator.interval=1")
    st = wait_for("Running with 3 voters", running(envtest, ns, 3), 120, show)
    # The operator ran in its pod with the chart's ServiceAccount, and RBAC refused nothing.
    op = operator_pod(envtest, ns)
    assert get(envtest, ns, "pod", op)["spec"]["serviceAccountName"] == f"{rel}-distsync-operator"
    assert "Forbidden" not in kubelet.log_of(ns, op, 10_000)
    wait_for("a Normal event Running", lambda: [
        e for e in events(envtest, ns, "demo")
        if e["type"] == "Normal" and e["reason"] == "Running"], 30, show)

    def addrs() -> list[str]:
        return [f"{kubelet.running(ns, f'demo-{i}').ip}:7001" for i in range(3)]

    # 20 keys, and a cache entry through the in-chart Redis (its own pod).
    got = client(kubelet, addrs(), [("put", f"life/{i}", i) for i in range(20)]
                 + [("cache_set", "greeting", "hello"), ("cache_get", "greeting", None)])
    assert got == ["hello"]

    envtest.kubectl("-n", ns, "scale", "distsynccluster", "demo", "--replicas=5")
    st = wait_for("Running with 5 voters", running(envtest, ns, 5), 120, show)
    assert sorted(m["id"] for m in st["members"]) == [f"demo-{i}" for i in range(5)]
    assert get(envtest, ns, "poddisruptionbudget", "demo")["spec"]["maxUnavailable"] == 2

    # helm upgrade keeps the count `kubectl scale` set (the chart leaves replicas unset).
    envtest.helm("upgrade", rel, str(chart), "-n", ns, "--reuse-values",
                 "--set", "cluster.logLevel=DEBUG")
    cr = get(envtest, ns, "distsynccluster", "demo")
    assert cr["spec"]["replicas"] == 5 and cr["spec"]["logLevel"] == "DEBUG"

    envtest.kubectl("-n", ns, "scale", "distsynccluster", "demo", "--replicas=3")
    st = wait_for("Running with 3 voters again", running(envtest, ns, 3), 120, show)
    assert sorted(m["id"] for m in st["members"]) == ["demo-0", "demo-1", "demo-2"]
    wait_for("pods demo-3 and demo-4 gone", lambda: sorted(
        p["metadata"]["name"] for p in items(envtest, ns, "pods", "app.kubernetes.io/component=node"))
        == ["demo-0", "demo-1", "demo-2"], 60, show)

    # A node down: the status says which, an Event says so; back up: Running again.
    kubelet.pause(ns, "demo-2")
    st = wait_for("Degraded with demo-2 not ready", lambda: (
        s if (s := status(envtest, ns, "demo")).get("phase") == "Degraded"
        and "demo-2" in s.get("message", "") else None), 60, show)
    assert condition(st, "Ready")["reason"] == "MembersNotReady"
    wait_for("a Warning event MembersNotReady", lambda: [
        e for e in events(envtest, ns, "demo")
        if e["type"] == "Warning" and e["reason"] == "MembersNotReady"], 30, show)
    kubelet.resume(ns, "demo-2")
    wait_for("Running after the node came back", running(envtest, ns, 3), 60, show)

    # A pod deleted: the StatefulSet controller re-creates it, the node resumes from its PVC.
    uid = get(envtest, ns, "pod", "demo-1")["metadata"]["uid"]
    envtest.kubectl("-n", ns, "delete", "pod", "demo-1", "--wait=false")
    wait_for("demo-1 re-created", lambda: (get(envtest, ns, "pod", "demo-1") or {}).get(
        "metadata", {}).get("uid", uid) != uid, 60, show)
    # The status may still say Running from before the deletion was noticed: wait for the
    # new pod's process to be ready first, then for the status to agree.
    def new_pod_ready() -> bool:
        pod = get(envtest, ns, "pod", "demo-1") or {}
        return (pod.get("metadata", {}).get("uid") != uid
                and kubelet.running(ns, "demo-1") is not None
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in pod.get("status", {}).get("conditions", [])))

    wait_for("the new demo-1 running and ready", new_pod_ready, 90, show)
    wait_for("Running after the pod was replaced", running(envtest, ns, 3), 90, show)
    assert client(kubelet, addrs(), [("get", f"life/{i}", None) for i in range(20)]) == list(
        range(20))

    # Invalid CRs: the schema refuses some at the door; what it cannot express (here: on
    # 1.20, where the CEL rules are absent) the operator reports, with an Event.
    bad = envtest.kubectl("-n", ns, "apply", "-f", "-", check=False, stdin=json.dumps({
        "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
        "metadata": {"name": "toobig"}, "spec": {"replicas": 10}}))
    assert bad.returncode != 0 and "spec.replicas" in bad.stderr
    envtest.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
        "metadata": {"name": "nourl"}, "spec": {"replicas": 3, "redis": {"mode": "External"}}}))
    wait_for("nourl Invalid", lambda: status(envtest, ns, "nourl").get("phase") == "Invalid",
             30, show)
    assert "redis.url" in condition(status(envtest, ns, "nourl"), "SpecValid")["message"]
    assert get(envtest, ns, "statefulset", "nourl") is None
    wait_for("an InvalidSpec event", lambda: [
        e for e in events(envtest, ns, "nourl") if e["reason"] == "InvalidSpec"], 30, show)
    envtest.kubectl("-n", ns, "delete", "distsynccluster", "nourl", "--timeout=30s")

    envtest.helm("uninstall", rel, "-n", ns, "--wait", "--timeout", "90s")
    assert get(envtest, ns, "distsynccluster", "demo") is None
    wait_for("the StatefulSet collected", lambda: get(envtest, ns, "statefulset", "demo")
             is None, 60, show)


def test_without_the_chart_cluster_install_upgrade_uninstall(envtest: Envtest,
                                                             kubelet: StandInKubelet,
                                                             namespace: str, chart):
    """cluster.enabled=false: the operator alone. A cluster the user creates is handled;
    `helm upgrade` replaces the operator (Recreate) and the new one carries on; the user
    deletes the cluster (the operator lets it go), then `helm uninstall` leaves nothing of
    the release, cluster-scoped RBAC included."""
    ns, rel = namespace, release(namespace)
    kubelet.hold(ns, {"app.kubernetes.io/component": "node"})  # the operator is under test
    show = diag(envtest, kubelet, ns, "mine")
    envtest.helm("install", rel, str(chart), "-n", ns, "--set", "redis.enabled=false",
                 "--set", "operator.interval=1")
    envtest.kubectl("-n", ns, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
        "metadata": {"name": "mine"}, "spec": {"replicas": 3}}))
    wait_for("the operator's status", lambda: status(envtest, ns, "mine").get("phase") ==
             "Creating", 60, show)
    first = operator_pod(envtest, ns)
    envtest.helm("upgrade", rel, str(chart), "-n", ns, "--reuse-values",
                 "--set", "operator.interval=2")
    wait_for("a new operator pod running", lambda: (op := operator_pod(envtest, ns)) not in
             (None, first) and kubelet.running(ns, op) is not None, 60, show)
    envtest.kubectl("-n", ns, "scale", "distsynccluster", "mine", "--replicas=5")
    wait_for("the new operator saw the scale", lambda: condition(
        status(envtest, ns, "mine"), "Ready").get("observedGeneration") == 2, 60, show)
    envtest.kubectl("-n", ns, "delete", "distsynccluster", "mine", "--timeout=60s")
    envtest.helm("uninstall", rel, "-n", ns, "--wait", "--timeout", "60s")
    assert items(envtest, ns, "deployments") == []
    left = envtest.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name").stdout
    assert rel not in left
