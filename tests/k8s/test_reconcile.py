"""`reconcile.plan` as a pure function: create, scale up and down one step at a time, quorum
safety, an operator restarted in the middle of a change, spec errors as conditions."""

from __future__ import annotations

import pytest
from k8s_helpers import k8s_validate

from distsync_operator import resources as res
from distsync_operator.reconcile import (
    AddLearner,
    Member,
    NodeView,
    Observed,
    PodView,
    Promote,
    RemoveMember,
    change_is_safe,
    plan,
)
from distsync_operator.spec import Defaults, parse_spec

NOW = "2030-01-01T00:00:00Z"
LATER = "2030-01-01T00:05:00Z"


def cr(replicas: int = 3, name: str = "demo", **spec: object) -> dict:
    return {"apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
            "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "generation": 4},
            "spec": {"replicas": replicas, **spec}}


def world(sts: int | None, voters: list[int], learners: list[int] = (),
          pods: list[int] | None = None, down: list[int] = (), leader: int | None = 0,
          founding: int = 3, join: bool = True, pvcs: list[int] = ()) -> Observed:
    """A cluster named demo: `voters`/`learners` by ordinal as the leader sees them; a pod per
    ordinal in `pods` (default: range(sts)); `down` pods do not answer."""
    members = tuple(
        [Member(f"demo-{i}", f"demo-{i}.demo-peers.ns.svc.cluster.local:7001", True)
         for i in voters]
        + [Member(f"demo-{i}", f"demo-{i}.demo-peers.ns.svc.cluster.local:7001", False)
           for i in learners])
    ids = {m.id for m in members}
    pod_views = {}
    for i in (range(sts or 0) if pods is None else pods):
        node = None
        if i not in down:
            me = f"demo-{i}"
            node = NodeView(
                id=me, addr=f"{me}.demo-peers.ns.svc.cluster.local:7001",
                role="leader" if i == leader else "follower", term=3,
                leader=f"demo-{leader}" if leader is not None and me in ids else None,
                ready=me in ids and leader is not None,
                members=members if me in ids else ())
        pod_views[i] = PodView(i, f"demo-{i}", endpoint=f"demo-{i}.fake:7001", node=node)
    config = None if sts is None else {res.CFG_FOUNDING: str(founding),
                                       res.CFG_JOIN: "true" if join else "false"}
    return Observed(statefulset_replicas=sts, pods=pod_views, config=config,
                    pvcs={i: res.pvc_name("demo", i) for i in pvcs},
                    secret_exists=sts is not None)


def sts_of(p) -> dict:
    (sts,) = [o for o in p.objects if o["kind"] == "StatefulSet"]
    return sts


def obj_of(p, kind: str) -> dict:
    (o,) = [o for o in p.objects if o["kind"] == kind]
    return o


# -- create ---------------------------------------------------------------------------------


def test_create_builds_every_object_with_the_founding_size():
    p = plan(cr(3), world(None, voters=[], leader=None))
    assert p.action is None and p.phase == "Creating" and p.create_secret
    assert sts_of(p)["spec"]["replicas"] == 3
    cm = obj_of(p, "ConfigMap")["data"]
    assert cm[res.CFG_FOUNDING] == "3" and cm[res.CFG_JOIN] == "false"
    assert {o["kind"] for o in p.objects} == {
        "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    for o in p.objects:  # every built object is valid Kubernetes
        k8s_validate(o)
        assert o["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_waits_for_the_founders_to_elect_a_leader():
    obs = world(3, voters=[], leader=None, join=False)
    p = plan(cr(3), obs)
    assert (p.phase, p.step, p.action, p.replicas) == ("Creating", "WaitingForLeader", None, 3)
    assert obj_of(p, "ConfigMap")["data"][res.CFG_JOIN] == "false"


def test_steady_state_is_running_and_marks_the_cluster_bootstrapped():
    p = plan(cr(3), world(3, voters=[0, 1, 2], join=False))
    assert (p.phase, p.step, p.action, p.leader) == ("Running", "Reconciled", None, "demo-0")
    # Once a leader was seen, a pod that starts with an empty disk joins instead of
    # bootstrapping a second cluster.
    assert obj_of(p, "ConfigMap")["data"][res.CFG_JOIN] == "true"
    st = p.status(cr(3), None, NOW)
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Available"]["status"] == "True"
    assert st["observedGeneration"] == 4 and st["readyReplicas"] == 3 and st["replicas"] == 3
    assert st["selector"] == "app.kubernetes.io/name=distsync,app.kubernetes.io/instance=demo"


# -- scaling, one step at a time ------------------------------------------------------------


def step(p, sts: int, voters: list[int], learners: list[int]) -> tuple[int, list, list]:
    """Apply a plan's effect the way Kubernetes and the leader would."""
    sts = p.replicas
    voters, learners = list(voters), list(learners)
    if isinstance(p.action, AddLearner):
        learners.append(p.action.ordinal)
    elif isinstance(p.action, Promote):
        learners.remove(p.action.ordinal)
        voters.append(p.action.ordinal)
    elif isinstance(p.action, RemoveMember):
        (voters if p.action.ordinal in voters else learners).remove(p.action.ordinal)
    return sts, sorted(voters), sorted(learners)


def run(target: int, sts: int, voters: list[int], learners: list[int] = (),
        limit: int = 20) -> list[tuple[str, object]]:
    trace = []
    learners = list(learners)
    for _ in range(limit):
        p = plan(cr(target), world(sts, voters, learners))
        assert p.action is None or p.replicas == sts, "never resize and change members at once"
        if p.step == "Reconciled":
            return trace
        trace.append((p.step, p.action.id if p.action else p.replicas))
        # Invariants of every step: the PDB never allows losing a quorum of current voters.
        pdb = obj_of(p, "PodDisruptionBudget")["spec"]["maxUnavailable"]
        assert pdb <= (min(len(voters), target) - 1) // 2
        sts, voters, learners = step(p, sts, voters, learners)
        assert len(learners) <= 1, "one membership change at a time"
    raise AssertionError(f"did not converge: {trace}")


def test_scale_up_three_to_five_adds_learners_then_promotes_one_at_a_time():
    assert run(5, 3, [0, 1, 2]) == [
        ("GrowingStatefulSet", 5),
        ("AddingLearner", "demo-3"), ("PromotingMember", "demo-3"),
        ("AddingLearner", "demo-4"), ("PromotingMember", "demo-4"),
    ]


def test_scale_down_five_to_three_removes_the_highest_member_before_its_pod():
    assert run(3, 5, [0, 1, 2, 3, 4]) == [
        ("RemovingMember", "demo-4"), ("ShrinkingStatefulSet", 4),
        ("RemovingMember", "demo-3"), ("ShrinkingStatefulSet", 3),
    ]


def test_scale_one_to_three_and_back():
    assert [s for s, _ in run(3, 1, [0])] == [
        "GrowingStatefulSet", "AddingLearner", "PromotingMember", "AddingLearner",
        "PromotingMember"]
    assert run(1, 3, [0, 1, 2]) == [
        ("RemovingMember", "demo-2"), ("ShrinkingStatefulSet", 2),
        ("RemovingMember", "demo-1"), ("ShrinkingStatefulSet", 1)]


def test_scale_up_waits_for_the_new_pod_to_answer():
    obs = world(5, voters=[0, 1, 2], pods=[0, 1, 2, 3, 4], down=[3, 4])
    p = plan(cr(5), obs)
    assert (p.step, p.action) == ("WaitingForPod", None)
    assert p.phase == "Scaling"


def test_direction_change_mid_scale_up_removes_the_learner_first():
    # 3 -> 5 was interrupted by 5 -> 3 while demo-3 was a learner.
    assert run(3, 5, [0, 1, 2], learners=[3]) == [
        ("ShrinkingStatefulSet", 4), ("RemovingMember", "demo-3"),
        ("ShrinkingStatefulSet", 3)]


# -- quorum safety --------------------------------------------------------------------------


def test_removing_a_healthy_voter_that_would_leave_no_quorum_is_postponed():
    obs = world(5, voters=[0, 1, 2, 3, 4], down=[0, 1], leader=2)
    p = plan(cr(3), obs)
    assert p.action is None and p.step == "QuorumAtRisk" and p.phase == "Degraded"
    assert "quorum needs 3" in p.message
    cond = {c["type"]: c for c in p.status(cr(3), None, NOW)["conditions"]}["Progressing"]
    assert cond["status"] == "False" and cond["reason"] == "QuorumAtRisk"


def test_removing_an_unhealthy_voter_is_allowed_when_the_rest_keep_quorum():
    obs = world(5, voters=[0, 1, 2, 3, 4], down=[4], leader=0)
    p = plan(cr(3), obs)
    assert p.action == RemoveMember("demo-4", 4)


def test_promotion_waits_while_the_voters_are_not_healthy():
    obs = world(4, voters=[0, 1, 2], learners=[3], down=[1, 2], leader=0)
    p = plan(cr(5), obs)
    # Growing comes first (the pods are cheap), promotion is what is held back.
    assert p.step == "GrowingStatefulSet"
    obs = world(5, voters=[0, 1, 2], learners=[3], down=[1, 2, 4], leader=0)
    p = plan(cr(5), obs)
    assert p.action is None and p.step == "QuorumAtRisk"


@pytest.mark.parametrize("voters,healthy,action,ok", [
    ({"a", "b", "c"}, {"a", "b", "c"}, RemoveMember("c", 2), True),
    ({"a", "b", "c"}, {"a", "b"}, RemoveMember("b", 1), False),   # {a,c}: 1 of 2 healthy
    ({"a", "b", "c"}, {"a", "b"}, RemoveMember("c", 2), True),    # dropping the dead one
    ({"a"}, {"a"}, RemoveMember("a", 0), False),                  # never the last voter
    ({"a", "b", "c"}, {"a"}, AddLearner("d", "d:1", 3), False),   # nothing could commit
    ({"a", "b", "c"}, {"a", "b"}, Promote("d", "d:1", 3), True),  # 3 of 4 healthy
    ({"a", "b"}, {"a"}, Promote("c", "c:1", 2), True),            # 2 of 3 healthy
])
def test_change_is_safe(voters, healthy, action, ok):
    assert change_is_safe(voters, healthy, action)[0] is ok


def test_no_leader_means_no_membership_change():
    obs = world(5, voters=[0, 1, 2, 3, 4], leader=None)
    p = plan(cr(3), obs)
    assert p.action is None and p.replicas == 5 and p.phase == "Degraded"
    assert obj_of(p, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 0


def test_pdb_keeps_a_quorum():
    for n, allowed in [(1, 0), (3, 1), (5, 2), (7, 3), (9, 4)]:
        voters = list(range(n))
        p = plan(cr(n), world(n, voters))
        assert obj_of(p, "PodDisruptionBudget")["spec"]["maxUnavailable"] == allowed


# -- operator restart in the middle of a change ---------------------------------------------


def test_restart_after_removal_before_shrink_shrinks():
    # The operator died after demo-4 left the configuration but before the StatefulSet shrank.
    p = plan(cr(3), world(5, voters=[0, 1, 2, 3]))
    assert (p.step, p.replicas, p.action) == ("ShrinkingStatefulSet", 4, None)


def test_restart_after_add_learner_promotes_it():
    p = plan(cr(5), world(5, voters=[0, 1, 2], learners=[3]))
    assert p.action == Promote("demo-3", "demo-3.demo-peers.ns.svc.cluster.local:7001", 3)


def test_restart_keeps_the_founding_size_from_the_configmap():
    # Created with 3, now at 5: pods 3 and 4 must keep joining (founding stays 3).
    p = plan(cr(5), world(5, voters=[0, 1, 2, 3, 4], founding=3))
    assert obj_of(p, "ConfigMap")["data"][res.CFG_FOUNDING] == "3"


def test_plans_are_deterministic():
    obs = world(5, voters=[0, 1, 2, 3, 4])
    a, b = plan(cr(3), obs), plan(cr(3), obs)
    assert (a.objects, a.action, a.step) == (b.objects, b.action, b.step)


def test_members_that_cannot_be_placed_block_shrinking():
    obs = world(5, voters=[0, 1, 2])
    leader = obs.pods[0].node
    odd = NodeView(**{**leader.__dict__,
                      "members": leader.members + (Member("stranger", "x:1", True),)})
    obs.pods[0] = PodView(0, "demo-0", endpoint="demo-0.fake:7001", node=odd)
    p = plan(cr(3), obs)
    assert p.replicas == 5 and p.step != "ShrinkingStatefulSet"


# -- PVCs -----------------------------------------------------------------------------------


def test_pvcs_of_removed_pods_are_deleted_by_policy():
    obs = world(3, voters=[0, 1, 2], pvcs=[0, 1, 2, 3, 4])
    assert plan(cr(3), obs).delete_pvcs == []  # Retain (default)
    p = plan(cr(3, pvcRetention="Delete"), obs)
    assert p.delete_pvcs == ["data-demo-3", "data-demo-4"] and p.step == "DeletingPVCs"
    # ... and before growing again, so that a re-created pod never finds stale data
    p = plan(cr(5, pvcRetention="Delete"), obs)
    assert p.step == "DeletingPVCs" and p.replicas == 3


def test_pvc_retention_reaches_the_statefulset():
    for policy in ("Retain", "Delete"):
        p = plan(cr(3, pvcRetention=policy), world(3, [0, 1, 2]))
        assert sts_of(p)["spec"]["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": policy, "whenScaled": policy}


# -- spec validation ------------------------------------------------------------------------


@pytest.mark.parametrize("spec,needle", [
    ({"replicas": 0}, "between 1 and 9"),
    ({"replicas": 10}, "between 1 and 9"),
    ({"replicas": "three"}, "must be an integer"),
    ({"replicas": 3, "pvcRetention": "Sometimes"}, "pvcRetention"),
    ({"replicas": 3, "redis": {"mode": "External"}}, "redis.url"),
    ({"replicas": 3, "redis": {"mode": "InChart", "url": "redis://r:6379"}}, "only for mode"),
    ({"replicas": 3, "storage": {"size": "lots"}}, "storage.size"),
    ({"replicas": 3, "image": "has space"}, "spec.image"),
])
def test_spec_errors_become_a_condition_and_nothing_is_touched(spec, needle):
    owner = cr(**spec) if "replicas" not in spec else {**cr(), "spec": spec}
    p = plan(owner, world(3, [0, 1, 2]))
    assert p.phase == "Invalid" and p.objects == [] and p.action is None and p.replicas is None
    st = p.status(owner, None, NOW)
    cond = {c["type"]: c for c in st["conditions"]}["SpecValid"]
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert needle in cond["message"]


def test_bad_name_is_an_error():
    p = plan(cr(3, name="x" * 41), world(None, [], leader=None))
    assert p.phase == "Invalid" and "metadata.name" in p.message


def test_even_replicas_are_allowed_with_a_clear_warning():
    p = plan(cr(4), world(4, [0, 1, 2, 3]))
    cond = {c["type"]: c for c in p.status(cr(4), None, NOW)["conditions"]}["SpecValid"]
    assert cond["status"] == "True" and cond["reason"] == "EvenReplicas"
    assert "odd" in cond["message"] and "quorum is 3 of 4" in cond["message"]


def test_defaults_fill_image_and_in_chart_redis():
    d = Defaults(image="reg/distsync:9", in_chart_redis_url="redis://r.ns.svc:6379/0")
    chk = parse_spec("demo", {"replicas": 3}, d)
    assert chk.spec.image == "reg/distsync:9"
    assert chk.spec.redis_url == "redis://r.ns.svc:6379/0"
    p = plan(cr(3), world(None, [], leader=None), d)
    assert obj_of(p, "ConfigMap")["data"]["DISTSYNC_REDIS_URL"] == "redis://r.ns.svc:6379/0"


def test_condition_transition_time_is_kept_while_unchanged():
    p = plan(cr(3), world(3, [0, 1, 2]))
    first = p.status(cr(3), None, NOW)["conditions"]
    again = p.status(cr(3), first, LATER)["conditions"]
    assert [c["lastTransitionTime"] for c in again] == [NOW] * 4
    degraded = plan(cr(3), world(3, [0, 1, 2], down=[2])).status(cr(3), first, LATER)
    ready = {c["type"]: c for c in degraded["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["lastTransitionTime"] == LATER
    assert ready["reason"] == "MembersNotReady"


def test_scaling_before_the_first_leader_keeps_the_founders_pdb():
    """F7 of issue 18: `kubectl scale --replicas=9` before the first leader published a PDB
    for 9 voters (every founding pod evictable) and status.replicas 9 with no member."""
    owner = cr(9)
    p = plan(owner, world(sts=3, voters=[], leader=None, join=False, founding=3))
    assert p.step == "WaitingForLeader" and p.replicas == 3
    assert obj_of(p, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert p.status(owner, [], NOW)["replicas"] == 0
    created = plan(cr(5), Observed(statefulset_replicas=None))
    assert created.status(cr(5), [], NOW)["replicas"] == 0
    assert obj_of(created, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 2


def test_storage_changed_after_creation_keeps_the_statefulsets_and_says_so():
    """F6 of issue 18: spec.storage added after creation was rendered into the StatefulSet's
    (immutable) volumeClaimTemplates, and every later update of it failed with 422."""
    owner = cr(5, storage={"size": "2Gi", "storageClassName": "fast"})
    obs = world(sts=3, voters=[0, 1, 2])
    obs = Observed(**{**obs.__dict__, "storage": ("1Gi", None)})
    p = plan(owner, obs)
    assert p.step == "GrowingStatefulSet" and p.replicas == 5
    pvc = sts_of(p)["spec"]["volumeClaimTemplates"][0]["spec"]
    assert pvc["resources"]["requests"] == {"storage": "1Gi"}
    assert "storageClassName" not in pvc
    cond = {c["type"]: c for c in p.status(owner, [], NOW)["conditions"]}["SpecValid"]
    assert cond["status"] == "True" and cond["reason"] == "StorageImmutable"
    assert "keep size 1Gi" in cond["message"]


def test_one_replica_says_that_drain_will_wait():
    """Issue 18: a one-replica cluster's PDB (maxUnavailable 0) blocks `kubectl drain`: the
    SpecValid condition says so."""
    p = plan(cr(1), world(sts=1, voters=[0], founding=1))
    assert obj_of(p, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 0
    cond = {c["type"]: c for c in p.status(cr(1), [], NOW)["conditions"]}["SpecValid"]
    assert cond["status"] == "True" and cond["reason"] == "SingleVoter"
    assert "kubectl drain" in cond["message"]
