"""End to end on a real Kubernetes cluster (kind): README "Run on Kubernetes", verbatim, then
a workload (kv, lock, queue, cache) through `kubectl port-forward`, scaling 3 -> 5 -> 3 with
the status and the Raft membership checked at every step, the leader's pod deleted with no
acknowledged write lost, and a clean uninstall.

Needs `docker` (with a running daemon) and `kind`; helm and kubectl come from PATH or from
scripts/get_k8s_tools.py. Skipped otherwise. About 10 minutes on a laptop.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import readme_commands
from readme_commands import ROOT

from distsync.local import http_json


def _docker_and_kind() -> bool:
    if not (shutil.which("docker") and shutil.which("kind")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.skipif(not _docker_and_kind(), reason="needs docker and kind"),
    pytest.mark.timeout(3600),
]

NS = "distsync"
NAME = "demo"
PORT = 7001
API = f"127.0.0.1:{PORT}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if not (shutil.which("helm") and shutil.which("kubectl")):
        tools = subprocess.run([sys.executable, str(ROOT / "scripts" / "get_k8s_tools.py")],
                               check=True, capture_output=True, text=True).stdout.strip()
        env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    return env


ENV = _env() if _docker_and_kind() else dict(os.environ)


def sh(cmd: str, timeout: float = 900, check: bool = True) -> str:
    """Run one README command line exactly as written (bash), from the repository root."""
    print(f"$ {cmd}", flush=True)
    res = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=timeout)
    print(res.stdout[-2000:], res.stderr[-2000:], flush=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res.stdout


def kubectl(*args: str, check: bool = True) -> str:
    res = subprocess.run(["kubectl", "-n", NS, *args], env=ENV, capture_output=True,
                         text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr}")
    return res.stdout


def wait(what: str, cond: Callable[[], Any], timeout: float = 300, every: float = 2) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = cond()
        except (AssertionError, OSError, ValueError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {last}\n{kubectl('get', 'all,pvc')}")


def cluster_status() -> dict[str, Any]:
    return json.loads(kubectl("get", f"distsynccluster/{NAME}", "-o", "json")).get("status", {})


def settled(voters: int) -> Callable[[], dict[str, Any] | None]:
    def ok() -> dict[str, Any] | None:
        st = cluster_status()
        conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
        good = (st.get("phase") == "Running" and st.get("replicas") == voters
                and st.get("readyReplicas") == voters and st.get("leader")
                and conds.get("Ready") == "True")
        return st if good else None
    return ok


class PortForward:
    """README's `kubectl ... port-forward ... &`, run in the background (and again after
    the pod behind it is deleted)."""

    def __init__(self, line: str):
        self.cmd = line.rstrip("&").strip()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """(Re)start; kubectl picks one pod behind the Service, which may be one still
        starting after a deletion: then try again."""
        for _ in range(20):
            self.stop()
            print(f"$ {self.cmd} &", flush=True)
            self.proc = subprocess.Popen(["bash", "-c", f"exec {self.cmd}"], cwd=ROOT,
                                         env=ENV, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            end = time.monotonic() + 15
            while time.monotonic() < end and self.proc.poll() is None:
                with socket.socket() as s:
                    s.settimeout(1)
                    if s.connect_ex(("127.0.0.1", PORT)) == 0:
                        return
                time.sleep(0.5)
            time.sleep(3)
        raise AssertionError(f"{self.cmd} never came up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def api(method: str, path: str, body: Any = None, rid: str | None = None) -> tuple[int, Any]:
    return http_json(method, f"http://{API}{path}", body, timeout=10,
                     headers={"Request-Id": rid} if rid else None)


@pytest.fixture(scope="module")
def deployed() -> Iterator[PortForward]:
    """README's first block, verbatim (the port-forward in the background)."""
    delete_kind = readme_commands.teardown()[-1]
    sh(delete_kind, check=False)  # a cluster left over by an interrupted run
    forward: PortForward | None = None
    outputs: dict[str, str] = {}
    try:
        for line in readme_commands.setup():
            if line.endswith("&"):
                forward = PortForward(line)
                forward.start()
            else:
                outputs[line] = sh(line)
        assert forward is not None
        last_get = [out for cmd, out in outputs.items() if cmd.startswith("curl -s localhost")]
        assert '"world"' in last_get[-1]
        yield forward
    finally:
        if forward is not None:
            forward.stop()
        if os.environ.get("DISTSYNC_E2E_KEEP") != "1":
            sh(delete_kind, check=False)


ACKED: dict[str, int] = {}  # every write the cluster acknowledged, checked after each step


def write_batch(n: int) -> None:
    for _ in range(n):
        key = f"e2e/{len(ACKED)}"
        rid = str(uuid.uuid4())
        for _attempt in range(20):  # retried with the same request id: applied at most once
            try:
                code, _ = api("PUT", f"/v1/kv/{key}", {"value": len(ACKED)}, rid)
            except OSError:
                code = 0
            if code == 200:
                ACKED[key] = len(ACKED)
                break
            time.sleep(0.5)


def check_acked() -> None:
    for key, value in ACKED.items():
        code, body = api("GET", f"/v1/kv/{key}")
        assert code == 200 and body["value"] == value, (key, code, body)


def members() -> list[tuple[str, bool]]:
    code, body = api("GET", "/v1/cluster/members")
    assert code == 200, body
    return sorted((m["id"], m["voter"]) for m in body["members"])


def test_ready_with_a_leader(deployed: PortForward) -> None:
    st = wait("3 voters, Ready", settled(3))
    assert st["leader"] in {f"{NAME}-{i}" for i in range(3)}
    assert members() == [(f"{NAME}-{i}", True) for i in range(3)]
    printed = kubectl("get", "distsyncclusters")
    for col in ("REPLICAS", "READY", "LEADER", "PHASE", "AGE"):
        assert col in printed


def test_workload(deployed: PortForward) -> None:
    from distsync.client import BlockingClient

    write_batch(50)
    check_acked()
    with BlockingClient([API], timeout=30) as c:
        with c.lock("e2e-lock", ttl=10) as grant:
            assert grant.token > 0  # a fencing token
        q = c.queue("e2e")
        q.create()
        ids = [q.put({"n": i}) for i in range(5)]
        got = []
        while len(got) < len(ids):
            msgs = q.get("e2e-consumer", max=5, wait_ms=2000)
            assert msgs, "an acknowledged enqueue was not delivered"
            for m in msgs:
                got.append(m.body["n"])
                m.ack()
        assert sorted(got) == list(range(5))
        c.cache.set("e2e/cached", "v1")
        assert c.cache.get("e2e/cached") == b"v1"
        c.cache.set("e2e/cached", "v2")
        assert c.cache.get("e2e/cached") == b"v2"


def test_scale_three_five_three(deployed: PortForward) -> None:
    wait("3 voters", settled(3))
    for line in readme_commands.scale():  # README: scale to 5, wait, get
        sh(line)
    st = wait("5 voters, Ready", settled(5))
    assert [m["voter"] for m in st["members"]] == [True] * 5
    assert members() == [(f"{NAME}-{i}", True) for i in range(5)]
    write_batch(20)
    check_acked()

    kubectl("scale", f"distsynccluster/{NAME}", "--replicas=3")
    st = wait("3 voters again", settled(3))
    assert sorted(m["id"] for m in st["members"]) == [f"{NAME}-{i}" for i in range(3)]
    assert members() == [(f"{NAME}-{i}", True) for i in range(3)]
    wait("pods 3 and 4 gone", lambda: kubectl(
        "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}", "-o", "name").split()
        == [f"pod/{NAME}-{i}" for i in range(3)])
    pvcs = kubectl("get", "pvc", "-o", "name").split()
    assert f"persistentvolumeclaim/data-{NAME}-4" in pvcs  # pvcRetention: Retain
    write_batch(20)
    check_acked()


def test_leader_pod_deleted_loses_nothing(deployed: PortForward) -> None:
    st = wait("3 voters", settled(3))
    write_batch(30)
    old_leader = st["leader"]
    kubectl("delete", "pod", old_leader, "--wait=false")
    wait("a new leader", lambda: (cluster_status().get("leader") not in (None, old_leader)),
         timeout=120, every=1)
    deployed.start()  # the forwarded pod may have been the one deleted
    write_batch(10)
    wait("3 voters, Ready again", settled(3))
    check_acked()


def test_uninstall_is_clean(deployed: PortForward) -> None:
    deployed.stop()
    remove_cluster, uninstall, _delete_kind = readme_commands.teardown()
    sh(remove_cluster)
    wait("the cluster's pods gone", lambda: kubectl(
        "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}", "-o", "name") == "")
    assert kubectl("get", "statefulsets,services,configmaps,secrets,pdb", "-l",
                   f"app.kubernetes.io/instance={NAME}", "-o", "name") == ""
    sh(uninstall)
    wait("the operator gone", lambda: kubectl("get", "deploy,sts", "-o", "name") == "")
    # The CRD stays (it is in the chart's crds/: Helm never deletes it, nor so any
    # DistSyncCluster).
    out = subprocess.run(["kubectl", "get", "crd", "distsyncclusters.distsync.io"],
                         env=ENV, capture_output=True, text=True)
    assert out.returncode == 0
