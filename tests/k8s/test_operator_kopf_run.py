"""The operator as it runs in its pod: `distsync-operator` (= `kopf run --standalone`) in its
own process, against a recorded FAKE Kubernetes API server on loopback (fake_apiserver.py)
and REAL distsync nodes (a LocalCluster). Only the Kubernetes API is faked. A DistSyncCluster
goes Running, is scaled 3 -> 5 -> 3 (as `kubectl scale` would, through spec.replicas), and is
deleted through kopf's finalizer; every request the operator made is then checked against the
chart's RBAC, so the least-privilege rules are exactly what the operator needs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_apiserver import FakeApiServer
from fake_kube import FakeKubelet, LocalClusterPods
from k8s_helpers import crd, render

from distsync.client import BlockingClient
from distsync.local import LocalCluster

NS = "ns"


def wait(what: str, cond: Callable[[], Any], timeout: float, log: Any) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n--- operator log ---\n{log()}")


def allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in rules)


@pytest.fixture(scope="module")
def chart_rbac() -> tuple[list[dict], list[dict]]:
    """(Role rules in NS, ClusterRole rules) as the chart renders them by default."""
    objs = render(namespace=NS)
    return ([r for o in objs if o["kind"] == "Role" for r in o["rules"]],
            [r for o in objs if o["kind"] == "ClusterRole" for r in o["rules"]])


@pytest.fixture
def fake_api(chart_rbac):
    role, cluster = chart_rbac

    def authorize(req) -> bool:  # RBAC as the API server applies it to the operator's SA
        rules = cluster + (role if req.namespace == NS else [])
        return allowed(rules, req.group, req.resource, req.verb)

    server = FakeApiServer(authorize=authorize).start()
    yield server
    server.stop()


def test_kopf_run_scales_real_nodes(tmp_path, fake_api: FakeApiServer, chart_rbac):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(fake_api.kubeconfig())
    definition = crd()
    definition["metadata"]["namespace"] = ""  # cluster-scoped (the fake's store key)
    fake_api.call(lambda: fake_api._put(definition))
    fake_api.call(lambda: fake_api._put({"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": NS, "namespace": ""}}))

    with LocalCluster(3, tick_ms=20) as lc:
        lc.wait_ready(timeout=30)
        pods = LocalClusterPods(lc)
        FakeKubelet(fake_api.store, pods.start, pods.stop)
        fake_api.call(lambda: fake_api._put({
            "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
            "metadata": {"name": "demo", "namespace": NS}, "spec": {"replicas": 3}}))

        log_path = tmp_path / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "DISTSYNC_OPERATOR_INTERVAL": "1",
               "PYTHONUNBUFFERED": "1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(log_path, "wb") as logf:
            op = subprocess.Popen(
                [sys.executable, "-m", "distsync_operator.main", f"--namespace={NS}"],
                stdout=logf, stderr=subprocess.STDOUT, env=env)

        def oplog() -> str:
            return "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])

        def status() -> dict:
            obj = fake_api.get("DistSyncCluster", NS, "demo") or {}
            return obj.get("status") or {}

        def running(n: int) -> Callable[[], bool]:
            def ok() -> bool:
                st = status()
                return st.get("phase") == "Running" and st.get("replicas") == n
            return ok

        try:
            wait("Running with 3 voters", running(3), 60, oplog)
            obj = fake_api.get("DistSyncCluster", NS, "demo")
            assert obj["metadata"]["finalizers"] == ["distsync.io/finalizer"]
            with BlockingClient(lc.addrs[:3]) as c:
                for i in range(20):
                    c.put(f"kopf/{i}", i)

                fake_api.update_spec("DistSyncCluster", NS, "demo", replicas=5)
                wait("Running with 5 voters", running(5), 90, oplog)
                assert pods.joined == ["n4", "n5"]
                members = c.members()["members"]
                assert sorted((m["id"], m["voter"]) for m in members) == [
                    (f"n{i}", True) for i in range(1, 6)]

                fake_api.update_spec("DistSyncCluster", NS, "demo", replicas=3)
                wait("Running with 3 voters again", running(3), 90, oplog)
                members = c.members()["members"]
                assert sorted(m["id"] for m in members) == ["n1", "n2", "n3"]
                for i in range(20):
                    assert c.get(f"kopf/{i}")["value"] == i
            st = status()
            assert st["observedGeneration"] == 3 and st["readyReplicas"] == 3

            fake_api.delete("DistSyncCluster", NS, "demo")  # kopf's finalizer lets it go
            wait("the DistSyncCluster deleted", lambda: fake_api.get(
                "DistSyncCluster", NS, "demo") is None, 30, oplog)
        finally:
            op.send_signal(signal.SIGINT)
            try:
                op.wait(timeout=20)
            except subprocess.TimeoutExpired:
                op.kill()
                op.wait()

    # Least privilege, checked against behaviour: the API (enforcing the chart's RBAC)
    # refused nothing, and the chart grants nothing the run did not use beyond PVC deletion
    # (pvcRetention: Delete), events (posted when something fails) and update of
    # distsyncclusters/finalizers, which only the OwnerReferencesPermissionEnforcement
    # admission plugin checks (tests/envtest runs a real API server with it).
    role, cluster = chart_rbac
    assert fake_api.denied == []
    used = {(r.group, r.resource, r.verb) for r in fake_api.requests}
    granted = {(g, res, v) for r in role + cluster for g in r["apiGroups"]
               for res in r["resources"] for v in r["verbs"]}
    unused = granted - used - {("", "persistentvolumeclaims", "delete"),
                               ("events.k8s.io", "events", "create"),
                               ("", "events", "create"),
                               ("distsync.io", "distsyncclusters/finalizers", "update")}
    assert unused == set(), f"granted but never used: {sorted(unused)}"
