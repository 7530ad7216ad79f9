"""KVStore as a pure, deterministic state machine (property tests).

Commands are applied at increasing log indexes exactly as the node's apply loop does; a
refused command (compare failed, bad op) becomes its result, as Registry turns it into one.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.base import CommandError
from distsync.services.kv import KVStore

KEYS = ["a", "b", "c/d", "c/e", "z"]

# Cheap to generate on purpose (the suite shares a small machine with real clusters), but
# still covering the JSON kinds and the 64-bit edges the API lets through.
scalars = (
    st.none() | st.booleans() | st.integers(-3, 3)
    | st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 0.5, -1.25, "", "x", "é"])
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.sampled_from(["k", "v", ""]), kids, max_size=2),
    max_leaves=4,
)


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    op = draw(st.sampled_from(["put", "put", "put", "delete"]))
    args: dict[str, Any] = {"key": draw(st.sampled_from(KEYS))}
    if op == "put":
        args["value"] = draw(json_values)
    # Revisions are log indexes, so small numbers both hit and miss.
    guard = draw(st.sampled_from(["none", "none", "rev", "value"]))
    if guard == "rev":
        args["expect_revision"] = draw(st.integers(0, 25))
    elif guard == "value" and op == "put":
        args["has_expect_value"] = True
        args["expect_value"] = draw(json_values | st.sampled_from([None, 1, "x"]))
    return op, args


command_lists = st.lists(commands(), max_size=25)


def apply(kv: KVStore, op: str, args: dict[str, Any], index: int) -> Any:
    try:
        return kv.apply(op, args, index)
    except CommandError as e:
        return e.to_result()


def run(kv: KVStore, cmds: list[tuple[str, dict[str, Any]]], start: int = 1) -> list[Any]:
    return [apply(kv, op, args, start + i) for i, (op, args) in enumerate(cmds)]


def roundtrip(data: Any) -> Any:
    """What a snapshot becomes after the wire and the disk (msgpack, as the Registry does)."""
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False,
                           strict_map_key=False)


@settings(max_examples=150, deadline=None)
@given(command_lists)
def test_same_commands_same_state_and_results(cmds: list) -> None:
    a, b = KVStore(), KVStore()
    assert run(a, cmds) == run(b, cmds)
    assert a.snapshot() == b.snapshot()
    assert a.keys() == b.keys()


@settings(max_examples=150, deadline=None)
@given(command_lists, st.data())
def test_snapshot_restore_mid_sequence_equals_never_snapshotting(cmds: list, data: Any) -> None:
    cut = data.draw(st.integers(0, len(cmds)))
    straight = KVStore()
    want = run(straight, cmds)

    first = KVStore()
    got = run(first, cmds[:cut])
    restored = KVStore()
    restored.restore(roundtrip(first.snapshot()))
    assert restored.snapshot() == first.snapshot()
    got += run(restored, cmds[cut:], start=cut + 1)

    assert got == want
    assert restored.snapshot() == straight.snapshot()
    assert {k: restored.get(k) for k in KEYS} == {k: straight.get(k) for k in KEYS}


@settings(max_examples=150, deadline=None)
@given(command_lists)
def test_matches_a_reference_model(cmds: list) -> None:
    """Revision = index of the last write; guards compare against the current state; a
    refused command changes nothing."""
    kv = KVStore()
    model: dict[str, tuple[Any, int]] = {}
    for index, (op, args) in enumerate(cmds, start=1):
        before = kv.snapshot()
        res = apply(kv, op, args, index)
        cur = model.get(args["key"])
        have_rev = cur[1] if cur else 0
        refused = ("expect_revision" in args and args["expect_revision"] != have_rev) or (
            args.get("has_expect_value")
            and (cur is None or cur[0] != args.get("expect_value"))
        )
        if refused:
            assert res["error"] == "compare_failed" and res["status"] == 409
            assert res["revision"] == have_rev
            assert kv.snapshot() == before
        elif op == "put":
            assert res == {"revision": index, "prev_revision": have_rev}
            model[args["key"]] = (args["value"], index)
        elif cur is None:
            assert res == {"deleted": False, "revision": index}
        else:
            assert res == {"deleted": True, "revision": index, "prev_revision": cur[1]}
            del model[args["key"]]
        assert {k: kv.get(k) for k in KEYS} == {k: model.get(k) for k in KEYS}


@settings(max_examples=50, deadline=None)
@given(command_lists, st.sampled_from(["", "c/", "a", "q"]), st.integers(1, 6))
def test_keys_is_sorted_filtered_and_bounded(cmds: list, prefix: str, limit: int) -> None:
    kv = KVStore()
    run(kv, cmds)
    got = kv.keys(prefix, limit)
    assert got == sorted(k for k in kv.data if k.startswith(prefix))[:limit]


def test_unknown_op_is_refused_without_change() -> None:
    kv = KVStore()
    kv.apply("put", {"key": "a", "value": 1}, 1)
    before = kv.snapshot()
    with pytest.raises(CommandError) as ei:
        kv.apply("frobnicate", {"key": "a"}, 2)
    assert ei.value.code == "bad_op" and ei.value.status == 400
    assert kv.snapshot() == before


def test_restore_replaces_everything() -> None:
    kv = KVStore()
    kv.apply("put", {"key": "old", "value": 1}, 1)
    kv.restore([["new", {"v": [1]}, 7]])
    assert kv.get("old") is None
    assert kv.get("new") == ({"v": [1]}, 7)
    kv.restore(KVStore().snapshot())
    assert kv.keys() == []


@settings(max_examples=150, deadline=None)
@given(command_lists, st.data())
def test_cached_snapshot_rows_give_the_same_bytes(cmds: list, data: Any) -> None:
    """snapshot_chunks (rows encoded once, dropped when a key changes) must join into exactly
    the bytes of packing snapshot() whole, between and after any commands and a restore."""
    kv = KVStore()
    cut = data.draw(st.integers(0, len(cmds)))
    for index, (op, args) in enumerate(cmds, start=1):
        apply(kv, op, args, index)
        if index == cut:
            assert b"".join(kv.snapshot_chunks()) == msgpack.packb(kv.snapshot(),
                                                                   use_bin_type=True)
            restored = KVStore()
            restored.restore(roundtrip(kv.snapshot()))
            kv = restored
    assert b"".join(kv.snapshot_chunks()) == msgpack.packb(kv.snapshot(), use_bin_type=True)
