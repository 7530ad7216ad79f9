"""Parse and validate a DistSyncCluster `spec` (pure).

The CRD's openAPIV3Schema rejects most bad input at admission; this is the same contract
checked again by the operator, so that an object admitted by an older CRD, or one whose
problem the schema cannot express, is reported as a `SpecValid=False` condition with a clear
message instead of being half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40  # `<name>-peers`, `<name>-<ordinal>` and the revision-hash label stay < 63
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
REDIS_URL_RE = re.compile(r"^rediss?://[^\s]+$")
MIN_REPLICAS, MAX_REPLICAS = 1, 9
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
RETENTION = ("Retain", "Delete")
REDIS_MODES = ("InChart", "External", "Disabled")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_PORT = 7001


# Pod settings of the node pods a DistSyncCluster may set (spec.<key>); the chart's `nodes`
# values are the operator-wide defaults of each (Defaults.pod), the CR overrides per key.
POD_KEYS: dict[str, type] = {
    "imagePullSecrets": list, "nodeSelector": dict, "tolerations": list, "affinity": dict,
    "priorityClassName": str, "podAnnotations": dict, "serviceAccountName": str,
    "automountServiceAccountToken": bool,
}


@dataclass(frozen=True)
class Defaults:
    """Operator-wide settings (from the operator's environment, set by the Helm chart)."""

    image: str = "distsync:latest"
    image_pull_policy: str = "IfNotPresent"
    in_chart_redis_url: str = ""
    pod: dict[str, Any] = field(default_factory=dict)  # POD_KEYS defaults
    cluster_domain: str = "cluster.local"  # the Kubernetes cluster's DNS domain


@dataclass(frozen=True)
class ClusterSpec:
    replicas: int
    image: str
    image_pull_policy: str = "IfNotPresent"
    storage_size: str = "1Gi"
    storage_class: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    redis_mode: str = "InChart"
    redis_url: str = ""
    redis_password_secret: tuple[str, str] | None = None  # (secret name, key)
    metrics_enabled: bool = True
    pvc_retention: str = "Retain"
    log_level: str = "INFO"
    port: int = DEFAULT_PORT
    cluster_domain: str = "cluster.local"
    # Node pod scheduling and security (POD_KEYS): the CR's, else the chart's defaults.
    # The nodes never call the Kubernetes API: no token unless asked for.
    pod: dict[str, Any] = field(default_factory=lambda: {"automountServiceAccountToken": False})


@dataclass(frozen=True)
class SpecCheck:
    spec: ClusterSpec | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def quorum(voters: int) -> int:
    return voters // 2 + 1


DEFAULTS = Defaults()


def parse_spec(name: str, raw: dict[str, Any] | None,
               defaults: Defaults = DEFAULTS) -> SpecCheck:
    """Validate `raw` (the object's spec) and fill in defaults; errors name the field."""
    raw = raw or {}
    errors: list[str] = []
    warnings: list[str] = []

    if not NAME_RE.match(name or "") or len(name) > MAX_NAME:
        errors.append(
            f"metadata.name {name!r} must be a DNS label of at most {MAX_NAME} characters "
            "(lower-case letters, digits, '-'): it names the pods and their DNS records"
        )

    replicas = raw.get("replicas", 3)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        errors.append(f"spec.replicas must be an integer, got {replicas!r}")
        replicas = 3
    elif not MIN_REPLICAS <= replicas <= MAX_REPLICAS:
        errors.append(f"spec.replicas must be between {MIN_REPLICAS} and {MAX_REPLICAS}, "
                      f"got {replicas}")
    elif replicas % 2 == 0:
        warnings.append(
            f"spec.replicas={replicas} is even: it tolerates no more failures than "
            f"{replicas - 1} (a quorum is {quorum(replicas)} of {replicas}); "
            "use an odd count (1, 3, 5, 7, 9)"
        )
    elif replicas == 1:
        warnings.append(
            "spec.replicas=1: a single voter, so its PodDisruptionBudget allows no eviction "
            "and `kubectl drain` of its node waits; scale to 3 first (or drain with "
            "--disable-eviction, losing the cluster while the pod moves)"
        )

    image = raw.get("image") or defaults.image
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        errors.append(f"spec.image must be an image reference, got {image!r}")
    pull = raw.get("imagePullPolicy") or defaults.image_pull_policy
    if pull not in PULL_POLICIES:
        errors.append(f"spec.imagePullPolicy must be one of {', '.join(PULL_POLICIES)}")

    storage = raw.get("storage") or {}
    size = str(storage.get("size", "1Gi"))
    if not QUANTITY_RE.match(size):
        errors.append(f"spec.storage.size must be a quantity such as 1Gi, got {size!r}")
    storage_class = storage.get("storageClassName") or None

    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"requests", "limits"}:
        errors.append("spec.resources may only hold `requests` and `limits`")
        resources = {}

    redis = raw.get("redis") or {}
    mode = redis.get("mode", "InChart")
    url = redis.get("url") or ""
    secret = redis.get("passwordSecretRef") or None
    if mode not in REDIS_MODES:
        errors.append(f"spec.redis.mode must be one of {', '.join(REDIS_MODES)}, got {mode!r}")
    elif mode == "External":
        if not REDIS_URL_RE.match(url):
            errors.append("spec.redis.url must be redis://host:port[/db] when mode is External")
    elif mode == "InChart":
        if url:
            errors.append("spec.redis.url is only for mode External")
        url = defaults.in_chart_redis_url
        if not url:
            warnings.append("spec.redis.mode is InChart but the chart installed no Redis "
                            "(redis.enabled=false); the cache runs without a backend")
    else:
        url = ""
    pw: tuple[str, str] | None = None
    if secret is not None:
        if not isinstance(secret, dict) or not secret.get("name") or not secret.get("key"):
            errors.append("spec.redis.passwordSecretRef needs `name` and `key`")
        else:
            pw = (str(secret["name"]), str(secret["key"]))

    metrics = raw.get("metrics") or {}
    metrics_enabled = metrics.get("enabled", True)
    if not isinstance(metrics_enabled, bool):
        errors.append("spec.metrics.enabled must be true or false")
        metrics_enabled = True

    retention = raw.get("pvcRetention", "Retain")
    if retention not in RETENTION:
        errors.append(f"spec.pvcRetention must be Retain or Delete, got {retention!r}")
    log_level = str(raw.get("logLevel", "INFO")).upper()
    if log_level not in LOG_LEVELS:
        errors.append(f"spec.logLevel must be one of {', '.join(LOG_LEVELS)}")

    pod: dict[str, Any] = {"automountServiceAccountToken": False}
    for key, kind in POD_KEYS.items():
        value = raw.get(key, defaults.pod.get(key))
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is str and not value.strip()):
            what = {list: "a list", dict: "an object", str: "a non-empty string",
                    bool: "true or false"}[kind]
            errors.append(f"spec.{key} must be {what}, got {value!r}")
            continue
        if key == "imagePullSecrets" and not all(
                isinstance(x, dict) and isinstance(x.get("name"), str) for x in value):
            errors.append("spec.imagePullSecrets must be a list of {name: <secret>}")
            continue
        if key in ("nodeSelector", "podAnnotations") and not all(
                isinstance(v, str) for v in value.values()):
            errors.append(f"spec.{key} values must be strings")
            continue
        pod[key] = value

    if errors:
        return SpecCheck(None, tuple(errors), tuple(warnings))
    return SpecCheck(
        ClusterSpec(
            replicas=replicas, image=image, image_pull_policy=pull, storage_size=size,
            storage_class=storage_class, resources=resources, redis_mode=mode, redis_url=url,
            redis_password_secret=pw, metrics_enabled=metrics_enabled,
            pvc_retention=retention, log_level=log_level, pod=pod,
            cluster_domain=defaults.cluster_domain,
        ),
        (),
        tuple(warnings),
    )
