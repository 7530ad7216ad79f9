"""Routes committed commands to services, and makes retried commands apply at most once.

A command carries an optional request id. The first time an id is applied its result is
remembered; a retry with the same id (say after a timeout, or after the leader changed and the
client re-sent) gets the remembered result without applying again. The table is part of the
replicated state and of snapshots, and is bounded by count, oldest first, so every node evicts
the same ids at the same index.

An id is bound to the operation (service and op) that first used it: reusing it for a
different operation is a client bug and gets 409 `request_id_reused`, not the other
operation's result. Arguments are not compared, because a legitimate retry may differ in
leader-supplied fields such as the proposal time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgpack

from .base import CommandError, StateMachine

DEDUPE_LIMIT = 100_000


def encode_command(service: str, op: str, args: dict[str, Any], request_id: str | None) -> bytes:
    return msgpack.packb({"s": service, "o": op, "a": args, "r": request_id}, use_bin_type=True)


class Registry:
    def __init__(self, services: list[StateMachine], dedupe_limit: int = DEDUPE_LIMIT):
        self.services = {s.name: s for s in services}
        self.dedupe: OrderedDict[str, Any] = OrderedDict()
        self.dedupe_limit = dedupe_limit

    def apply(self, data: bytes, index: int) -> Any:
        try:
            cmd = msgpack.unpackb(data, raw=False)
            service, op, args, rid = cmd["s"], cmd["o"], cmd["a"], cmd.get("r")
        except Exception:  # noqa: BLE001 - a malformed entry must not stop the apply loop
            return {"error": "bad_command", "message": "undecodable command", "status": 400}
        if rid is not None and rid in self.dedupe:
            first_op, first_result = self.dedupe[rid]
            if first_op != f"{service}.{op}":
                return {
                    "error": "request_id_reused",
                    "message": f"Request-Id was already used for {first_op}",
                    "status": 409,
                }
            return first_result
        svc = self.services.get(service)
        if svc is None:
            result: Any = {"error": "bad_service", "message": service, "status": 400}
        else:
            try:
                result = svc.apply(op, args, index)
            except CommandError as e:
                result = e.to_result()
        if rid is not None:
            self.dedupe[rid] = (f"{service}.{op}", result)
            while len(self.dedupe) > self.dedupe_limit:
                self.dedupe.popitem(last=False)
        return result

    def snapshot(self) -> bytes:
        return msgpack.packb(
            {
                "services": {n: s.snapshot() for n, s in self.services.items()},
                "dedupe": list(self.dedupe.items()),
            },
            use_bin_type=True,
        )

    def restore(self, data: bytes) -> None:
        if not data:
            for s in self.services.values():
                s.restore(s.__class__().snapshot())
            self.dedupe = OrderedDict()
            return
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        for n, s in self.services.items():
            if n in obj["services"]:
                s.restore(obj["services"][n])
        self.dedupe = OrderedDict((k, (v[0], v[1])) for k, v in obj["dedupe"])
