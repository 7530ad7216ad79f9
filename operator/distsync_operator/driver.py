"""One reconcile pass: observe (Kubernetes API + nodes) -> `reconcile.plan` -> apply.

Kept apart from the kopf decorators so that the tests drive exactly what the handlers run,
with a fake Kubernetes API and real or fake nodes.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import resources as res
from .kube import KubeApi, KubeError
from .nodes import NodeApi, observe_pods
from .reconcile import Observed, Plan, plan
from .spec import Defaults

log = logging.getLogger("distsync.operator")

# Steps after which the next pass can run at once (a membership change just committed).
CONTINUE_AFTER = ("AddingLearner", "PromotingMember", "RemovingMember")


@dataclass
class PassResult:
    plan: Plan
    status: dict[str, Any]
    error: str | None = None


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def observe(owner: dict[str, Any], kube: KubeApi, nodes: NodeApi) -> Observed:
    ns, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
    n = res.names(name)
    sts = await kube.get("StatefulSet", ns, n["statefulset"])
    cm = await kube.get("ConfigMap", ns, n["config"])
    sel = res.selector_labels(name)
    pods = await kube.list("Pod", ns, sel)
    pvcs = await kube.list("PersistentVolumeClaim", ns, sel)
    pvc_by_ordinal = {}
    for p in pvcs:
        o = res.ordinal_in(name, p["metadata"]["name"], prefix="data-")
        if o is not None:
            pvc_by_ordinal[o] = p["metadata"]["name"]
    storage = None
    for t in (sts or {}).get("spec", {}).get("volumeClaimTemplates") or []:
        if t.get("metadata", {}).get("name") == "data":
            tspec = t.get("spec") or {}
            size = str(tspec.get("resources", {}).get("requests", {}).get("storage", ""))
            storage = (size, tspec.get("storageClassName") or None)
    return Observed(
        statefulset_replicas=None if sts is None else int(sts["spec"].get("replicas", 0)),
        storage=storage,
        pods=await observe_pods(name, pods, nodes),
        config=None if cm is None else dict(cm.get("data") or {}),
        pvcs=pvc_by_ordinal,
        secret_exists=sts is not None and cm is not None,
    )


class ApplyError(Exception):
    """The API server refused one of the objects: which one, and what it said."""


async def apply_objects(owner: dict[str, Any], p: Plan, kube: KubeApi) -> None:
    ns = owner["metadata"]["namespace"]
    steps: list[tuple[str, Any]] = []
    if p.create_secret:
        sec = res.secret(owner, secrets.token_urlsafe(32))
        steps.append((f"creating Secret {sec['metadata']['name']}", kube.create(sec)))
    for name in p.delete_pvcs:
        steps.append((f"deleting PersistentVolumeClaim {name}",
                      kube.delete("PersistentVolumeClaim", ns, name)))
    for obj in p.objects:
        steps.append((f"applying {obj['kind']} {obj['metadata']['name']}", kube.apply(obj)))
    for i, (what, call) in enumerate(steps):
        try:
            await call
        except KubeError as e:
            for _, rest in steps[i + 1:]:
                rest.close()  # never awaited: nothing after a refusal is sent
            raise ApplyError(f"{what}: {e}") from e


async def apply_plan(owner: dict[str, Any], p: Plan, kube: KubeApi, nodes: NodeApi,
                     observed: Observed) -> str | None:
    """Apply the objects, then the one membership action. Returns an error message for a
    failed membership step (retried on the next pass); a refused object raises ApplyError."""
    await apply_objects(owner, p, kube)
    if p.action is None:
        return None
    leader_eps = [v.endpoint for v in observed.pods.values()
                  if v.node is not None and v.node.id == p.leader and v.endpoint]
    others = [v.endpoint for v in observed.pods.values()
              if v.endpoint and v.node is not None and v.endpoint not in leader_eps]
    try:
        await nodes.perform(p.action, leader_eps + others)
    except Exception as e:  # noqa: BLE001 - any failure of the step is reported and retried
        log.warning("%s: %s failed: %s", owner["metadata"]["name"], p.step, e)
        return f"{p.step} failed: {e}"
    log.info("%s: %s", owner["metadata"]["name"], p.message)
    return None


async def reconcile_pass(owner: dict[str, Any], kube: KubeApi, nodes: NodeApi,
                         defaults: Defaults, now: str | None = None) -> PassResult:
    observed = await observe(owner, kube, nodes)
    p = plan(owner, observed, defaults)
    error = None
    if p.spec_check.spec is not None:
        try:
            error = await apply_plan(owner, p, kube, nodes, observed)
        except ApplyError as e:  # into .status and an Event, not only the operator's log
            p.step, p.phase, p.action = "ApplyFailed", "Degraded", None
            error = str(e)
    if error:
        p.message = error
    previous = (owner.get("status") or {}).get("conditions") or []
    return PassResult(p, p.status(owner, previous, now or now_iso()), error)


async def reconcile(owner: dict[str, Any], kube: KubeApi, nodes: NodeApi, defaults: Defaults,
                    max_passes: int = 8) -> PassResult:
    """Passes back to back while membership steps succeed (learner -> promote -> next),
    each on a fresh observation; stop at the first step that has to wait for Kubernetes."""
    result: PassResult | None = None
    for _ in range(max_passes):
        result = await reconcile_pass(owner, kube, nodes, defaults)
        if result.error or result.plan.step not in CONTINUE_AFTER:
            break
        owner = {**owner, "status": {**(owner.get("status") or {}), **result.status}}
    assert result is not None
    return result
