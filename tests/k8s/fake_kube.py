"""A recorded FAKE of the Kubernetes API, and fakes of what runs behind it, for the tests.

- `FakeKubeApi` implements the operator's `KubeApi` (get, list, apply, create, delete) over an
  in-memory store and records every call in `calls`. It is a fake: no admission, no
  validation, server-side apply approximated by "replace what the caller sent, keep status".
- `FakeKubelet` plays the StatefulSet controller and the kubelet: when a StatefulSet's replicas
  change it creates or deletes the pods (and their PVCs) and tells a backend (fake nodes, or
  real `distsync node` processes) to start or stop them.
- `LocalClusterPods` is the kubelet backend for real nodes: pod ordinal i is LocalCluster
  node n{i+1}; the founders already run, new pods are `add_joiner()` processes (started
  empty with --join, as the StatefulSet starts them), a deleted pod is a SIGTERM.
- `FakeNodes` implements the operator's `NodeApi` with an in-memory model of a distsync
  cluster's membership (used by the handler tests; the loopback test uses real nodes).
"""

from __future__ import annotations

import copy
import itertools
import signal
from collections.abc import Callable
from typing import Any

from distsync_operator.reconcile import Action, AddLearner, Promote, RemoveMember
from distsync_operator.resources import ordinal_in
from distsync_operator.spec import quorum

_uid = itertools.count(1)


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.watchers: list[Callable[[str, dict[str, Any]], None]] = []

    # -- the KubeApi interface ----------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def list(self, kind: str, namespace: str,
                   selector: dict[str, str]) -> list[dict[str, Any]]:
        self.calls.append(("list", kind, ",".join(f"{k}={v}" for k, v in selector.items())))
        out = []
        for (k, ns, _), obj in sorted(self.objects.items()):
            labels = obj["metadata"].get("labels") or {}
            if k == kind and ns == namespace and all(labels.get(a) == b
                                                     for a, b in selector.items()):
                out.append(copy.deepcopy(obj))
        return out

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.calls.append(("apply", obj["kind"], meta["name"]))
        return self.put(obj)

    async def create(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if "name" not in meta:  # generateName, as events use
            meta = obj["metadata"] = {**meta, "name": f"{meta['generateName']}{next(_uid)}"}
        self.calls.append(("create", obj["kind"], meta["name"]))
        if (obj["kind"], meta["namespace"], meta["name"]) in self.objects:
            return False
        self.put(obj)
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind, name))
        obj = self.objects.pop((kind, namespace, name), None)
        if obj is not None:
            for w in self.watchers:
                w("DELETED", obj)
        return obj is not None

    # -- test helpers -------------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store as the API server would (uid, resourceVersion, status kept on update)."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        old = self.objects.get(key)
        meta.setdefault("uid", old["metadata"]["uid"] if old else f"uid-{next(_uid)}")
        meta["resourceVersion"] = str(next(_uid))
        if old is not None and "status" in old and "status" not in obj:
            obj["status"] = old["status"]
        self.objects[key] = obj
        for w in self.watchers:
            w("MODIFIED" if old else "ADDED", obj)
        return copy.deepcopy(obj)

    def obj(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def verbs(self, verb: str, kind: str | None = None) -> list[str]:
        return [n for v, k, n in self.calls if v == verb and (kind is None or k == kind)]


class FakeKubelet:
    """StatefulSet controller + kubelet: pods `<sts>-<i>` follow spec.replicas."""

    def __init__(self, kube: FakeKubeApi, start: Callable[[str, int, dict[str, str]], dict],
                 stop: Callable[[str, int], None]):
        """`start(sts_name, ordinal, env)` starts the pod's process with the environment its
        container would get (the ConfigMap through envFrom, POD_NAME) and returns
        {"ip": ..., "port": ...}; `stop(sts_name, ordinal)` stops it."""
        self.kube, self.start, self.stop = kube, start, stop
        kube.watchers.append(self._on_event)

    def _on_event(self, event: str, obj: dict[str, Any]) -> None:
        if obj["kind"] != "StatefulSet":
            return
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        want = 0 if event == "DELETED" else int(obj["spec"]["replicas"])
        have = sorted(o for (k, n, pod) in list(self.kube.objects)
                      if k == "Pod" and n == ns and (o := ordinal_in(name, pod)) is not None)
        for i in range(want):
            if i not in have:
                self._create_pod(obj, i)
        for i in have:
            if i >= want:
                self.stop(name, i)
                self.kube.objects.pop(("Pod", ns, f"{name}-{i}"), None)
                retention = obj["spec"].get("persistentVolumeClaimRetentionPolicy", {})
                if retention.get("whenScaled") == "Delete":
                    self.kube.objects.pop(("PersistentVolumeClaim", ns, f"data-{name}-{i}"),
                                          None)

    def _create_pod(self, sts: dict[str, Any], i: int) -> None:
        meta = sts["metadata"]
        ns, name = meta["namespace"], meta["name"]
        tmpl = sts["spec"]["template"]
        env: dict[str, str] = {"POD_NAME": f"{name}-{i}", "POD_NAMESPACE": ns}
        for src in tmpl["spec"]["containers"][0].get("envFrom", []):
            ref = src.get("configMapRef")
            cm = ref and self.kube.obj("ConfigMap", ns, ref["name"])
            if cm:
                env.update(cm.get("data") or {})
        where = self.start(name, i, env)
        containers = copy.deepcopy(tmpl["spec"]["containers"])
        for p in containers[0]["ports"]:
            if p["name"] == "http":
                p["containerPort"] = where["port"]
        self.kube.put({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{i}", "namespace": ns,
                         "labels": dict(tmpl["metadata"]["labels"])},
            "spec": {"containers": containers},
            "status": {"phase": "Running", "podIP": where["ip"]},
        })
        pvc = f"data-{name}-{i}"
        if ("PersistentVolumeClaim", ns, pvc) not in self.kube.objects:
            labels = sts["spec"]["volumeClaimTemplates"][0]["metadata"].get("labels", {})
            self.kube.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": pvc, "namespace": ns, "labels": dict(labels)},
                           "spec": copy.deepcopy(sts["spec"]["volumeClaimTemplates"][0]["spec"])})


class FakeNodes:
    """An in-memory distsync cluster, reached through fake endpoints `<pod>.fake:7001`
    (never dialled: nothing here touches the network). Membership follows the node's rules:
    one change at a time through a leader, which needs a healthy quorum."""

    def __init__(self) -> None:
        self.up: dict[str, str] = {}  # endpoint -> node id of a running node
        self.addr: dict[str, str] = {}  # node id -> advertised address
        self.members: dict[str, bool] = {}  # node id -> voter
        self.leader: str | None = None
        self.calls: list[tuple[str, str]] = []
        self.started: list[str] = []
        self.joined: dict[str, bool] = {}  # node id -> started with --join

    # kubelet backend
    def start(self, sts: str, i: int, env: dict[str, str]) -> dict[str, Any]:
        node_id, ep = f"{sts}-{i}", f"{sts}-{i}.fake"
        self.started.append(node_id)
        self.up[f"{ep}:7001"] = node_id
        self.addr[node_id] = f"{node_id}.{sts}-peers.ns.svc.cluster.local:7001"
        founding = int(env.get("DISTSYNC_STATEFULSET_REPLICAS", "0"))
        join = env.get("DISTSYNC_JOIN") == "true" or i >= founding
        self.joined[node_id] = join
        if not self.members and not join:  # founders bootstrap the first membership
            self.members = {f"{sts}-{j}": True for j in range(founding)}
        self.elect()
        return {"ip": ep, "port": 7001}

    def stop(self, sts: str, i: int) -> None:
        self.crash(f"{sts}-{i}")

    def crash(self, node_id: str) -> None:
        self.up = {ep: n for ep, n in self.up.items() if n != node_id}
        if self.leader == node_id:
            self.leader = None
        self.elect()

    def running(self) -> set[str]:
        return set(self.up.values())

    def elect(self) -> None:
        voters = [m for m, v in self.members.items() if v]
        live = [m for m in voters if m in self.running()]
        if self.leader in live and len(live) >= quorum(len(voters)):
            return
        self.leader = min(live) if voters and len(live) >= quorum(len(voters)) else None

    # NodeApi
    async def status(self, endpoint: str) -> dict[str, Any] | None:
        node_id = self.up.get(endpoint)
        if node_id is None:
            return None
        member = node_id in self.members
        return {
            "id": node_id, "addr": self.addr[node_id],
            "role": "leader" if node_id == self.leader else "follower",
            "term": 1, "leader": self.leader if member else None,
            "ready": member and self.leader is not None,
            "members": [{"id": m, "addr": self.addr.get(m, ""), "voter": v}
                        for m, v in sorted(self.members.items())] if member else [],
        }

    async def perform(self, action: Action, seeds: list[str]) -> dict[str, Any]:
        self.calls.append((type(action).__name__, action.id))
        if self.leader is None:
            raise RuntimeError("503 no_leader")
        if isinstance(action, AddLearner):
            self.members.setdefault(action.id, False)
            self.addr[action.id] = action.addr
        elif isinstance(action, Promote):
            self.members[action.id] = True
        elif isinstance(action, RemoveMember):
            self.members.pop(action.id, None)
            if self.leader == action.id:
                self.leader = None
        self.elect()
        return {"leader": self.leader}



class LocalClusterPods:
    """Kubelet backend whose pods are real `distsync node` processes of a LocalCluster."""

    def __init__(self, lc: Any):
        self.lc = lc
        self.by_ordinal = {i: f"n{i + 1}" for i in range(len(lc.nodes))}
        self.joined: list[str] = []

    def start(self, sts: str, i: int, env: dict[str, str]) -> dict[str, Any]:
        if i not in self.by_ordinal:  # a pod added by scaling up: it must start with --join
            founding = int(env["DISTSYNC_STATEFULSET_REPLICAS"])
            assert env["DISTSYNC_JOIN"] == "true" or i >= founding, env
            nd = self.lc.add_joiner()
            self.by_ordinal[i] = nd.node_id
            self.joined.append(nd.node_id)
        nd = self.lc.nodes[self.by_ordinal[i]]
        if not nd.alive():
            self.lc.start_node(nd.node_id)
        host, port = nd.addr.rsplit(":", 1)
        return {"ip": host, "port": int(port)}

    def stop(self, sts: str, i: int) -> None:
        self.lc.kill(self.by_ordinal[i], signal.SIGTERM)
