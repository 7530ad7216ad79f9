"""Builders for the objects that run one DistSyncCluster (pure: dicts in, dicts out).

Every object carries the cluster's labels and an owner reference to the DistSyncCluster, so
deleting the cluster garbage-collects them. Names: `<name>` (StatefulSet, pods `<name>-<i>`),
`<name>-peers` (headless Service: stable pod DNS for Raft peers, published before readiness),
`<name>-client` (ClusterIP Service for clients, ready pods only), `<name>-config` (ConfigMap:
node settings, the founding size and the bootstrapped flag), `<name>-secret` (Secret: cluster
secret, created once and never rewritten), `<name>` (PodDisruptionBudget).
"""

from __future__ import annotations

from typing import Any

from . import API_VERSION, KIND
from .spec import ClusterSpec, quorum

APP = "distsync"
DATA_MOUNT = "/data"  # the PVC
DATA_DIR = "/data/raft"  # a directory of its own on it (a fresh volume has lost+found)
PORT_NAME = "http"
SERVICE_LABEL = "distsync.io/service"

# ConfigMap keys (read by `distsync node` as environment variables, see distsync.cli)
CFG_FOUNDING = "DISTSYNC_STATEFULSET_REPLICAS"
CFG_JOIN = "DISTSYNC_JOIN"


def names(name: str) -> dict[str, str]:
    return {
        "statefulset": name, "peers": f"{name}-peers", "client": f"{name}-client",
        "config": f"{name}-config", "secret": f"{name}-secret", "pdb": name,
    }


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": name}


def labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "node",
        "app.kubernetes.io/managed-by": "distsync-operator",
    }


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }


def _meta(name: str, owner: dict[str, Any], obj_name: str,
          annotations: dict[str, str] | None = None,
          extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": obj_name,
        "namespace": owner["metadata"]["namespace"],
        "labels": {**labels(name), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def scrape_annotations(spec: ClusterSpec) -> dict[str, str]:
    if not spec.metrics_enabled:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
            "prometheus.io/path": "/metrics"}


def peer_service(owner: dict[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        # The chart's ServiceMonitor selects this Service: it lists every pod, ready or not.
        "metadata": _meta(name, owner, names(name)["peers"],
                          extra_labels={SERVICE_LABEL: "peers"}),
        "spec": {
            "clusterIP": "None",
            # Raft needs peer DNS before any pod is ready (readiness needs a leader).
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name),
            "ports": [{"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME,
                       "protocol": "TCP"}],
        },
    }


def client_service(owner: dict[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(name, owner, names(name)["client"],
                          extra_labels={SERVICE_LABEL: "client"}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME,
                       "protocol": "TCP"}],
        },
    }


def config_map(owner: dict[str, Any], spec: ClusterSpec, founding: int,
               bootstrapped: bool) -> dict[str, Any]:
    """Node settings read through `envFrom`. `DISTSYNC_STATEFULSET_REPLICAS` is the founding
    size, fixed when the cluster is created: pods below it bootstrap the first membership,
    pods at or above it start with --join. Once a leader has been seen, `DISTSYNC_JOIN` turns
    true, so any pod that starts with an empty disk afterwards waits to be added (a pod with
    its PVC resumes from its log either way). Env from a ConfigMap is read at container start,
    so changing it restarts nothing."""
    name = owner["metadata"]["name"]
    data = {
        "DISTSYNC_LISTEN": f"0.0.0.0:{spec.port}",
        "DISTSYNC_PORT": str(spec.port),
        "DISTSYNC_PEER_SERVICE": names(name)["peers"],
        CFG_FOUNDING: str(founding),
        CFG_JOIN: "true" if bootstrapped else "false",
        "DISTSYNC_DATA_DIR": DATA_DIR,
        "DISTSYNC_CLUSTER": name,
        "DISTSYNC_LOG_LEVEL": spec.log_level,
        "DISTSYNC_CLUSTER_DOMAIN": spec.cluster_domain,
    }
    if spec.redis_url:
        data["DISTSYNC_REDIS_URL"] = spec.redis_url
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(name, owner, names(name)["config"]), "data": data}


def secret(owner: dict[str, Any], cluster_secret: str) -> dict[str, Any]:
    """Created once (never re-applied): the value is random and must not change."""
    name = owner["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(name, owner, names(name)["secret"]),
            "stringData": {"DISTSYNC_CLUSTER_SECRET": cluster_secret}}


def pdb(owner: dict[str, Any], voters: int) -> dict[str, Any]:
    """At most (voters - 1) // 2 pods may be evicted at once: a majority always stays up.
    `voters` is the smaller of the current and the desired voter count while scaling."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(name, owner, names(name)["pdb"]),
        "spec": {
            "maxUnavailable": max(voters - quorum(voters), 0),
            "selector": {"matchLabels": selector_labels(name)},
        },
    }


def _env(spec: ClusterSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if spec.redis_password_secret:
        sname, key = spec.redis_password_secret
        env.append({"name": "DISTSYNC_REDIS_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": sname, "key": key}}})
    return env


def affinity(spec: ClusterSpec, sel: dict[str, str]) -> dict[str, Any]:
    """The CR's affinity; the operator's spreading of the pods over hosts unless the CR sets
    a podAntiAffinity of its own."""
    spread = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"labelSelector": {"matchLabels": sel},
                            "topologyKey": "kubernetes.io/hostname"},
    }]}}
    return {**spread, **spec.pod.get("affinity", {})}


def pod_settings(spec: ClusterSpec) -> dict[str, Any]:
    """Scheduling and security settings of the node pods (F8 of issue 18): from the CR,
    else the chart's defaults (ClusterSpec.pod)."""
    p = spec.pod
    out: dict[str, Any] = {
        "automountServiceAccountToken": bool(p.get("automountServiceAccountToken", False))}
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "priorityClassName",
                "serviceAccountName"):
        if p.get(key):
            out[key] = p[key]
    return out


def statefulset(owner: dict[str, Any], spec: ClusterSpec, replicas: int) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    n = names(name)
    sel = selector_labels(name)
    probe_port = {"port": PORT_NAME}
    container: dict[str, Any] = {
        "name": "distsync",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["node"],
        "ports": [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "env": _env(spec),
        "envFrom": [{"configMapRef": {"name": n["config"]}},
                    {"secretRef": {"name": n["secret"]}}],
        # Ready = a leader is known, this pod is a member and has applied what it knows is
        # committed; a joining pod stays unready (off the client Service) until added.
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe_port},
                           "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe_port},
                          "initialDelaySeconds": 10, "periodSeconds": 10,
                          "timeoutSeconds": 5, "failureThreshold": 6},
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if spec.resources:
        container["resources"] = spec.resources
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage_size}},
    }
    if spec.storage_class:
        pvc_spec["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(name, owner, n["statefulset"]),
        "spec": {
            "replicas": replicas,
            "serviceName": n["peers"],
            # Founding pods must start together: each one's readiness needs a leader.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": sel},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": spec.pvc_retention, "whenScaled": spec.pvc_retention,
            },
            "template": {
                "metadata": {"labels": labels(name), "annotations": {
                    **spec.pod.get("podAnnotations", {}), **scrape_annotations(spec)}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "enableServiceLinks": False,
                    **pod_settings(spec),
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "runAsGroup": 10001, "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "affinity": affinity(spec, sel),
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": sel}}
                        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                    ],
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data", "labels": selector_labels(name)},
                "spec": pvc_spec,
            }],
        },
    }


def pvc_name(name: str, ordinal: int) -> str:
    """The PVC the StatefulSet controller makes for pod `<name>-<ordinal>`."""
    return f"data-{name}-{ordinal}"


def ordinal_in(name: str, obj_name: str, prefix: str = "") -> int | None:
    """`<prefix><name>-<i>` -> i (pods: no prefix; PVCs: prefix "data-"); else None."""
    head = f"{prefix}{name}-"
    tail = obj_name[len(head):] if obj_name.startswith(head) else ""
    return int(tail) if tail.isdigit() else None


def desired_objects(owner: dict[str, Any], spec: ClusterSpec, replicas: int, founding: int,
                    bootstrapped: bool, pdb_voters: int) -> list[dict[str, Any]]:
    """Everything applied on each pass (the Secret is created separately, once)."""
    return [
        config_map(owner, spec, founding, bootstrapped),
        peer_service(owner, spec),
        client_service(owner, spec),
        statefulset(owner, spec, replicas),
        pdb(owner, pdb_voters),
    ]
