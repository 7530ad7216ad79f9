"""The Registry's snapshot as the node takes it: assembled from cached msgpack pieces (queue
message rows, dedupe rows) so that it is cheap on the event loop, yet byte-identical to a
plain encoding of the whole state, before and after restores and dedupe evictions; and the
policy that spaces snapshots by the log they replace."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from distsync.services import registry as registry_module
from distsync.services.kv import KVStore
from distsync.services.locks import LockService
from distsync.services.queues import QueueService
from distsync.services.registry import (
    SNAPSHOT_LOG_RATIO,
    SNAPSHOT_MAX_DEFER,
    Registry,
    encode_command,
)

NOW = 1_000_000


def plain(reg: Registry) -> bytes:
    """The snapshot encoding before pieces were cached: one packb of everything."""
    return msgpack.packb(
        {"services": {n: s.snapshot() for n, s in reg.services.items()},
         "dedupe": list(reg.dedupe.items())},
        use_bin_type=True,
    )


def registry(limit: int = 100) -> Registry:
    return Registry([KVStore(), QueueService(), LockService()], dedupe_limit=limit)


def workload(seed: int, n: int) -> list[bytes]:
    """Enqueues, dequeues, acks and nacks of receipts that may or may not be current, kv
    writes, with and without request ids (some repeated)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rid = rng.choice([None, f"r{i}", f"r{rng.randrange(max(1, i))}"])
        k = rng.random()
        if k < 0.3:
            msgs = [[rng.randrange(9), None, None, None, 1] for _ in range(rng.randint(1, 4))]
            out.append(encode_command("queues", "enqueue", {"q": "q", "m": msgs, "now": NOW}, rid))
        elif k < 0.55:
            args = {"q": "q", "c": f"c{rng.randrange(3)}", "max": rng.randint(1, 3), "now": NOW}
            out.append(encode_command("queues", "dequeue", args, None))
        elif k < 0.8:
            receipts = [f"{rng.randrange(1, i + 2)}:~{rng.randrange(1, i + 2)}.0"]
            op = rng.choice(["ack", "nack"])
            out.append(encode_command("queues", op, {"q": "q", "r": receipts, "now": NOW}, rid))
        else:
            out.append(encode_command("kv", "put", {"key": f"k{rng.randrange(5)}", "value": i},
                                      rid))
    return out


def run(reg: Registry, log: list[bytes], start: int = 1) -> list[Any]:
    return [reg.apply(d, start + i) for i, d in enumerate(log)]


def test_snapshot_from_pieces_is_the_plain_encoding_throughout() -> None:
    for seed in range(20):
        reg = registry(limit=7)  # small, so the dedupe table evicts
        log = workload(seed, 200)
        for i in range(0, len(log), 25):
            run(reg, log[i:i + 25], start=i + 1)
            assert reg.snapshot() == plain(reg), f"seed {seed} at {i}"


def test_restore_then_continue_matches_never_restoring() -> None:
    for seed in range(10):
        log = workload(seed, 240)
        straight, first = registry(limit=9), registry(limit=9)
        want = run(straight, log)
        got = run(first, log[:120])
        first.snapshot()  # fill the caches, which must then follow later changes
        restored = registry(limit=9)
        restored.restore(first.snapshot())
        assert restored.snapshot() == first.snapshot() == plain(first)
        got += run(restored, log[120:], start=121)
        assert got == want
        assert restored.snapshot() == straight.snapshot() == plain(straight)


def test_a_remembered_result_does_not_follow_later_changes() -> None:
    """A retried create must get the options it created, not today's: the dedupe row is
    cached when applied, so a result aliasing live state would also make snapshots differ
    from the live table."""
    reg = registry()
    first = reg.apply(encode_command("queues", "create", {"q": "q", "opts": {}}, "a"), 1)
    reg.apply(encode_command("queues", "create", {"q": "q", "opts": {"max_length": 9}}, "b"), 2)
    again = reg.apply(encode_command("queues", "create", {"q": "q", "opts": {}}, "a"), 3)
    assert again == first and first["options"]["max_length"] != 9
    assert reg.snapshot() == plain(reg)


def test_a_small_state_is_snapshotted_at_the_entry_threshold() -> None:
    reg = registry()
    msgs = [["x" * 100, None, None, None, 102]] * 200
    reg.apply(encode_command("queues", "enqueue", {"q": "q", "m": msgs, "now": NOW}, None), 1)
    reg.snapshot_taken(len(reg.snapshot()))
    assert reg.state_bytes() < registry_module.SNAPSHOT_SMALL_BYTES
    assert reg.snapshot_due(100, 100) and not reg.snapshot_due(99, 100)


def test_snapshots_are_spaced_by_threshold_and_by_log_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "SNAPSHOT_SMALL_BYTES", 0)  # as if the state were big
    reg = registry()
    assert not reg.snapshot_due(99, 100)
    assert reg.snapshot_due(100, 100)  # no snapshot yet: the threshold alone decides
    msgs = [["x" * 100, None, None, None, 102]] * 200
    reg.apply(encode_command("queues", "enqueue", {"q": "q", "m": msgs, "now": NOW}, None), 1)
    size = len(reg.snapshot())
    reg.snapshot_taken(size)
    many = SNAPSHOT_MAX_DEFER * 100 - 1
    assert not reg.snapshot_due(many, 100)  # many entries, but no log bytes yet
    assert reg.snapshot_due(many + 1, 100)  # ... up to a limit
    small = encode_command("kv", "put", {"key": "k", "value": 1}, None)
    applied, index = 0, 2
    while applied < SNAPSHOT_LOG_RATIO * reg.state_bytes():
        assert not reg.snapshot_due(many, 100)
        reg.apply(small, index)
        applied, index = applied + len(small), index + 1
    assert reg.snapshot_due(100, 100) and not reg.snapshot_due(99, 100)
    # A restored node counts from the snapshot it restored.
    reg.restore(reg.snapshot())
    assert reg.log_bytes == 0 and not reg.snapshot_due(many, 100)


def test_a_drained_backlog_is_snapshotted_soon_a_full_one_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait is measured against the state as it is now (the queue's size hint), not as
    it was at the last snapshot."""
    monkeypatch.setattr(registry_module, "SNAPSHOT_SMALL_BYTES", 100_000)
    reg = registry()
    svc = reg.services["queues"]
    msgs = [["x" * 100, None, None, None, 102]] * 500
    for i in range(20):
        reg.apply(encode_command("queues", "enqueue", {"q": "q", "m": msgs, "now": NOW}, None),
                  i + 1)
    actual = len(reg.snapshot())
    assert 0.8 < svc.snapshot_size_hint() / actual < 1.25
    reg.snapshot_taken(actual)
    log = encode_command("queues", "enqueue", {"q": "q", "m": msgs[:10], "now": NOW}, None)
    reg.apply(log, 21)
    assert not reg.snapshot_due(100, 100)  # 10 messages of log against 10,010 of state
    reg.apply(encode_command("queues", "delete", {"q": "q"}, None), 22)
    assert reg.state_bytes() < 1000 < reg.log_bytes
    assert reg.snapshot_due(100, 100)  # now cheap, and frees the log
