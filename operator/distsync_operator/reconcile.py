"""Decide what a DistSyncCluster needs next (pure: no I/O, no clock, no randomness).

`plan(owner, observed, defaults)` takes the custom resource and what the handlers observed
(the StatefulSet's replicas, each pod and what its node says on `/v1/status`, the ConfigMap,
the PVCs) and returns the objects to apply, the StatefulSet size for this pass, at most ONE
membership action, the PVCs to delete and the status to write. The handlers call it on
every event and every timer tick, so a restarted operator simply observes and carries on:
everything it needs is in the cluster, nothing in its memory.

Scaling, one step per pass:
- up:   grow the StatefulSet to spec.replicas (new pods start with --join), then for the
        lowest ordinal that is not a member: add it as a learner, then promote it once the
        leader says it has caught up; then the next ordinal.
- down: remove the highest-ordinal member through the leader (learners first); once the
        leader's committed configuration no longer lists it, shrink the StatefulSet so that
        its pod goes; its PVC is kept or deleted by `pvcRetention`; then the next.
- a membership change happens only with a known leader and when the healthy voters after
  the change are still a majority of the new configuration (otherwise: `QuorumAtRisk`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import resources as res
from .spec import Defaults, SpecCheck, parse_spec, quorum


@dataclass(frozen=True)
class Member:
    id: str
    addr: str
    voter: bool


@dataclass(frozen=True)
class NodeView:
    """What one node said about itself on `GET /v1/status`."""

    id: str
    addr: str
    role: str = "follower"
    term: int = 0
    leader: str | None = None
    ready: bool = False
    members: tuple[Member, ...] = ()

    @classmethod
    def from_status(cls, st: dict[str, Any]) -> NodeView:
        return cls(
            id=str(st["id"]), addr=str(st.get("addr", "")), role=str(st.get("role", "")),
            term=int(st.get("term", 0)), leader=st.get("leader"), ready=bool(st.get("ready")),
            members=tuple(Member(str(m["id"]), str(m.get("addr", "")), bool(m.get("voter")))
                          for m in st.get("members") or ()),
        )


@dataclass(frozen=True)
class PodView:
    ordinal: int
    name: str
    phase: str = "Running"
    deleting: bool = False
    endpoint: str | None = None  # podIP:port, how the operator reaches this node
    node: NodeView | None = None  # None: not reachable (yet)


@dataclass(frozen=True)
class Observed:
    statefulset_replicas: int | None  # None: no StatefulSet yet
    pods: dict[int, PodView] = field(default_factory=dict)
    config: dict[str, str] | None = None  # the ConfigMap's data, if it exists
    pvcs: dict[int, str] = field(default_factory=dict)  # ordinal -> PVC name
    # False makes the plan create the Secret (create-only, tolerant of "exists": the
    # operator's RBAC has no read access to Secrets). The driver sets it once the
    # StatefulSet and ConfigMap exist, which are created in the same pass as the Secret.
    secret_exists: bool = False
    # (size, storageClassName) of the StatefulSet's volumeClaimTemplate, if it exists: fixed
    # at creation (Kubernetes refuses to change it), so it wins over a later spec.storage.
    storage: tuple[str, str | None] | None = None


# -- actions (at most one membership action per pass) ---------------------------------------


@dataclass(frozen=True)
class AddLearner:
    id: str
    addr: str
    ordinal: int


@dataclass(frozen=True)
class Promote:
    id: str
    addr: str
    ordinal: int


@dataclass(frozen=True)
class RemoveMember:
    id: str
    ordinal: int


Action = AddLearner | Promote | RemoveMember


@dataclass
class Plan:
    objects: list[dict[str, Any]]
    replicas: int | None  # StatefulSet replicas this pass (None: leave objects alone)
    action: Action | None
    delete_pvcs: list[str]
    create_secret: bool
    step: str  # short reason, e.g. "AddingLearner"
    message: str
    phase: str
    leader: str | None
    members: list[dict[str, Any]]
    ready_replicas: int
    voters: int
    spec_check: SpecCheck

    def status(self, owner: dict[str, Any], previous: list[dict[str, Any]] | None,
               now: str) -> dict[str, Any]:
        """The `.status` to write (conditions keep their lastTransitionTime while
        unchanged)."""
        return build_status(self, owner, previous or [], now)


# -- helpers --------------------------------------------------------------------------------


def pick_leader(pods: dict[int, PodView]) -> NodeView | None:
    """The node that says it leads, in the highest term (a deposed leader may not know yet)."""
    leaders = [p.node for p in pods.values() if p.node is not None and p.node.role == "leader"]
    return max(leaders, key=lambda n: n.term, default=None)


def ordinal_index(name: str, pods: dict[int, PodView]) -> dict[str, int]:
    """node id -> ordinal: as each reachable node reports it, else from the pod name."""
    out: dict[str, int] = {}
    for p in pods.values():
        if p.node is not None:
            out[p.node.id] = p.ordinal
        out.setdefault(p.name, p.ordinal)
    return out


def ordinal_of(node_id: str, name: str, index: dict[str, int]) -> int | None:
    return index[node_id] if node_id in index else res.ordinal_in(name, node_id)


def healthy_ids(pods: dict[int, PodView]) -> set[str]:
    return {p.node.id for p in pods.values()
            if p.node is not None and p.node.ready and not p.deleting}


def change_is_safe(voters: set[str], healthy: set[str], action: Action) -> tuple[bool, str]:
    """Would the healthy voters still form a majority of the configuration after `action`?
    Adding a learner changes no quorum but needs a working one to commit."""
    up = voters & healthy
    if isinstance(action, AddLearner):
        after, up_after = voters, up
    elif isinstance(action, Promote):
        after, up_after = voters | {action.id}, up | {action.id}
    else:
        after, up_after = voters - {action.id}, up - {action.id}
    if not after:
        return False, "the last voter cannot be removed"
    need = quorum(len(after))
    if len(up_after) < need:
        return False, (f"{len(up_after)} of {len(after)} voters would be healthy after this "
                       f"change, a quorum needs {need}")
    return True, ""


# -- the plan -------------------------------------------------------------------------------


DEFAULTS = Defaults()


def plan(owner: dict[str, Any], obs: Observed, defaults: Defaults = DEFAULTS) -> Plan:
    name = owner["metadata"]["name"]
    check = parse_spec(name, owner.get("spec"), defaults)
    base = dict(objects=[], replicas=None, action=None, delete_pvcs=[], create_secret=False,
                leader=None, members=[], ready_replicas=0, voters=0, spec_check=check)
    if check.spec is None:
        return Plan(**base, step="InvalidSpec", message="; ".join(check.errors),
                    phase="Invalid")
    spec = check.spec
    if obs.storage is not None and obs.storage != (spec.storage_size, spec.storage_class):
        # spec.storage changed after creation (e.g. added where there was none, which the
        # CRD's immutability rule cannot see): keep what the StatefulSet has, say so, and
        # go on; re-rendering it would make every later StatefulSet update fail (422).
        size, cls = obs.storage
        spec = replace(spec, storage_size=size, storage_class=cls)
        kept = f"size {size}" + (f", storageClassName {cls}" if cls else "")
        check = replace(check, spec=spec, warnings=(
            f"spec.storage cannot change after creation (a StatefulSet's volumeClaimTemplates "
            f"are immutable): the pods keep {kept}", *check.warnings))
    n_want = spec.replicas
    leader = pick_leader(obs.pods)
    founding = int(obs.config[res.CFG_FOUNDING]) if obs.config else n_want
    bootstrapped = leader is not None or bool(
        obs.config and obs.config.get(res.CFG_JOIN) == "true")
    ready = sum(1 for p in obs.pods.values() if p.node is not None and p.node.ready)

    def finish(replicas: int, action: Action | None, step: str, message: str, phase: str,
               delete_pvcs: list[str] | None = None, voters: int = n_want,
               members: list[dict[str, Any]] | None = None,
               pdb_voters: int | None = None) -> Plan:
        if pdb_voters is None:
            pdb_voters = max(1, min(voters, n_want))
        objs = res.desired_objects(owner, spec, replicas, founding, bootstrapped,
                                   pdb_voters=pdb_voters)
        return Plan(objects=objs, replicas=replicas, action=action,
                    delete_pvcs=delete_pvcs or [], create_secret=not obs.secret_exists,
                    step=step, message=message, phase=phase,
                    leader=leader.id if leader else None, members=members or [],
                    ready_replicas=ready, voters=voters, spec_check=check)

    r_now = obs.statefulset_replicas
    # Before the first leader no member exists yet (status.replicas 0), and the founding
    # pods are the only voters to be: the PDB counts them, whatever spec.replicas says by
    # now (a `kubectl scale` during creation must not make founders evictable).
    if r_now is None:
        return finish(n_want, None, "Creating",
                      f"creating {n_want} founding pods", "Creating", voters=0,
                      pdb_voters=founding)
    if leader is None:
        if not bootstrapped:
            return finish(r_now, None, "WaitingForLeader",
                          "waiting for the founding pods to elect a leader", "Creating",
                          voters=0, pdb_voters=max(1, min(founding, r_now)))
        return finish(r_now, None, "NoLeader",
                      "no pod reports a leader; membership changes wait", "Degraded",
                      voters=0)

    index = ordinal_index(name, obs.pods)
    members = list(leader.members)
    voters = {m.id for m in members if m.voter}
    healthy = healthy_ids(obs.pods)
    ords = {m.id: ordinal_of(m.id, name, index) for m in members}
    member_view = [
        {"id": m.id, "addr": m.addr, "voter": m.voter, "ready": m.id in healthy,
         **({"ordinal": ords[m.id]} if ords[m.id] is not None else {})}
        for m in members
    ]

    def done(replicas: int, action: Action | None, step: str, message: str, phase: str,
             delete_pvcs: list[str] | None = None) -> Plan:
        return finish(replicas, action, step, message, phase, delete_pvcs,
                      voters=len(voters), members=member_view)

    def guarded(action: Action, step: str, message: str) -> Plan:
        ok, why = change_is_safe(voters, healthy, action)
        if not ok:
            return done(r_now, None, "QuorumAtRisk", f"{message} postponed: {why}", "Degraded")
        return done(r_now, action, step, message, "Scaling")

    known = [o for o in ords.values() if o is not None]
    top = max(known, default=-1)
    # A member whose pod cannot be identified keeps every pod: never shrink past it.
    unknown = any(o is None for o in ords.values())

    # 1. Scale down, second half: pods above every member go (their member was removed).
    target = max(n_want, top + 1, r_now if unknown else 0)
    if r_now > target:
        return done(target, None, "ShrinkingStatefulSet",
                    f"StatefulSet {r_now} -> {target} replicas", "Scaling")

    # 2. Delete PVCs of removed ordinals (policy Delete) once their pods are gone; before any
    #    growth, so a re-created pod never finds stale data.
    if spec.pvc_retention == "Delete":
        stale = sorted(pvc for o, pvc in obs.pvcs.items() if o >= r_now and o not in obs.pods)
        if stale:
            return done(r_now, None, "DeletingPVCs", f"deleting {', '.join(stale)}",
                        "Scaling", delete_pvcs=stale)

    # 3. Scale down, first half: remove the highest-ordinal member beyond spec.replicas,
    #    learners before voters.
    beyond = {m.id: o for m in members if (o := ords[m.id]) is not None and o >= n_want}
    if beyond:
        m = max((m for m in members if m.id in beyond),
                key=lambda m: (not m.voter, beyond[m.id]))
        return guarded(RemoveMember(m.id, beyond[m.id]), "RemovingMember",
                       f"removing {'voter' if m.voter else 'learner'} {m.id}")

    # 4. Scale up: pods first (they start with --join and wait), membership one at a time.
    if r_now < n_want:
        return done(n_want, None, "GrowingStatefulSet",
                    f"StatefulSet {r_now} -> {n_want} replicas", "Scaling")
    learners = sorted((m for m in members if not m.voter), key=lambda m: ords[m.id] or 0)
    if learners:
        m = learners[0]
        return guarded(Promote(m.id, m.addr, ords[m.id] or 0), "PromotingMember",
                       f"promoting learner {m.id} to voter")
    taken = set(known)
    for i in range(n_want):
        if i in taken:
            continue
        pod = obs.pods.get(i)
        if pod is None or pod.node is None or pod.deleting:
            return done(r_now, None, "WaitingForPod",
                        f"waiting for pod {name}-{i} to answer before adding it", "Scaling")
        return guarded(AddLearner(pod.node.id, pod.node.addr, i), "AddingLearner",
                       f"adding {pod.node.id} as a learner")

    # 5. Steady state.
    unready = sorted(m.id for m in members if m.id not in healthy)
    if unready:
        return done(r_now, None, "MembersNotReady", f"not ready: {', '.join(unready)}",
                    "Degraded")
    return done(r_now, None, "Reconciled", f"{len(voters)} voters, leader {leader.id}",
                "Running")


# -- status ---------------------------------------------------------------------------------


def _condition(ctype: str, ok: bool, reason: str, message: str, generation: int | None,
               previous: dict[str, dict[str, Any]], now: str) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status else now
    cond = {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def build_status(p: Plan, owner: dict[str, Any], previous: list[dict[str, Any]],
                 now: str) -> dict[str, Any]:
    gen = owner["metadata"].get("generation")
    prev = {c["type"]: c for c in previous if isinstance(c, dict) and "type" in c}
    chk = p.spec_check
    if chk.errors:
        spec_cond = _condition("SpecValid", False, "InvalidSpec", "; ".join(chk.errors), gen,
                               prev, now)
    elif chk.warnings:
        first = chk.warnings[0]
        reason = ("StorageImmutable" if first.startswith("spec.storage") else
                  "EvenReplicas" if "even" in first else
                  "SingleVoter" if first.startswith("spec.replicas=1:") else "Warning")
        spec_cond = _condition("SpecValid", True, reason, "; ".join(chk.warnings), gen, prev,
                               now)
    else:
        spec_cond = _condition("SpecValid", True, "Valid", "spec is valid", gen, prev, now)
    available = p.leader is not None
    steady = p.step == "Reconciled"
    progressing = p.phase in ("Creating", "Scaling")
    conditions = [
        spec_cond,
        _condition("Available", available, "LeaderElected" if available else "NoLeader",
                   f"leader {p.leader}" if available else "no leader known", gen, prev, now),
        _condition("Progressing", progressing, p.step if not steady else "Complete",
                   p.message, gen, prev, now),
        _condition("Ready", steady, "Reconciled" if steady else p.step, p.message, gen, prev,
                   now),
    ]
    name = owner["metadata"]["name"]
    status: dict[str, Any] = {
        "phase": p.phase,
        "leader": p.leader,
        "members": p.members,
        "replicas": p.voters,
        "readyReplicas": p.ready_replicas,
        "selector": res.selector_string(name),
        "message": p.message,
        "conditions": conditions,
    }
    if gen is not None:
        status["observedGeneration"] = gen
    return status
