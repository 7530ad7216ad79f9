"""The queue service, case by case: each documented behaviour as one small scenario (the
random histories are in test_queue_props.py). Uses the same Driver: commands at increasing
log indexes, the leader's timer played by `tick`."""

from __future__ import annotations

from collections import Counter

import pytest
from test_queue_props import Driver, Q, check_structure, roundtrip

from distsync.services.base import CommandError
from distsync.services.queue_model import INFLIGHT
from distsync.services.queues import QueueService


def bodies(msgs: list[dict]) -> list:
    return [m["body"] for m in msgs]


def test_single_consumer_gets_global_fifo_across_partitions() -> None:
    d = Driver({"partitions": 4})
    d.enqueue([(f"task_{i:03d}", None, None) for i in range(1, 6)])
    got = [m for _ in range(5) for m in d.dequeue("w1", 1)]
    assert bodies(got) == [f"task_{i:03d}" for i in range(1, 6)]
    assert len({m["partition"] for m in got}) == 4  # round-robin placement
    assert all(m["deliveries"] == 1 for m in got)


def test_keyed_messages_stay_in_one_partition_in_order() -> None:
    d = Driver({"partitions": 8})
    d.enqueue([(i, "user-7", None) for i in range(10)])
    got = d.dequeue("w1", 10)
    assert bodies(got) == list(range(10)) and len({m["partition"] for m in got}) == 1


def test_ids_and_receipts_come_from_the_log_index() -> None:
    d = Driver()
    res = d.enqueue([("a", None, None), ("b", None, "client-1")])
    idx = res["index"]
    got = d.dequeue("w1", 2)
    assert [m["id"] for m in got] == [f"~{idx}.0", "client-1"]
    assert [m["receipt"] for m in got] == [f"{d.index}:~{idx}.0", f"{d.index}:client-1"]


def test_in_flight_message_is_invisible_until_its_visibility_timeout() -> None:
    d = Driver({"partitions": 1})
    d.enqueue([("x", None, None)])
    (m,) = d.dequeue("w1", 1, vis=1000)
    assert d.dequeue("w1", 1) == []
    d.tick(999)
    assert d.dequeue("w1", 1) == []
    d.tick(1)  # the leader proposes the expiry; it is applied
    (again,) = d.dequeue("w1", 1)
    assert again["id"] == m["id"] and again["deliveries"] == 2
    assert again["receipt"] != m["receipt"]
    # The old receipt no longer acks; the new one does, exactly once.
    assert d.ack([m["receipt"]])["error"] == "unknown_receipt"
    assert d.ack([again["receipt"]]) == {"acked": 1, "unknown": []}
    assert d.ack([again["receipt"]])["error"] == "unknown_receipt"
    assert d.svc.queues[Q].messages == {}


def test_late_ack_after_expiry_but_before_redelivery_is_accepted() -> None:
    d = Driver({"partitions": 1})
    d.enqueue([("x", None, None)])
    (m,) = d.dequeue("w1", 1, vis=500)
    d.tick(600)
    assert d.svc.queues[Q].ready() == 1
    assert d.ack([m["receipt"]])["acked"] == 1
    assert d.dequeue("w1", 1) == []


def test_expiry_is_rechecked_at_apply() -> None:
    """A stale or repeated expiry proposal changes nothing."""
    d = Driver({"partitions": 1})
    d.enqueue([("x", None, None)])
    (m,) = d.dequeue("w1", 1, vis=1000)
    d.now += 1000
    (op, args), = d.svc.due_commands(d.now)
    assert op == "expire"
    assert d.svc.due_commands(d.now) == []  # proposed once; again only after REPROPOSE_MS
    d.ack([m["receipt"]])  # acked before the expiry applies
    before = roundtrip(d.svc.snapshot())
    assert d.apply(op, args) == {"expired": 0}
    assert d.apply(op, args) == {"expired": 0}
    assert roundtrip(d.svc.snapshot()) == before
    # And an expiry with an earlier `now` than the deadline is refused too.
    d.enqueue([("y", None, None)])
    (y,) = d.dequeue("w1", 1, vis=1000)
    item = [Q, y["id"], y["receipt"], INFLIGHT]
    assert d.apply("expire", {"items": [item], "now": d.now + 999}) == {"expired": 0}
    assert d.apply("expire", {"items": [item], "now": d.now + 1000}) == {"expired": 1}


def test_nack_redelivers_first_and_nack_with_delay_waits() -> None:
    d = Driver({"partitions": 1, "max_deliveries": 0})
    d.enqueue([(i, None, None) for i in range(3)])
    (m0,) = d.dequeue("w1", 1)
    d.nack([m0["receipt"]])
    (again,) = d.dequeue("w1", 1)
    assert again["body"] == 0 and again["deliveries"] == 2  # back at the head
    d.nack([again["receipt"]], delay=400)
    assert bodies(d.dequeue("w1", 1)) == [1]
    d.tick(399)
    assert bodies(d.dequeue("w1", 1)) == [2]
    d.tick(1)
    (late,) = d.dequeue("w1", 1)
    assert late["body"] == 0 and late["deliveries"] == 3


def test_dead_letter_after_max_deliveries_with_count_and_last_error() -> None:
    d = Driver({"partitions": 2, "max_deliveries": 2})
    d.enqueue([("poison", None, "p-1"), ("fine", None, None)])
    for attempt in (1, 2):
        got = [m for m in d.dequeue("w1", 2) if m["body"] == "poison"]
        assert got[0]["deliveries"] == attempt
        res = d.nack([got[0]["receipt"]], error=f"failure {attempt}")
        assert res["dead_lettered"] == (1 if attempt == 2 else 0)
    q = d.svc.queues[Q]
    assert "p-1" not in q.messages and q.stats["dead_lettered"] == 1
    (dead,) = d.dequeue("ops", 5, q=Q + ".dlq")
    assert dead["id"] == "p-1" and dead["body"] == "poison"
    assert dead["dead_letter"]["queue"] == Q
    assert dead["dead_letter"]["deliveries"] == 2
    assert dead["dead_letter"]["error"] == "failure 2"


def test_visibility_timeout_counts_toward_max_deliveries() -> None:
    d = Driver({"partitions": 1, "max_deliveries": 2})
    d.enqueue([("slow", None, None)])
    d.dequeue("w1", 1, vis=300)
    d.tick(300)
    d.dequeue("w1", 1, vis=300)
    d.tick(300)
    assert d.svc.queues[Q].messages == {}
    (dead,) = d.svc.queues[Q + ".dlq"].messages.values()
    assert dead.dead[1:3] == [2, "visibility timeout expired"]


def test_idempotent_enqueue_within_the_dedupe_window() -> None:
    d = Driver({"dedupe_window_ms": 10_000}, check=False)  # ids repeat on purpose
    assert d.enqueue([("a", None, "order-1")])["dup"] == []
    assert d.enqueue([("a again", None, "order-1")])["dup"] == [0]
    # Same id twice in one batch: one copy.
    assert d.enqueue([("b", None, "order-2"), ("b", None, "order-2")])["dup"] == [1]
    (m,) = [m for m in d.dequeue("w1", 5) if m["id"] == "order-1"]
    d.ack([m["receipt"]])
    d.tick(5_000)
    assert d.enqueue([("a", None, "order-1")])["dup"] == [0]  # acked, but in the window
    d.tick(5_001)
    assert d.enqueue([("a new one", None, "order-1")])["dup"] == []  # window passed
    assert d.svc.queues[Q].stats["duplicates"] == 3


def test_dedupe_ids_are_bounded_and_in_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    from distsync.services import queues as qmod

    monkeypatch.setattr(qmod, "DEDUPE_MAX_IDS", 5)
    d = Driver()
    for i in range(8):
        d.enqueue([(i, None, f"id-{i}")])
    assert list(d.svc.queues[Q].dedupe) == [f"id-{i}" for i in range(3, 8)]
    d.restart()
    assert list(d.svc.queues[Q].dedupe) == [f"id-{i}" for i in range(3, 8)]


def test_queue_full_rejects_the_whole_batch_and_changes_nothing() -> None:
    d = Driver({"max_length": 3, "max_bytes": 1024})
    d.enqueue([(1, None, None), (2, None, None)])
    before = roundtrip(d.svc.snapshot())
    res = d.enqueue([(3, None, None), (4, None, None)])
    assert res["error"] == "queue_full" and res["status"] == 429 and res["limit"] == "max_length"
    assert roundtrip(d.svc.snapshot()) == before
    # Bytes: each test message is 8 bytes; the limit counts them.
    d2 = Driver({"max_bytes": 1024})
    d2.apply("enqueue", {"q": Q, "m": [["x", None, None, None, 1000]], "now": d2.now})
    res = d2.apply("enqueue", {"q": Q, "m": [["y", None, None, None, 100]], "now": d2.now})
    assert res["error"] == "queue_full" and res["limit"] == "max_bytes"
    # A refused enqueue does not even create the queue.
    svc = QueueService()
    svc.apply("enqueue", {"q": "new", "m": [["x", None, None, None, 1]], "now": 0}, 1)
    assert "new" in svc.queues
    with pytest.raises(CommandError) as e:
        svc.apply("enqueue", {"q": "other", "m": [["x", None, None, None, 1 << 40]],
                              "now": 0}, 2)
    assert e.value.code == "queue_full"
    assert "other" not in svc.queues


def test_options_validation_and_immutable_partitions() -> None:
    d = Driver({"partitions": 3})
    res = d.apply("create", {"q": Q, "opts": {"partitions": 4}})
    assert res["error"] == "immutable_option" and res["status"] == 409
    res = d.apply("create", {"q": Q, "opts": {"visibility_ms": 5}})
    assert res["error"] == "invalid_options" and res["status"] == 400
    res = d.apply("create", {"q": Q, "opts": {"colour": 1}})
    assert res["error"] == "invalid_options"
    res = d.apply("create", {"q": Q, "opts": {"max_deliveries": True}})
    assert res["error"] == "invalid_options"
    res = d.apply("create", {"q": Q, "opts": {"visibility_ms": 5000, "partitions": 3}})
    assert res["created"] is False and res["options"]["visibility_ms"] == 5000


def test_malformed_commands_are_refused_deterministically() -> None:
    svc = QueueService()
    for op, args in [("explode", {}), ("enqueue", {"q": "q"}), ("dequeue", {"q": "q"}),
                     ("enqueue", {"q": "q", "m": [[1, 2]], "now": 0}),
                     ("enqueue", {"q": "q", "m": [["b", None, None, None, -1]], "now": 0})]:
        with pytest.raises(CommandError) as e:
            svc.apply(op, args, 1)
        assert e.value.status == 400, (op, args)
    assert svc.queues == {}
    with pytest.raises(CommandError) as e:
        svc.apply("ack", {"q": "nope", "r": ["1:x"], "now": 0}, 2)
    assert e.value.code == "not_found"


def test_retry_of_a_dequeue_returns_the_same_messages() -> None:
    d = Driver({"partitions": 1})
    d.enqueue([(i, None, None) for i in range(4)])
    first = d.dequeue("w1", 2, rid="req-1")
    again = d.dequeue("w1", 2, rid="req-1")
    assert again == first
    second = d.dequeue("w1", 2, rid="req-2")
    assert bodies(second) == [2, 3]
    # A late retry returns what it leased and still holds; nothing more is leased. (A
    # consumer's latest dequeue is remembered: a client retries only its latest request.)
    d.enqueue([(4, None, None)])
    d.ack([second[0]["receipt"]])
    assert d.dequeue("w1", 2, rid="req-2") == [second[1]]
    assert d.svc.queues[Q].ready() == 1


def test_consumers_share_partitions_evenly_and_exclusively() -> None:
    d = Driver({"partitions": 6})
    d.enqueue([(i, None, None) for i in range(60)])
    got: dict[str, list] = {}
    for c in ("a", "b", "c"):
        d.apply("heartbeat", {"q": Q, "c": c, "now": d.now})
    for _ in range(10):
        for c in ("a", "b", "c"):
            got.setdefault(c, []).extend(d.dequeue(c, 2))
    parts = {c: {m["partition"] for m in ms} for c, ms in got.items()}
    assert all(len(p) == 2 for p in parts.values())
    assert not (parts["a"] & parts["b"]) and not (parts["b"] & parts["c"])
    assert Counter(len(ms) for ms in got.values()) == Counter({20: 3})


def test_a_handed_over_partition_is_drained_first() -> None:
    d = Driver({"partitions": 2})
    d.enqueue([(i, "k", None) for i in range(4)])  # one partition
    (held,) = d.dequeue("w1", 1)
    p = held["partition"]
    # w2 joins; whoever now owns p may not take from it while w1 still holds a message.
    d.apply("heartbeat", {"q": Q, "c": "w2", "now": d.now})
    owner = d.svc.queues[Q].assignment[p]
    other = "w1" if owner == "w2" else "w2"
    if owner == "w2":
        assert d.dequeue("w2", 5) == []
        d.ack([held["receipt"]])
        assert bodies(d.dequeue("w2", 5)) == [1, 2, 3]
    else:  # w1 kept p: it continues, w2 has nothing
        assert d.dequeue(other, 5) == []
        assert bodies(d.dequeue("w1", 5)) == [1, 2, 3]


def test_silent_consumer_expires_and_its_messages_go_back() -> None:
    d = Driver({"partitions": 2, "consumer_ttl_ms": 3000, "visibility_ms": 60_000})
    d.enqueue([(i, None, None) for i in range(4)])
    held = d.dequeue("w1", 4)
    assert len(held) == 4
    d.apply("heartbeat", {"q": Q, "c": "w2", "now": d.now})
    for _ in range(3):
        d.tick(1000)
        d.apply("heartbeat", {"q": Q, "c": "w2", "now": d.now})
    q = d.svc.queues[Q]
    assert list(q.consumers) == ["w2"] and q.inflight == 0
    again = d.dequeue("w2", 4)
    assert sorted(bodies(again)) == [0, 1, 2, 3] and all(m["deliveries"] == 2 for m in again)
    assert d.ack([held[0]["receipt"]])["error"] == "unknown_receipt"


def test_a_new_leader_gives_consumers_a_full_ttl() -> None:
    d = Driver({"consumer_ttl_ms": 3000})
    d.apply("heartbeat", {"q": Q, "c": "w1", "now": d.now})
    d.now += 2900
    d.svc.on_leader_start(d.now, 2)  # the old leader may have been unreachable meanwhile
    d.tick(2000)
    assert "w1" in d.svc.queues[Q].consumers
    d.tick(1000)
    assert "w1" not in d.svc.queues[Q].consumers


def test_leave_releases_at_once() -> None:
    d = Driver({"partitions": 1})
    d.enqueue([("x", None, None)])
    d.dequeue("w1", 1)
    res = d.apply("leave", {"q": Q, "c": "w1", "now": d.now})
    assert res == {"left": True, "released": 1}
    (m,) = d.dequeue("w2", 1)
    assert m["deliveries"] == 2
    assert d.apply("leave", {"q": Q, "c": "w1", "now": d.now})["status"] == 404


def test_retention_drops_old_messages() -> None:
    d = Driver({"retention_ms": 10_000, "partitions": 1}, check=False)
    d.enqueue([("old", None, None), ("old-held", None, None)])
    (held,) = d.dequeue("w1", 1, vis=60_000)
    d.tick(5_000)
    d.enqueue([("new", None, None)])
    d.tick(5_000)
    q = d.svc.queues[Q]
    assert sorted(m.body for m in q.messages.values()) == ["new", "old"]  # in flight: kept
    d.nack([held["receipt"]])  # comes back too old to deliver again: dropped
    assert [m.body for m in q.messages.values()] == ["new"] and q.stats["expired"] == 2
    check_structure(q)


def test_delete_queue() -> None:
    d = Driver()
    d.enqueue([(1, None, None)])
    assert d.apply("delete", {"q": Q})["messages"] == 1
    assert d.apply("delete", {"q": Q})["error"] == "not_found"
    assert d.svc.due_commands(d.now + 10**9) == []


def test_snapshot_restore_keeps_everything_and_the_timers() -> None:
    d = Driver({"partitions": 3})
    d.enqueue([(i, f"k{i % 4}", f"id-{i}") for i in range(12)])
    a = d.dequeue("w1", 3, vis=1000)
    d.dequeue("w2", 2, vis=5000)
    d.nack([a[0]["receipt"]], delay=2000)
    d.restart()
    check_structure(d.svc.queues[Q])
    d.tick(1000)  # a[1:] expire from the restored timer index
    q = d.svc.queues[Q]
    assert all(q.messages[m["id"]].deliveries == 1 and q.messages[m["id"]].state != INFLIGHT
               for m in a[1:])
    d.tick(1000)
    assert q.messages[a[0]["id"]].state == 0  # the delay ended: READY


def test_timer_index_is_compacted() -> None:
    d = Driver({"partitions": 1, "max_length": 100_000}, check=False)
    for _ in range(30):
        d.enqueue([(i, None, None) for i in range(200)])
        got = d.dequeue("w1", 200, vis=10**6)
        d.ack([m["receipt"] for m in got])
    assert len(d.svc._timers) <= 4 * 4096


def test_a_partly_acked_dequeue_times_out_only_what_is_left() -> None:
    """A dequeue's leases share one timer entry: the acked ones leave it, the rest expire
    at its deadline (also after a restart, which rebuilds the index from the messages)."""
    for restart in (False, True):
        d = Driver({"partitions": 2})
        d.enqueue([(i, None, None) for i in range(10)])
        got = d.dequeue("w1", 10, vis=1000)
        d.ack([m["receipt"] for m in got[::2]])
        if restart:
            d.restart()
        d.tick(999)
        assert d.svc.queues[Q].inflight == 5
        d.tick(1)
        again = d.dequeue("w1", 10)
        assert sorted(bodies(again)) == [1, 3, 5, 7, 9]
        assert all(m["deliveries"] == 2 for m in again)


def test_dequeue_can_ack_the_previous_batch_in_the_same_command() -> None:
    d = Driver({"partitions": 1})
    d.enqueue([(i, None, None) for i in range(5)])
    first = d.dequeue("w1", 2)
    stale = "1:~nope"
    res = d.apply("dequeue", {"q": Q, "c": "w1", "max": 2, "now": d.now, "rid": None,
                              "ack": [m["receipt"] for m in first] + [stale]})
    assert res["acked"] == 2 and res["ack_unknown"] == [stale]
    assert bodies(res["messages"]) == [2, 3]
    q = d.svc.queues[Q]
    assert q.stats["acked"] == 2 and len(q.messages) == 3
    # Only unknown receipts: still a dequeue, never an error.
    res = d.apply("dequeue", {"q": Q, "c": "w1", "max": 5, "now": d.now, "rid": None,
                              "ack": [stale]})
    assert res["acked"] == 0 and bodies(res["messages"]) == [4]
