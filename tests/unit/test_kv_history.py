"""The kv history (services/kv_history.py) and the watch hub (watch.py): ordering, bounds,
compaction, prefix matching, and the hand-over from paging the history to the live feed
without a gap or a duplicate."""

from __future__ import annotations

import random

import pytest

from distsync.services.kv import KVStore
from distsync.services.kv_history import EVENT_OVERHEAD_BYTES, Compacted, KVHistory
from distsync.services.registry import Registry
from distsync.watch import WatchHub, WatchLimit


def _put(kv: KVStore, key: str, value: object, index: int) -> None:
    kv.apply("put", {"key": key, "value": value, "sz": 2}, index)


def test_events_follow_the_applied_commands_in_revision_order() -> None:
    kv = KVStore()
    _put(kv, "a/1", 1, 3)
    _put(kv, "b/1", 2, 4)
    _put(kv, "a/1", 3, 7)
    kv.apply("delete", {"key": "a/1"}, 8)
    kv.apply("delete", {"key": "nothing"}, 9)  # deleting nothing changes nothing: no event
    evs = kv.history.events_from(1)
    assert [(e.revision, e.type, e.key, e.value, e.prev_revision) for e in evs] == [
        (3, "put", "a/1", 1, 0), (4, "put", "b/1", 2, 0), (7, "put", "a/1", 3, 3),
        (8, "delete", "a/1", None, 7),
    ]
    assert [e.revision for e in kv.history.events_from(5, lambda k: k.startswith("a/"))] == \
        [7, 8]
    assert [e.revision for e in kv.history.events_from(8)] == [8]
    assert kv.history.events_from(10) == []
    assert kv.history.last_revision == 8


def test_the_count_bound_compacts_the_oldest_and_says_where() -> None:
    h = KVHistory(max_events=3)
    for rev in range(1, 11):
        h.record(rev * 2, "put", "k", rev, 0, 1)
    assert len(h) == 3
    assert [e.revision for e in h.events_from(h.oldest_revision)] == [16, 18, 20]
    assert h.compact_revision == 14 and h.oldest_revision == 15
    with pytest.raises(Compacted) as e:
        h.events_from(14)
    assert e.value.oldest_revision == 15


def test_the_byte_bound_counts_keys_values_and_the_overhead() -> None:
    per = len("key") + 100 + EVENT_OVERHEAD_BYTES
    h = KVHistory(max_events=1000, max_bytes=per * 4)
    for rev in range(1, 20):
        h.record(rev, "put", "key", "x", 0, 100)
        assert h.bytes <= per * 4
    assert len(h) == 4 and h.compact_revision == 15


def test_a_restore_starts_the_history_at_the_snapshot_index() -> None:
    reg = Registry([KVStore()])
    kv = reg.services["kv"]
    _put(kv, "a", 1, 5)
    data = reg.snapshot()
    other = Registry([KVStore()])
    other.restore(data, 40)
    h = other.services["kv"].history
    assert h.compact_revision == 40 and len(h) == 0
    with pytest.raises(Compacted):
        h.events_from(40)
    assert h.events_from(41) == []
    _put(other.services["kv"], "a", 2, 41)
    assert [e.revision for e in h.events_from(41)] == [41]


def test_a_long_history_stays_consistent_against_a_model() -> None:
    rng = random.Random(7)
    h = KVHistory(max_events=50)
    model: list[tuple[int, str]] = []
    rev = 0
    for _ in range(3000):
        rev += rng.randint(1, 3)
        key = rng.choice(["a/x", "a/y", "b/x", "ab"])
        h.record(rev, "put", key, rev, 0, 1)
        model = (model + [(rev, key)])[-50:]
        start = rng.randint(model[0][0], rev + 1)
        got = [(e.revision, e.key) for e in h.events_from(start, lambda k: k.startswith("a/"))]
        assert got == [(r, k) for r, k in model if r >= start and k.startswith("a/")]


async def test_the_hub_hands_over_from_history_to_live_without_gap_or_duplicate() -> None:
    h = KVHistory()
    for rev in range(1, 601):
        h.record(rev, "put", f"p/{rev % 3}", rev, 0, 1)
    hub = WatchHub(h, buffer_events=10_000)
    w = hub.open(1, prefix="p/")
    got: list[int] = []
    rev = 600
    while not w.synced:  # events keep coming while the watcher pages through the history
        got += [e.revision for e in hub.take(w, limit=100)]
        rev += 1
        h.record(rev, "put", "p/0", rev, 0, 1)
    got += [e.revision for e in hub.take(w)]
    rev += 1
    h.record(rev, "put", "p/1", rev, 0, 1)
    h.record(rev + 1, "put", "q/1", rev + 1, 0, 1)  # not under the prefix
    got += [e.revision for e in hub.take(w)]
    assert rev > 601 and got == list(range(1, rev + 1))


async def test_a_full_buffer_cancels_the_watcher_as_a_slow_consumer() -> None:
    h = KVHistory()
    hub = WatchHub(h, buffer_events=3)
    w = hub.open(1, key="k")
    assert hub.take(w) == [] and w.synced
    for rev in range(1, 5):
        h.record(rev, "put", "k", rev, 0, 1)
    assert w.canceled == "slow_consumer" and hub.take(w) == []


async def test_a_watcher_that_falls_behind_the_history_while_paging_is_cancelled() -> None:
    h = KVHistory(max_events=10)
    for rev in range(1, 11):
        h.record(rev, "put", "k", rev, 0, 1)
    hub = WatchHub(h)
    w = hub.open(1, key="k")
    assert [e.revision for e in hub.take(w, limit=2)] == [1, 2]
    for rev in range(11, 20):
        h.record(rev, "put", "k", rev, 0, 1)
    assert hub.take(w) == [] and w.canceled == "compacted"


async def test_the_hub_refuses_past_its_watchers_and_compacted_starts() -> None:
    h = KVHistory(max_events=1)
    h.record(1, "put", "k", 1, 0, 1)
    h.record(2, "put", "k", 2, 0, 1)
    hub = WatchHub(h, max_watchers=1)
    with pytest.raises(Compacted):
        hub.open(1, key="k")
    w = hub.open(2, key="k")
    with pytest.raises(WatchLimit):
        hub.open(2, key="k")
    hub.close(w)
    hub.open(3, prefix="")
    assert len(hub.watchers) == 1


async def test_a_watch_ahead_of_this_node_gets_nothing_before_its_start() -> None:
    """A client resuming on a lagging follower asks for revisions it has not applied yet:
    the ones it applies meanwhile, below the start, are not sent again."""
    h = KVHistory()
    h.record(1, "put", "k", 1, 0, 1)
    hub = WatchHub(h)
    w = hub.open(5, key="k")
    assert hub.take(w) == [] and w.synced
    for rev in range(2, 7):
        h.record(rev, "put", "k", rev, 0, 1)
    assert [e.revision for e in hub.take(w)] == [5, 6]


# -- several events at one revision (a session's end deletes its ephemeral keys at once) ---


def _deletes(h: KVHistory, rev: int, *keys: str) -> None:
    for k in keys:
        h.record(rev, "delete", k, None, 1, 0)


def test_one_revision_may_hold_several_events_and_a_page_never_splits_one() -> None:
    h = KVHistory()
    h.record(1, "put", "a", 1, 0, 1)
    _deletes(h, 2, "b", "c", "d")
    h.record(3, "put", "e", 3, 0, 1)
    assert [(e.revision, e.key) for e in h.events_from(1, limit=2)] == [
        (1, "a"), (2, "b"), (2, "c"), (2, "d")]
    assert [(e.revision, e.key) for e in h.events_from(2, limit=1)] == [
        (2, "b"), (2, "c"), (2, "d")]
    # The rest of a revision counts only the matching events.
    assert [e.key for e in h.events_from(1, lambda k: k in "ad", limit=1)] == ["a"]
    assert [e.key for e in h.events_from(2, lambda k: k in "cde", limit=1)] == ["c", "d"]
    with pytest.raises(ValueError):
        h.record(2, "put", "late", 1, 0, 1)  # a revision never comes back


def test_compaction_drops_whole_revisions() -> None:
    h = KVHistory(max_events=3)
    h.record(1, "put", "a", 1, 0, 1)
    _deletes(h, 2, "b", "c")
    h.record(3, "put", "e", 3, 0, 1)  # four events: revision 1 goes
    assert h.compact_revision == 1 and len(h) == 3
    _deletes(h, 4, "f")  # one more: revision 2 goes whole, not its first event only
    assert h.compact_revision == 2 and [e.revision for e in h.events_from(3)] == [3, 4]
    with pytest.raises(Compacted):
        h.events_from(2)
    _deletes(h, 5, "g", "h", "i", "j")  # a revision bigger than the bound goes whole too
    assert h.compact_revision == 5 and len(h) == 0 and h.last_revision == 5
    h.record(6, "put", "k", 6, 0, 1)
    assert [e.revision for e in h.events_from(6)] == [6]


async def test_the_hub_hands_out_whole_revisions_while_paging_and_live() -> None:
    h = KVHistory()
    _deletes(h, 1, "p/a", "p/b", "p/c")
    _deletes(h, 2, "p/d", "p/e")
    hub = WatchHub(h)
    w = hub.open(1, prefix="p/")
    assert [e.key for e in hub.take(w, limit=2)] == ["p/a", "p/b", "p/c"]
    assert w.next_revision == 2 and not w.synced
    assert [e.key for e in hub.take(w, limit=2)] == ["p/d", "p/e"]
    assert hub.take(w, limit=2) == [] and w.synced and w.next_revision == 3
    _deletes(h, 3, "p/f", "p/g", "p/h")
    h.record(4, "put", "p/i", 4, 0, 1)
    assert [e.key for e in hub.take(w, limit=1)] == ["p/f", "p/g", "p/h"]
    assert w.next_revision == 4
    assert [e.key for e in hub.take(w, limit=1)] == ["p/i"]


async def test_a_slow_consumer_is_cancelled_at_a_revision_boundary() -> None:
    """The cancellation line carries next_revision - 1: everything up to it was handed
    out, so resuming from it + 1 misses nothing of a revision cut by the cancel."""
    h = KVHistory()
    hub = WatchHub(h, buffer_events=3)
    w = hub.open(1, prefix="")
    assert hub.take(w) == [] and w.synced
    _deletes(h, 1, "a", "b")
    assert len(hub.take(w)) == 2 and w.next_revision == 2
    _deletes(h, 2, "c", "d", "e", "f")  # the fourth overflows the buffer mid-revision
    assert w.canceled == "slow_consumer" and hub.take(w) == []
    assert w.next_revision == 2
    again = hub.open(w.next_revision, prefix="")
    assert [e.key for e in hub.take(again)] == ["c", "d", "e", "f"]


async def test_the_per_client_bound_counts_each_client_apart_and_frees_on_close() -> None:
    h = KVHistory()
    hub = WatchHub(h, max_watchers=10, max_watchers_per_client=2)
    a = [hub.open(1, key="k", client="a") for _ in range(2)]
    with pytest.raises(WatchLimit) as e:
        hub.open(1, key="k", client="a")
    assert (e.value.limit, e.value.value) == ("max_watchers_per_client", 2)
    hub.open(1, key="k", client="b")  # another client has its own budget
    hub.open(1, key="k")  # and a watcher of no client only the node's
    hub.close(a[0])
    hub.close(a[0])  # closing twice frees one slot, not two
    assert hub.by_client == {"a": 1, "b": 1}
    hub.open(1, key="k", client="a")
    with pytest.raises(WatchLimit):
        hub.open(1, key="k", client="a")
    for w in list(hub.watchers):
        hub.close(w)
    assert hub.by_client == {} and not hub.watchers
    full = WatchHub(h, max_watchers=1, max_watchers_per_client=5)
    full.open(1, key="k", client="a")
    with pytest.raises(WatchLimit) as e:
        full.open(1, key="k", client="b")
    assert e.value.limit == "max_watchers"


async def test_a_snapshot_installed_under_a_live_watcher_cancels_it() -> None:
    """A follower that restarted behind and is then sent a snapshot jumps its applied state
    (and history) forward: a watcher that still needed a revision the snapshot covers would
    otherwise go on after a gap (the simulation found it, seed 12). It is cancelled with
    `compacted`; a watcher whose start lies past the snapshot goes on."""
    h = KVHistory()
    h.record(3, "put", "k", 3, 0, 1)
    hub = WatchHub(h)
    behind = hub.open(2, prefix="")
    ahead = hub.open(12, prefix="")
    assert [e.revision for e in hub.take(behind)] == [3] and behind.synced
    assert hub.take(ahead) == [] and ahead.synced
    h.reset(10)  # the snapshot: revisions 4..10 happened elsewhere, unseen here
    assert behind.canceled == "compacted" and behind.wake.is_set()
    assert ahead.canceled is None
    for rev in (11, 12):
        h.record(rev, "put", "k", rev, 0, 1)
    assert hub.take(behind) == []
    assert [e.revision for e in hub.take(ahead)] == [12]
