"""A refused queue command changes nothing (issue 16, item 6): `apply` used to turn an
internal error into a 400 after part of the state had changed, so that, for one, a dequeue
with a malformed visibility timeout took messages off their partition and left them neither
ready nor in flight. Every command, with each argument in turn replaced by a value of the
wrong type or range, must either be applied or be refused with the state untouched."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from distsync.services.base import CommandError
from distsync.services.queues import QueueService

Q = "jobs"
NOW = 1_000_000
BAD = ["x", -5, None, 1.5, [1], {"a": 1}, True]


def _state() -> tuple[QueueService, list[str]]:
    svc = QueueService()
    svc.apply("create", {"q": Q, "opts": {"partitions": 2, "visibility_ms": 1000}}, 1)
    svc.apply("enqueue", {"q": Q, "m": [[f"b{i}", None, None, None, 8] for i in range(6)],
                          "now": NOW}, 2)
    got = svc.apply("dequeue", {"q": Q, "c": "w1", "max": 2, "now": NOW}, 3)
    return svc, [m["receipt"] for m in got["messages"]]


def _templates(receipts: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("enqueue", {"q": Q, "m": [["b", None, None, None, 8]], "now": NOW}),
        ("dequeue", {"q": Q, "c": "w2", "max": 2, "vis": 500, "now": NOW, "rid": "r1",
                     "ack": [receipts[0]]}),
        ("ack", {"q": Q, "r": [receipts[0]], "now": NOW}),
        ("nack", {"q": Q, "r": [receipts[1]], "now": NOW, "delay": 10, "error": "e"}),
        ("heartbeat", {"q": Q, "c": "w1", "now": NOW}),
        ("leave", {"q": Q, "c": "w1", "now": NOW}),
        ("consumer_expire", {"q": Q, "c": ["w1"], "now": NOW + 10**9}),
        ("retention", {"q": Q, "now": NOW}),
        # A leader-proposed expiry of both leases, the second item malformed or not.
        ("expire", {"now": NOW + 10**9, "items": [[Q, "~2.0", receipts[0], 1],
                                                   [Q, "~2.1", receipts[1], 1]]}),
    ]


def _snap(svc: QueueService) -> bytes:
    return msgpack.packb(svc.snapshot(), use_bin_type=True)


def _cases() -> list[tuple[str, str, Any]]:
    _, receipts = _state()
    return [(op, key, bad) for op, args in _templates(receipts) for key in args
            for bad in BAD]


@pytest.mark.parametrize(("op", "key", "bad"), _cases())
def test_a_refused_command_changes_nothing(op: str, key: str, bad: Any) -> None:
    svc, receipts = _state()
    args = copy.deepcopy(dict(_templates(receipts))[op])
    args[key] = bad
    if op == "expire" and key == "items":  # one good item, then a bad one
        args[key] = [_templates(receipts)[-1][1]["items"][0], bad]
    before = _snap(svc)
    try:
        svc.apply(op, args, 10)
    except CommandError:
        assert _snap(svc) == before, f"{op} with {key}={bad!r} was refused but changed state"
