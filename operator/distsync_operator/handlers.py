"""kopf glue: every handler gathers its inputs and runs `driver.reconcile`; nothing else.

- create / update (of .spec, which `kubectl scale` changes too) / resume: reconcile now;
- a timer polls every `DISTSYNC_OPERATOR_INTERVAL` seconds (default 5): the leader's
  `/v1/status` into `.status`, and the next step of any change in progress;
- delete: the finalizer lets PVCs go by `pvcRetention` (the rest has owner references).

The handlers write `.status` fields directly (phase, leader, members, readyReplicas, replicas,
selector, conditions, observedGeneration); kopf keeps its own bookkeeping in annotations.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION
from . import resources as res
from .driver import reconcile
from .kube import RestKubeApi
from .nodes import HttpNodeApi
from .spec import Defaults, parse_spec

INTERVAL = float(os.environ.get("DISTSYNC_OPERATOR_INTERVAL", "5"))
FINALIZER = f"{GROUP}/finalizer"


def defaults_from_env() -> Defaults:
    return Defaults(
        image=os.environ.get("DISTSYNC_OPERATOR_NODE_IMAGE", Defaults.image),
        image_pull_policy=os.environ.get("DISTSYNC_OPERATOR_NODE_PULL_POLICY",
                                         Defaults.image_pull_policy),
        in_chart_redis_url=os.environ.get("DISTSYNC_OPERATOR_REDIS_URL", ""),
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
    if "kube" not in memo:  # tests put a fake Kubernetes API here
        memo["kube"] = RestKubeApi.from_environment()
    if "nodes" not in memo:
        memo["nodes"] = HttpNodeApi()
    memo.setdefault("defaults", defaults_from_env())
    memo.setdefault("locks", {})


async def _run(body: kopf.Body | dict[str, Any], patch: kopf.Patch | dict[str, Any],
               memo: kopf.Memo, logger: logging.Logger | Any) -> dict[str, Any]:
    owner = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
             "metadata": dict(body["metadata"]), "spec": dict(body.get("spec") or {}),
             "status": dict(body.get("status") or {})}
    lock = memo["locks"].setdefault(owner["metadata"]["uid"], asyncio.Lock())
    async with lock:  # the timer and the change handlers never step at the same time
        result = await reconcile(owner, memo["kube"], memo["nodes"], memo["defaults"])
    # Write only what changed: a steady cluster costs no API writes per timer tick.
    changed = {k: v for k, v in result.status.items() if owner["status"].get(k) != v}
    if changed:
        patch["status"] = {**(patch.get("status") or {}), **changed}
    if result.plan.step not in ("Reconciled",):
        logger.info(f"{result.plan.phase}: {result.plan.message}")
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
