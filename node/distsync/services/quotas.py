"""Quotas, enforced by the replicated state machine so that they are exact and the same on
every node (README "Quotas").

Two kinds:

* **Counts** (sessions per client and in all, queues, locks, lock waiters, kv keys). Before a
  command that would add one is applied, `admit` compares the count in the replicated state
  with the replicated limit and refuses with 429 `quota_exceeded` naming the limit. Being part
  of apply, the check cannot race: a thousand concurrent session opens by one client all go
  through the log in one order, and exactly `max_sessions_per_client` of them pass.
* **Total state bytes**, like etcd's `--quota-backend-bytes` and its NOSPACE alarm. The
  leader weighs the state (the services' size estimates, `Registry.state_bytes`) every timer
  tick and, when it reaches `max_state_bytes`, proposes `alarm on`; from that entry on, every
  node refuses commands that would grow the state with 507 `quota_exceeded`, while reads,
  deletes, acks, releases and closes still pass. Once the state is below 95% of the quota the
  leader proposes `alarm off`. The alarm is in `/v1/status` and the metrics.

The limits themselves are replicated: each node has them in its configuration, and a leader
whose configuration differs from the replicated limits proposes `set` (so configure every
node alike; a new leader with other flags changes them). Both commands are idempotent, as
leader-driven commands must be. Refusals for quota are not remembered under their request id
(registry.py): they changed nothing, so a retry once there is room applies.
"""

from __future__ import annotations

from typing import Any

from .base import CommandError

DEFAULT_LIMITS: dict[str, int] = {
    "max_sessions_per_client": 1_000,
    "max_sessions": 100_000,
    "max_queues": 1_000,
    "max_locks": 100_000,
    "max_waiters": 100_000,
    "max_kv_keys": 1_000_000,
    "max_state_bytes": 512 << 20,
}
CLEAR_RATIO = 0.95  # the alarm clears below this share of max_state_bytes

# Commands that add to the state, refused while the space alarm is on.
GROWING = frozenset({
    ("kv", "put"), ("queues", "create"), ("queues", "enqueue"), ("locks", "open"),
    ("locks", "acquire"), ("elections", "campaign"), ("elections", "proclaim"),
    ("semaphores", "acquire"), ("barriers", "set"), ("barriers", "enter"),
})


def quota_error(limit: str, value: int, have: int, what: str, status: int = 429) -> CommandError:
    return CommandError(
        "quota_exceeded",
        f"{what}: {have} of the quota {limit}={value}; nothing was applied. Free some "
        "(close sessions, delete queues or keys, release locks) and retry",
        status, limit=limit, quota=value, current=have,
    )


class QuotaService:
    name = "quota"

    def __init__(self, registry: Any = None) -> None:
        self.registry = registry  # the Registry whose services are counted
        self.limits: dict[str, int] = dict(DEFAULT_LIMITS)
        self.alarm = False  # NOSPACE: replicated
        self.desired: dict[str, int] | None = None  # this node's configuration (volatile)
        self.refused: dict[str, int] = {}  # refusals by limit (volatile, for metrics)

    # -- commands ------------------------------------------------------------------------

    def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
        if op == "set":
            limits = args.get("limits")
            if not isinstance(limits, dict) or not all(
                    isinstance(k, str) and type(v) is int and v > 0 for k, v in limits.items()):
                raise CommandError("invalid_command", "limits must map names to integers > 0",
                                   400)
            self.limits = {**DEFAULT_LIMITS, **limits}
            return {"limits": self.limits}
        if op == "alarm":
            self.alarm = args.get("on") is True
            return {"alarm": self.alarm}
        raise CommandError("bad_op", f"unknown quota op {op!r}", 400)

    def admit(self, service: str, op: str, args: Any) -> None:
        """Raise quota_exceeded if applying this command would pass a limit."""
        if (service, op) not in GROWING or self.registry is None:
            return
        try:
            self._admit(service, op, args)
        except CommandError as e:
            lim = e.extra.get("limit", "?")
            self.refused[lim] = self.refused.get(lim, 0) + 1
            raise

    def _admit(self, service: str, op: str, args: Any) -> None:
        if self.alarm:
            raise CommandError(
                "quota_exceeded",
                "the state has reached its quota max_state_bytes="
                f"{self.limits['max_state_bytes']} (NOSPACE alarm): writes that add state are "
                "refused until space is freed; reads, deletes, acks, releases and closes still "
                "work", 507, limit="max_state_bytes", quota=self.limits["max_state_bytes"],
            )
        if not isinstance(args, dict):
            return
        svcs = self.registry.services
        lim = self.limits
        if service == "kv":
            kv = svcs.get("kv")
            if kv is not None and args.get("key") not in kv.data \
                    and len(kv.data) >= lim["max_kv_keys"]:
                raise quota_error("max_kv_keys", lim["max_kv_keys"], len(kv.data), "kv keys")
        elif service == "queues":
            qs = svcs.get("queues")
            if op == "create" and qs is not None and args.get("q") not in qs.queues \
                    and len(qs.queues) >= lim["max_queues"]:
                raise quota_error("max_queues", lim["max_queues"], len(qs.queues), "queues")
        elif service == "locks":
            locks = svcs.get("locks")
            if locks is None:
                return
            if op == "open":
                if len(locks.sessions) >= lim["max_sessions"]:
                    raise quota_error("max_sessions", lim["max_sessions"], len(locks.sessions),
                                      "open sessions in the cluster")
                owner = args.get("owner")
                have = locks.owned(owner) if isinstance(owner, str) else 0
                if have >= lim["max_sessions_per_client"]:
                    raise quota_error("max_sessions_per_client", lim["max_sessions_per_client"],
                                      have, f"open sessions of client {owner}")
            else:
                name, sid = args.get("lock"), args.get("session")
                lk = locks.locks.get(name)
                if lk is None:
                    if len(locks.locks) >= lim["max_locks"]:
                        raise quota_error("max_locks", lim["max_locks"], len(locks.locks),
                                          "locks held or waited for")
                elif (args.get("wait_ms") and sid not in lk.holders
                        and (lk.holders or lk.queue)
                        and len(locks.waits) >= lim["max_waiters"]):
                    raise quota_error("max_waiters", lim["max_waiters"], len(locks.waits),
                                      "waiting lock requests")
        elif service == "semaphores":  # semaphores count as locks (max_locks, max_waiters)
            sems = svcs.get("semaphores")
            if sems is None or args.get("semaphore") in sems.sems:
                if sems is not None and args.get("wait_ms") and \
                        len(sems.waits) >= lim["max_waiters"]:
                    raise quota_error("max_waiters", lim["max_waiters"], len(sems.waits),
                                      "waiting semaphore requests")
                return
            if len(sems.sems) >= lim["max_locks"]:
                raise quota_error("max_locks", lim["max_locks"], len(sems.sems),
                                  "semaphores held or waited for")
        else:  # a service that counts its own (services/elections.py)
            hook = getattr(svcs.get(service), "admit", None)
            if hook is not None:
                hook(op, args, lim)

    # -- leader-driven -------------------------------------------------------------------

    def on_leader_start(self, now_ms: int, term: int) -> None:
        pass

    def config_pending(self) -> bool:
        """Whether this node's configured limits differ from those in force."""
        return self.desired is not None and {**DEFAULT_LIMITS, **self.desired} != self.limits

    def due_commands(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        if self.config_pending():
            out.append(("set", {"limits": dict(self.desired or {})}))
        if self.registry is not None:
            size, quota = self.registry.state_bytes(), self.limits["max_state_bytes"]
            if not self.alarm and size >= quota:
                out.append(("alarm", {"on": True, "bytes": size}))
            elif self.alarm and size < CLEAR_RATIO * quota:
                out.append(("alarm", {"on": False, "bytes": size}))
        return out

    # -- state ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        size = self.registry.state_bytes() if self.registry is not None else 0
        return {"alarms": ["NOSPACE"] if self.alarm else [], "state_bytes": size,
                "quotas": dict(self.limits)}

    def snapshot(self) -> Any:
        return {"limits": self.limits, "alarm": self.alarm}

    def restore(self, data: Any) -> None:
        data = data or {}
        self.limits = {**DEFAULT_LIMITS, **(data.get("limits") or {})}
        self.alarm = bool(data.get("alarm", False))
