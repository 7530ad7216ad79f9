"""The kopf handlers, called as kopf calls them, against a recorded FAKE of the Kubernetes API
(tests/k8s/fake_kube.py) and an in-memory model of the nodes: the whole life of a cluster,
create -> Running -> scale 3 -> 5 -> 3 -> delete, an operator restart in the middle of a
change, an invalid spec, and an API error."""

from __future__ import annotations

import copy
import logging

import kopf
import pytest
from fake_kube import FakeKubeApi, FakeKubelet, FakeNodes

from distsync_operator import GROUP, PLURAL, VERSION, handlers
from distsync_operator.kube import KubeError

log = logging.getLogger("test")


class Operator:
    """One operator process: its memo, the handlers, and kopf's way of storing the status."""

    def __init__(self, kube: FakeKubeApi, nodes: FakeNodes):
        self.kube, self.memo = kube, kopf.Memo()
        self.memo["kube"], self.memo["nodes"] = kube, nodes
        self.settings = kopf.OperatorSettings()

    async def start(self) -> None:
        await handlers.configure(settings=self.settings, memo=self.memo)

    def body(self, name: str = "demo") -> dict:
        return copy.deepcopy(self.kube.obj("DistSyncCluster", "ns", name))

    async def _call(self, fn, name: str = "demo") -> dict:
        patch: dict = {}
        await fn(body=self.body(name), patch=patch, memo=self.memo, logger=log)
        self.last_patch = patch
        obj = self.kube.objects[("DistSyncCluster", "ns", name)]
        obj["status"] = {**obj.get("status", {}), **patch.get("status", {})}  # as kopf patches
        return obj["status"]

    async def changed(self, name: str = "demo") -> dict:
        return await self._call(handlers.reconcile_now, name)

    async def tick(self, name: str = "demo") -> dict:
        return await self._call(handlers.poll, name)

    async def delete(self, name: str = "demo") -> None:
        await handlers.delete_cluster(body=self.body(name), memo=self.memo, logger=log)


@pytest.fixture
def world():
    kube, nodes = FakeKubeApi(), FakeNodes()
    FakeKubelet(kube, nodes.start, nodes.stop)
    return kube, nodes


def new_cluster(kube: FakeKubeApi, replicas: int = 3, **spec: object) -> None:
    kube.put({"apiVersion": f"{GROUP}/{VERSION}", "kind": "DistSyncCluster",
              "metadata": {"name": "demo", "namespace": "ns", "generation": 1},
              "spec": {"replicas": replicas, **spec}})


def scale(kube: FakeKubeApi, replicas: int) -> None:
    """`kubectl scale` through the scale subresource: spec.replicas and a new generation."""
    obj = kube.objects[("DistSyncCluster", "ns", "demo")]
    obj["spec"]["replicas"] = replicas
    obj["metadata"]["generation"] += 1


async def settle(op: Operator, ticks: int = 10) -> dict:
    for _ in range(ticks):
        st = await op.tick()
        if st["phase"] == "Running" and st["observedGeneration"] == op.body()["metadata"][
                "generation"]:
            return st
    raise AssertionError(f"not Running after {ticks} ticks: {st}")


def voters(status: dict) -> list[str]:
    return sorted(m["id"] for m in status["members"] if m["voter"])


async def test_configure_sets_kopf_up_and_keeps_the_injected_api(world):
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    assert op.settings.persistence.finalizer == "distsync.io/finalizer"
    assert isinstance(op.settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert op.settings.peering.standalone is True
    assert op.memo["kube"] is kube and op.memo["nodes"] is nodes


async def test_a_deletion_that_meets_a_running_poll_is_not_held_for_a_minute(world):
    """kopf releases a deleted object only once its timers have stopped, and re-checks a
    timer that was mid-run every `background.cancellation_polling` seconds: 60 by default.
    A DistSyncCluster deleted during a `poll` (every interval, tens of ms of API calls) kept
    its finalizer a minute longer: `helm uninstall --wait --timeout 60s` failed in the
    envtest tier (F4, 1 run in 8 here), with the hook Job still waiting."""
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    assert kopf.OperatorSettings().background.cancellation_polling == 60  # kopf's default
    assert op.settings.background.cancellation_polling <= 1


def test_handlers_are_registered_for_distsyncclusters():
    registry = kopf.get_default_registry()
    fns = {h.fn.__name__: h for h in registry._changing.get_all_handlers()}
    for name in ("reconcile_now", "delete_cluster"):
        sel = fns[name].selector
        assert (sel.group, sel.version, sel.any_name) == (GROUP, VERSION, PLURAL)
    (timer,) = registry._spawning.get_all_handlers()
    assert timer.fn is handlers.poll and timer.interval == handlers.INTERVAL


async def test_life_of_a_cluster(world):
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    new_cluster(kube, 3)

    st = await op.changed()  # @kopf.on.create
    assert st["phase"] == "Creating"
    sts = kube.obj("StatefulSet", "ns", "demo")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    assert kube.verbs("create", "Secret") == ["demo-secret"]
    assert sorted(kube.verbs("apply")) == sorted(
        ["demo-config", "demo-peers", "demo-client", "demo", "demo"])
    assert nodes.joined == {"demo-0": False, "demo-1": False, "demo-2": False}

    st = await settle(op)  # @kopf.timer: the leader's view into .status
    assert voters(st) == ["demo-0", "demo-1", "demo-2"] and st["leader"] == "demo-0"
    assert st["readyReplicas"] == 3
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "SpecValid": "True", "Available": "True", "Progressing": "False", "Ready": "True"}
    assert kube.obj("ConfigMap", "ns", "demo-config")["data"]["DISTSYNC_JOIN"] == "true"
    await op.tick()
    assert op.last_patch == {}  # steady: the timer writes nothing

    # kubectl scale --replicas=5
    scale(kube, 5)
    st = await op.changed()  # @kopf.on.update(field="spec")
    assert kube.obj("StatefulSet", "ns", "demo")["spec"]["replicas"] == 5
    assert nodes.joined["demo-3"] and nodes.joined["demo-4"]  # new pods start with --join
    st = await settle(op)
    assert voters(st) == [f"demo-{i}" for i in range(5)]
    assert nodes.calls == [("AddLearner", "demo-3"), ("Promote", "demo-3"),
                           ("AddLearner", "demo-4"), ("Promote", "demo-4")]
    assert kube.obj("PodDisruptionBudget", "ns", "demo")["spec"]["maxUnavailable"] == 2

    # and back to 3: each member leaves through the leader before its pod goes
    nodes.calls.clear()
    scale(kube, 3)
    await op.changed()
    assert nodes.calls == [("RemoveMember", "demo-4")]
    assert kube.obj("StatefulSet", "ns", "demo")["spec"]["replicas"] == 4
    st = await settle(op)
    assert nodes.calls == [("RemoveMember", "demo-4"), ("RemoveMember", "demo-3")]
    assert voters(st) == ["demo-0", "demo-1", "demo-2"]
    assert kube.obj("StatefulSet", "ns", "demo")["spec"]["replicas"] == 3
    # pvcRetention Retain (default): the PVCs of demo-3 and demo-4 stay
    assert kube.obj("PersistentVolumeClaim", "ns", "data-demo-4") is not None
    assert kube.verbs("delete") == []

    await op.delete()
    assert kube.verbs("delete") == []  # Retain: nothing to delete; owner refs do the rest


async def test_operator_restart_in_the_middle_of_scale_down(world):
    kube, nodes = world
    first = Operator(kube, nodes)
    await first.start()
    new_cluster(kube, 5)
    await first.changed()
    await settle(first)
    scale(kube, 3)
    await first.changed()  # removed demo-4, shrank to 4 ... and the operator dies here
    assert kube.obj("StatefulSet", "ns", "demo")["spec"]["replicas"] == 4
    # Worse: it died right after the leader committed the removal of demo-3, before shrinking.
    from distsync_operator.reconcile import RemoveMember
    await nodes.perform(RemoveMember("demo-3", 3), [])
    nodes.calls.clear()

    second = Operator(kube, nodes)  # a fresh process: nothing in memory
    await second.start()
    st = await second.changed()  # @kopf.on.resume
    assert kube.obj("StatefulSet", "ns", "demo")["spec"]["replicas"] == 3
    assert nodes.calls == []  # nothing repeated: demo-3 was already gone
    st = await settle(second)
    assert voters(st) == ["demo-0", "demo-1", "demo-2"]


async def test_a_pod_that_restarts_with_its_pvc_is_not_re_added(world):
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    new_cluster(kube, 3)
    await op.changed()
    await settle(op)
    nodes.crash("demo-1")
    st = await op.tick()
    assert st["phase"] == "Degraded" and st["leader"] == "demo-0"
    ready = {m["id"]: m["ready"] for m in st["members"]}
    assert ready == {"demo-0": True, "demo-1": False, "demo-2": True}
    nodes.start("demo", 1, {"DISTSYNC_STATEFULSET_REPLICAS": "3", "DISTSYNC_JOIN": "true"})
    st = await settle(op)
    assert nodes.calls == []  # it was a member all along


async def test_invalid_spec_is_reported_and_nothing_is_created(world):
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    new_cluster(kube, 3, redis={"mode": "External"})
    st = await op.changed()
    assert st["phase"] == "Invalid"
    cond = {c["type"]: c for c in st["conditions"]}["SpecValid"]
    assert cond["status"] == "False" and "redis.url" in cond["message"]
    assert kube.verbs("apply") == [] and kube.verbs("create", "Secret") == []
    (ev,) = [o for (k, _, _), o in kube.objects.items() if k == "Event"]
    assert (ev["type"], ev["reason"]) == ("Warning", "InvalidSpec")
    assert "redis.url" in ev["message"] and ev["involvedObject"]["name"] == "demo"
    await op.tick()  # the same problem again: no second event
    assert len([k for (k, _, _) in kube.objects if k == "Event"]) == 1


async def test_pvcs_are_deleted_by_policy(world):
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    new_cluster(kube, 5, pvcRetention="Delete")
    await op.changed()
    await settle(op)
    scale(kube, 3)
    await op.changed()
    await settle(op)
    pvcs = sorted(n for (k, _, n) in kube.objects if k == "PersistentVolumeClaim")
    assert pvcs == ["data-demo-0", "data-demo-1", "data-demo-2"]
    await op.delete()
    assert sorted(kube.verbs("delete", "PersistentVolumeClaim"))[-3:] == pvcs
    assert not [n for (k, _, n) in kube.objects if k == "PersistentVolumeClaim"]


async def test_kubernetes_api_errors_reach_status_and_events(world):
    """F5 of issue 18: an API error was raised before the status was written, so only the
    operator's log knew. tests/envtest repeats this against a real API server."""
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    new_cluster(kube, 3)

    async def refuse(obj):
        raise KubeError(403, "Forbidden", "statefulsets.apps is forbidden")

    real = kube.apply
    kube.apply = refuse  # type: ignore[method-assign]
    st = await op.changed()
    assert st["phase"] == "Degraded"
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "ApplyFailed"
    assert "applying ConfigMap demo-config: 403 Forbidden" in ready["message"]
    events = [o for (k, _, _), o in kube.objects.items() if k == "Event"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "ApplyFailed")]
    kube.apply = real  # type: ignore[method-assign]
    st = await settle(op)
    events = [o for (k, _, _), o in kube.objects.items() if k == "Event"]
    assert (events[-1]["type"], events[-1]["reason"]) == ("Normal", "Running")


async def test_failed_membership_step_is_reported_and_retried(world):
    kube, nodes = world
    op = Operator(kube, nodes)
    await op.start()
    new_cluster(kube, 3)
    await op.changed()
    await settle(op)
    scale(kube, 5)
    await op.changed()
    real = nodes.perform
    fails = [RuntimeError("503 leader_unreachable")]

    async def flaky(action, seeds):
        if fails:
            raise fails.pop()
        return await real(action, seeds)

    nodes.perform = flaky  # type: ignore[method-assign]
    st = await op.tick()
    assert "AddingLearner failed: 503 leader_unreachable" in st["message"]
    st = await settle(op)
    assert len(voters(st)) == 5
