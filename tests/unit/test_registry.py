"""Registry (command routing + request-id dedupe) as a pure replicated state machine.

Every node applies the same log through its Registry, and a restarted or lagging node starts
from a snapshot instead; both paths must give byte-identical state, including the dedupe
table and its eviction order, or replicas would answer retried requests differently.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.kv import KVStore
from distsync.services.registry import Registry, encode_command

RIDS = [f"r{i}" for i in range(8)]


@st.composite
def entries(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["kv"] * 8 + ["bad_service", "bad_op", "garbage"]))
    if kind == "garbage":
        return draw(st.sampled_from([b"", b"\xc1", b"not msgpack", b"\x93\x01\x02"]))
    rid = draw(st.sampled_from([*RIDS, None]))
    key = draw(st.sampled_from(["a", "b", "c"]))
    if kind == "bad_service":
        return encode_command("nope", "put", {"key": key, "value": 1}, rid)
    if kind == "bad_op":
        return encode_command("kv", "explode", {"key": key}, rid)
    op = draw(st.sampled_from(["put", "put", "delete"]))
    args: dict[str, Any] = {"key": key}
    if op == "put":
        args["value"] = draw(st.integers(0, 5) | st.sampled_from(["s", None, [1, {"x": 2}]]))
    if draw(st.booleans()):
        args["expect_revision"] = draw(st.integers(0, 12))
    # The request's fingerprint: None (an old entry) or one of two requests.
    fp = draw(st.sampled_from([None, b"fp-one", b"fp-two"]))
    return encode_command("kv", op, args, rid, fp, 1000 if rid is not None else None)


logs = st.lists(entries(), max_size=30)
limits = st.integers(1, 5)


def registry(limit: int) -> Registry:
    return Registry([KVStore()], dedupe_limit=limit)


def run(reg: Registry, log: list[bytes], start: int = 1) -> list[Any]:
    return [reg.apply(data, start + i) for i, data in enumerate(log)]


def fp_of(data: bytes) -> bytes | None:
    return msgpack.unpackb(data, raw=False).get("f")


def same_request(remembered: tuple[Any, ...], data: bytes) -> bool:
    """The rule: same operation, and the same fingerprint where both have one."""
    fp, first_fp = fp_of(data), remembered[2]
    return remembered[0] == op_of(data) and (fp is None or first_fp is None or fp == first_fp)


def rid_of(data: bytes) -> str | None:
    try:
        return msgpack.unpackb(data, raw=False)["r"]
    except Exception:  # noqa: BLE001 - garbage entries have none
        return None


@settings(max_examples=150, deadline=None)
@given(logs, limits)
def test_same_log_same_snapshot_and_results(log: list[bytes], limit: int) -> None:
    a, b = registry(limit), registry(limit)
    assert run(a, log) == run(b, log)
    assert a.snapshot() == b.snapshot()
    assert list(a.dedupe) == list(b.dedupe)


@settings(max_examples=150, deadline=None)
@given(logs, limits, st.data())
def test_snapshot_restore_mid_log_equals_never_snapshotting(
    log: list[bytes], limit: int, data: Any
) -> None:
    cut = data.draw(st.integers(0, len(log)))
    straight = registry(limit)
    want = run(straight, log)

    first = registry(limit)
    got = run(first, log[:cut])
    restored = registry(limit)
    restored.restore(first.snapshot())
    assert restored.snapshot() == first.snapshot()
    got += run(restored, log[cut:], start=cut + 1)

    assert got == want
    assert restored.snapshot() == straight.snapshot()
    # Eviction continues identically after a restore: same ids, same order.
    assert list(restored.dedupe) == list(straight.dedupe)


def op_of(data: bytes) -> str:
    import msgpack

    cmd = msgpack.unpackb(data, raw=False)
    return f"{cmd['s']}.{cmd['o']}"


@settings(max_examples=150, deadline=None)
@given(logs, limits)
def test_dedupe_answers_repeats_and_bounds_the_table(log: list[bytes], limit: int) -> None:
    """A command whose id is still remembered returns the remembered result and changes
    nothing; a new (or evicted) id is applied and remembered; the table keeps at most
    `limit` ids, dropping the oldest first, identically on every replica."""
    reg = registry(limit)
    order: list[str] = []  # model: remembered ids, oldest first
    for index, data in enumerate(log, start=1):
        rid = rid_of(data)
        before = reg.snapshot()
        remembered = reg.dedupe.get(rid) if rid is not None else None
        hit = rid is not None and rid in reg.dedupe
        assert hit == (rid in order)
        res = reg.apply(data, index)
        if hit:
            assert remembered is not None
            if same_request(remembered, data):
                assert res == remembered[1]
            else:  # the id was first used for another request
                assert res["error"] == "request_id_mismatch" and res["status"] == 422
            assert reg.snapshot() == before
        elif rid is not None:
            order.append(rid)
            del order[: max(0, len(order) - limit)]
            assert reg.dedupe[rid][1] == res
        assert len(reg.dedupe) <= limit
        assert list(reg.dedupe) == order


@settings(max_examples=100, deadline=None)
@given(logs, limits)
def test_replaying_the_whole_log_with_ids_applies_nothing_new(
    log: list[bytes], limit: int
) -> None:
    """Re-delivering every command whose id is still remembered (a client retrying them all)
    leaves the state exactly as it was."""
    reg = registry(limit)
    first = run(reg, log)
    state = reg.snapshot()
    rids = [rid_of(d) for d in log]
    for i, data in enumerate(log):
        rid = rids[i]
        if rid is not None and rid in reg.dedupe:
            res = reg.apply(data, len(log) + 1 + i)
            remembered = reg.dedupe[rid]
            if same_request(remembered, data):
                assert res == remembered[1]
            else:
                assert res["error"] == "request_id_mismatch"
            if rids.count(rid) == 1:  # its only application is the remembered one
                assert res == first[i]
    assert reg.snapshot() == state


def test_eviction_is_oldest_first_and_evicted_ids_apply_again() -> None:
    reg = registry(3)
    for i, rid in enumerate(["a", "b", "c", "d"], start=1):
        reg.apply(encode_command("kv", "put", {"key": rid, "value": i}, rid), i)
    assert list(reg.dedupe) == ["b", "c", "d"]
    # "d" is remembered: answered, not applied.
    res = reg.apply(encode_command("kv", "put", {"key": "d", "value": 99}, "d"), 5)
    assert res == {"revision": 4, "prev_revision": 0}
    assert reg.services["kv"].get("d") == (4, 4)
    # "a" was evicted: at-most-once holds only within the window, so it applies again.
    res = reg.apply(encode_command("kv", "put", {"key": "a", "value": 42}, "a"), 6)
    assert res == {"revision": 6, "prev_revision": 1}
    assert list(reg.dedupe) == ["c", "d", "a"]


def test_refusals_are_remembered_like_results() -> None:
    reg = registry(10)
    reg.apply(encode_command("kv", "put", {"key": "k", "value": 1}, None), 1)
    refused = reg.apply(
        encode_command("kv", "put", {"key": "k", "value": 2, "expect_revision": 9}, "cas"), 2
    )
    assert refused["error"] == "compare_failed" and refused["status"] == 409
    # The same id now carrying a guard that would pass still gets the first answer.
    again = reg.apply(
        encode_command("kv", "put", {"key": "k", "value": 2, "expect_revision": 1}, "cas"), 3
    )
    assert again == refused
    assert reg.services["kv"].get("k") == (1, 1)


def test_undecodable_and_unknown_commands_change_nothing() -> None:
    reg = registry(10)
    reg.apply(encode_command("kv", "put", {"key": "k", "value": 1}, "w"), 1)
    before = reg.snapshot()
    assert reg.apply(b"\xc1", 2)["error"] == "bad_command"
    assert reg.apply(encode_command("nope", "x", {}, None), 3)["error"] == "bad_service"
    assert reg.snapshot() == before
    res = reg.apply(encode_command("kv", "explode", {"key": "k"}, "bad"), 4)
    assert res["error"] == "bad_op" and res["status"] == 400
    assert reg.services["kv"].get("k") == (1, 1)


def test_restore_from_empty_resets_everything() -> None:
    reg = registry(10)
    reg.apply(encode_command("kv", "put", {"key": "k", "value": 1}, "w"), 1)
    reg.restore(b"")
    assert reg.services["kv"].keys() == [] and not reg.dedupe
    assert reg.snapshot() == registry(10).snapshot()


class _AddedLater(KVStore):
    """A service a newer version adds: snapshots of older nodes do not carry it."""

    name = "added"


def test_a_snapshot_without_a_service_resets_that_service() -> None:
    """Restoring a snapshot taken before a service existed (a node installed from it after
    an upgrade) must leave that service empty, as it was at the snapshot's index, not keep
    what this node had applied: nodes would diverge."""
    old = Registry([KVStore()])
    old.apply(encode_command("kv", "put", {"key": "a", "value": 1}, None), 1)
    new = Registry([KVStore(), _AddedLater()])
    new.apply(encode_command("added", "put", {"key": "stale", "value": 2}, None), 1)
    assert new.services["added"].keys() == ["stale"]
    new.restore(old.snapshot())
    assert new.services["added"].keys() == []
    assert new.services["kv"].keys() == ["a"]
    assert new.services["added"].snapshot() == _AddedLater().snapshot()


def test_request_id_reused_for_another_operation_is_refused_and_changes_nothing() -> None:
    from distsync.services.kv import KVStore
    from distsync.services.registry import Registry, encode_command

    reg = Registry([KVStore()])
    first = reg.apply(encode_command("kv", "put", {"key": "a", "value": 1}, "rid-1"), 1)
    assert first["revision"] == 1
    before = reg.snapshot()
    res = reg.apply(encode_command("kv", "delete", {"key": "a"}, "rid-1"), 2)
    assert res["error"] == "request_id_mismatch" and res["status"] == 422
    assert reg.snapshot() == before
    # The same operation with the same id still answers with the first result.
    assert reg.apply(encode_command("kv", "put", {"key": "a", "value": 2}, "rid-1"), 3) == first


def test_request_id_with_another_fingerprint_is_refused_and_changes_nothing() -> None:
    reg = registry(10)
    first = reg.apply(encode_command("kv", "put", {"key": "x", "value": 1}, "r", b"fp-x"), 1)
    before = reg.snapshot()
    res = reg.apply(encode_command("kv", "put", {"key": "y", "value": 1}, "r", b"fp-y"), 2)
    assert res["error"] == "request_id_mismatch" and res["status"] == 422
    assert reg.snapshot() == before and reg.services["kv"].get("y") is None
    # The same request again (a retry) gets the first answer, even with other leader fields.
    assert reg.apply(encode_command("kv", "put", {"key": "x", "value": 1}, "r", b"fp-x"), 3) \
        == first


def test_quota_refusals_are_not_remembered() -> None:
    """A refusal for lack of room changed nothing, so the id stays free: a retry once there
    is room applies (the first attempt never did)."""
    from distsync.services.base import CommandError

    class Full:
        name = "full"
        room = False

        def apply(self, op: str, args: dict[str, Any], index: int) -> Any:
            if not self.room:
                raise CommandError("quota_exceeded", "no room", 429, limit="max_x")
            return {"ok": index}

        def snapshot(self) -> Any:
            return None

        def restore(self, data: Any) -> None:
            pass

    svc = Full()
    reg = Registry([svc])
    assert reg.apply(encode_command("full", "add", {}, "r", b"f"), 1)["error"] == \
        "quota_exceeded"
    assert "r" not in reg.dedupe
    svc.room = True
    assert reg.apply(encode_command("full", "add", {}, "r", b"f"), 2) == {"ok": 2}
    assert reg.apply(encode_command("full", "add", {}, "r", b"f"), 3) == {"ok": 2}


def test_snapshot_rows_of_the_old_two_field_form_restore() -> None:
    old = msgpack.packb({"services": {"kv": []}, "dedupe": [["r", ["kv.put", {"revision": 1}]]]},
                        use_bin_type=True)
    reg = registry(10)
    reg.restore(old)
    assert reg.dedupe["r"] == ("kv.put", {"revision": 1}, None, None)
    assert reg.apply(encode_command("kv", "put", {"key": "z", "value": 1}, "r", b"f"), 5) == \
        {"revision": 1}
