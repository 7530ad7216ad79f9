"""Quotas as part of the replicated state machine (services/quotas.py): decided from the
replicated state and limits alone, so every replica refuses the same commands, and a replica
restored from a snapshot refuses exactly what one that replayed the log does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.kv import KVStore
from distsync.services.locks import LockService
from distsync.services.queues import QueueService
from distsync.services.registry import Registry, encode_command


def registry() -> Registry:
    return Registry([KVStore(), QueueService(), LockService()])


LIMITS = {"max_sessions_per_client": 2, "max_sessions": 3, "max_queues": 2, "max_locks": 2,
          "max_waiters": 1, "max_kv_keys": 3, "max_state_bytes": 1 << 30}


def cmd(service: str, op: str, args: dict[str, Any]) -> bytes:
    return encode_command(service, op, args, None)


@st.composite
def commands(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["put", "del", "open", "close", "acq", "rel", "qc", "qd",
                                 "alarm"]))
    if kind == "put":
        return cmd("kv", "put", {"key": draw(st.sampled_from("abcde")), "value": 1, "sz": 10})
    if kind == "del":
        return cmd("kv", "delete", {"key": draw(st.sampled_from("abcde"))})
    if kind == "open":
        return cmd("locks", "open", {"ttl_ms": 10_000, "owner": draw(st.sampled_from("xy"))})
    sid = f"s{draw(st.integers(1, 30))}"
    if kind == "close":
        return cmd("locks", "close", {"session": sid})
    if kind in ("acq", "rel"):
        lock = draw(st.sampled_from(["l1", "l2", "l3"]))
        if kind == "rel":
            return cmd("locks", "release", {"session": sid, "lock": lock})
        return cmd("locks", "acquire", {"session": sid, "lock": lock, "wait_ms": 1000,
                                        "deadline_ms": 10**12})
    if kind in ("qc", "qd"):
        q = draw(st.sampled_from(["q1", "q2", "q3"]))
        return cmd("queues", "create" if kind == "qc" else "delete", {"q": q, "opts": {}}
                   if kind == "qc" else {"q": q})
    return cmd("quota", "alarm", {"on": draw(st.booleans())})


@settings(max_examples=120, deadline=None)
@given(st.lists(commands(), max_size=40), st.data())
def test_replicas_refuse_alike_and_snapshots_carry_the_counts(log: list[bytes], data: Any) -> None:
    a, b = registry(), registry()
    first = cmd("quota", "set", {"limits": LIMITS})
    a.apply(first, 1)
    b.apply(first, 1)
    cut = data.draw(st.integers(0, len(log)))
    got_a = [a.apply(d, i + 2) for i, d in enumerate(log)]
    got_b = [b.apply(d, i + 2) for i, d in enumerate(log[:cut])]
    c = registry()
    c.restore(b.snapshot())
    got_b += [c.apply(d, i + 2 + cut) for i, d in enumerate(log[cut:])]
    assert got_a == got_b
    assert a.snapshot() == c.snapshot()
    locks = a.services["locks"]
    assert len(a.services["kv"].data) <= LIMITS["max_kv_keys"]
    assert len(locks.sessions) <= LIMITS["max_sessions"]
    for owner in "xy":
        assert sum(1 for s in locks.sessions.values() if s.owner == owner) == locks.owned(owner)
        assert locks.owned(owner) <= LIMITS["max_sessions_per_client"]
    assert len(a.services["queues"].queues) <= LIMITS["max_queues"]
    assert len(locks.locks) <= LIMITS["max_locks"]
    assert len(locks.waits) <= LIMITS["max_waiters"]


def test_alarm_refuses_growth_but_not_deletes_and_clears() -> None:
    reg = registry()
    reg.apply(cmd("kv", "put", {"key": "a", "value": 1}), 1)
    reg.apply(cmd("quota", "alarm", {"on": True}), 2)
    res = reg.apply(cmd("kv", "put", {"key": "b", "value": 1}), 3)
    assert (res["error"], res["status"], res["limit"]) == (
        "quota_exceeded", 507, "max_state_bytes")
    assert reg.apply(cmd("locks", "open", {"ttl_ms": 10_000}), 4)["status"] == 507
    assert reg.apply(cmd("kv", "delete", {"key": "a"}), 5)["deleted"] is True
    reg.apply(cmd("quota", "alarm", {"on": False}), 6)
    assert reg.apply(cmd("kv", "put", {"key": "b", "value": 1}), 7)["revision"] == 7


def test_leader_raises_and_clears_the_alarm_by_weight() -> None:
    reg = registry()
    quota = reg.quota
    quota.desired = {"max_state_bytes": 2000}
    assert quota.due_commands(0) == [("set", {"limits": {"max_state_bytes": 2000}})]
    reg.apply(cmd("quota", "set", {"limits": {"max_state_bytes": 2000}}), 1)
    assert quota.due_commands(0) == []
    for i in range(3):
        reg.apply(cmd("kv", "put", {"key": f"k{i}", "value": "x", "sz": 1000}), 2 + i)
    due = quota.due_commands(0)
    assert [(op, a["on"]) for op, a in due] == [("alarm", True)]
    reg.apply(encode_command("quota", *due[0], None), 9)
    assert quota.status()["alarms"] == ["NOSPACE"]
    for i in range(3):
        reg.apply(cmd("kv", "delete", {"key": f"k{i}"}), 10 + i)
    assert [(op, a["on"]) for op, a in quota.due_commands(0)] == [("alarm", False)]
