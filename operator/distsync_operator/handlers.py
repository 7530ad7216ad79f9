"""kopf glue: every handler gathers its inputs and runs `driver.reconcile`; nothing else.

- create / update (of .spec, which `kubectl scale` changes too) / resume: reconcile now;
- a timer polls every `DISTSYNC_OPERATOR_INTERVAL` seconds (default 5): the leader's
  `/v1/status` into `.status`, and the next step of any change in progress;
- delete: the finalizer lets PVCs go by `pvcRetention` (the rest has owner references).

The handlers write `.status` fields directly (phase, leader, members, readyReplicas, replicas,
selector, conditions, observedGeneration); kopf keeps its own bookkeeping in annotations.
Failures (an object the API server refuses, an invalid spec, a failed membership step) and
phase changes also become Events on the DistSyncCluster, so `kubectl describe` shows them:
kopf's own event posting covers only exceptions, and these are not raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION
from . import resources as res
from .driver import now_iso, reconcile
from .kube import KubeError, RestKubeApi, event
from .nodes import HttpNodeApi
from .spec import Defaults, parse_spec

INTERVAL = float(os.environ.get("DISTSYNC_OPERATOR_INTERVAL", "5"))
FINALIZER = f"{GROUP}/finalizer"


def defaults_from_env() -> Defaults:
    """`DISTSYNC_OPERATOR_NODE_POD_DEFAULTS`: JSON object of node pod settings (the chart's
    `nodes` values and imagePullSecrets), the defaults of every DistSyncCluster's."""
    raw = os.environ.get("DISTSYNC_OPERATOR_NODE_POD_DEFAULTS", "") or "{}"
    pod = json.loads(raw)
    if not isinstance(pod, dict):
        raise SystemExit(f"DISTSYNC_OPERATOR_NODE_POD_DEFAULTS is not a JSON object: {raw!r}")
    return Defaults(
        image=os.environ.get("DISTSYNC_OPERATOR_NODE_IMAGE", Defaults.image),
        image_pull_policy=os.environ.get("DISTSYNC_OPERATOR_NODE_PULL_POLICY",
                                         Defaults.image_pull_policy),
        in_chart_redis_url=os.environ.get("DISTSYNC_OPERATOR_REDIS_URL", ""),
        pod={k: v for k, v in pod.items() if v not in (None, "", [], {})},
        cluster_domain=os.environ.get("DISTSYNC_OPERATOR_CLUSTER_DOMAIN") or "cluster.local",
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True  # one operator replica (Deployment strategy Recreate)
    settings.watching.server_timeout = 300
    # A deleted DistSyncCluster is released (its finalizer removed) only once `poll` has
    # stopped; a deletion that meets a poll mid-run is re-checked after this many seconds,
    # 60 by default: `helm uninstall` then waited a minute more (its pre-delete hook, F4).
    settings.background.cancellation_polling = 1.0
    if "kube" not in memo:  # tests put a fake Kubernetes API here
        memo["kube"] = RestKubeApi.from_environment()
    if "nodes" not in memo:
        memo["nodes"] = HttpNodeApi()
    memo.setdefault("defaults", defaults_from_env())
    memo.setdefault("locks", {})


WARNING_PHASES = ("Degraded", "Invalid")


def _ready_reason(status: dict[str, Any]) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or []
                 if isinstance(c, dict) and c.get("type") == "Ready"), None)


async def _post(kube: Any, owner: dict[str, Any], type_: str, reason: str, message: str,
                logger: logging.Logger | Any) -> None:
    """An Event on the DistSyncCluster; failing to post one never fails the pass."""
    try:
        await kube.create(event(owner, type_, reason, message, now_iso()))
    except (KubeError, OSError) as e:
        logger.warning(f"could not post event {reason}: {e}")


async def _run(body: kopf.Body | dict[str, Any], patch: kopf.Patch | dict[str, Any],
               memo: kopf.Memo, logger: logging.Logger | Any) -> dict[str, Any]:
    owner = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
             "metadata": dict(body["metadata"]), "spec": dict(body.get("spec") or {}),
             "status": dict(body.get("status") or {})}
    kube = memo["kube"]
    lock = memo["locks"].setdefault(owner["metadata"]["uid"], asyncio.Lock())
    try:
        async with lock:  # the timer and the change handlers never step at the same time
            result = await reconcile(owner, kube, memo["nodes"], memo["defaults"])
    except KubeError as e:  # observing failed: say so where `kubectl describe` looks
        message = f"reading the cluster's objects: {e}"
        if owner["status"].get("message") != message:
            patch["status"] = {**(patch.get("status") or {}), "phase": "Degraded",
                               "message": message}
            await _post(kube, owner, "Warning", "ObserveFailed", message, logger)
        logger.error(message)
        return {}
    # Write only what changed: a steady cluster costs no API writes per timer tick.
    changed = {k: v for k, v in result.status.items() if owner["status"].get(k) != v}
    if changed:
        patch["status"] = {**(patch.get("status") or {}), **changed}
    p = result.plan
    if p.step not in ("Reconciled",):
        logger.info(f"{p.phase}: {p.message}")
    # Events on transitions (phase or Ready reason) and on every new failure message.
    before = (owner["status"].get("phase"), _ready_reason(owner["status"]))
    after = (result.status.get("phase"), _ready_reason(result.status))
    failed = result.error is not None or p.step in ("ApplyFailed", "InvalidSpec")
    if before != after or (failed and owner["status"].get("message") != p.message):
        warn = failed or p.phase in WARNING_PHASES
        reason = ("StepFailed" if result.error and p.step != "ApplyFailed"
                  else "Running" if p.step == "Reconciled" else p.step)
        await _post(kube, owner, "Warning" if warn else "Normal", reason, p.message, logger)
    return result.status


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile_now(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                        logger: logging.Logger, **_: Any) -> None:
    await _run(body, patch, memo, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=INTERVAL)
async def poll(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: logging.Logger,
               **_: Any) -> None:
    await _run(body, patch, memo, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_cluster(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger,
                         **_: Any) -> None:
    """Owner references remove the StatefulSet, Services, ConfigMap, Secret and PDB. PVCs
    outlive their StatefulSet unless the policy says Delete; then they go here too."""
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    memo["locks"].pop(body["metadata"].get("uid"), None)
    check = parse_spec(name, dict(body.get("spec") or {}), memo["defaults"])
    retention = check.spec.pvc_retention if check.spec else "Retain"
    if retention != "Delete":
        logger.info(f"keeping the PVCs of {name} (pvcRetention: {retention})")
        return
    kube = memo["kube"]
    for pvc in await kube.list("PersistentVolumeClaim", ns, res.selector_labels(name)):
        await kube.delete("PersistentVolumeClaim", ns, pvc["metadata"]["name"])
        logger.info(f"deleted PVC {pvc['metadata']['name']}")
