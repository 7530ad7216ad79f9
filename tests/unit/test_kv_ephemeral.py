"""Ephemeral keys (services/kv.py, README "Ephemeral keys"): a put with a lock session binds
the key to it, the session's end deletes its keys in the same apply, at that index; the
binding follows the last put; it is in the snapshot; bad input changes nothing.

The kv and lock services are wired as server.py wires them (`KVStore.bind_sessions`), under
a real Registry, and commands go through `Registry.apply` as the node applies them."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.kv import KVStore
from distsync.services.locks import LockService
from distsync.services.registry import Registry, encode_command


class Cluster:
    """One node's replicated state: kv and locks wired, commands at increasing indexes."""

    def __init__(self) -> None:
        self.kv = KVStore()
        self.locks = LockService()
        self.kv.bind_sessions(self.locks)
        self.reg = Registry([self.kv, self.locks])
        self.index = 0

    def do(self, service: str, op: str, args: dict[str, Any]) -> Any:
        self.index += 1
        return self.reg.apply(encode_command(service, op, args, None), self.index)

    def open(self, ttl_ms: int = 5000) -> str:
        return str(self.do("locks", "open", {"ttl_ms": ttl_ms})["session"])

    def put(self, key: str, value: Any, session: str | None = None, **kw: Any) -> Any:
        args: dict[str, Any] = {"key": key, "value": value, **kw}
        if session is not None:
            args["session"] = session
        return self.do("kv", "put", args)

    def close(self, sid: str) -> Any:
        return self.do("locks", "close", {"session": sid})

    def expire(self, sid: str, idle_ms: int = 5000) -> Any:
        return self.do("locks", "expire", {"session": sid, "idle_ms": idle_ms})

    def events(self, start: int = 1) -> list[tuple[int, str, str]]:
        return [(e.revision, e.type, e.key) for e in self.kv.history.events_from(start)]


def test_a_put_with_a_session_binds_the_key_and_shows_it() -> None:
    c = Cluster()
    s = c.open()
    res = c.put("svc/a", "10.0.0.1", s)
    assert res == {"revision": c.index, "prev_revision": 0}
    assert c.kv.owner_of("svc/a") == s and c.kv.get("svc/a") == ("10.0.0.1", c.index)
    c.put("plain", 1)
    assert c.kv.owner_of("plain") is None
    page, nxt = c.kv.page("")
    assert page == [{"key": "plain", "value": 1, "revision": c.index},
                    {"key": "svc/a", "value": "10.0.0.1", "revision": c.index - 1,
                     "session": s}]
    assert nxt is None


def test_closing_a_session_deletes_its_keys_at_the_close_index_in_key_order() -> None:
    c = Cluster()
    s, other = c.open(), c.open()
    for k in ("svc/c", "svc/a", "svc/b"):
        c.put(k, k, s)
    c.put("svc/other", 1, other)
    c.put("plain", 1)
    start = c.index + 1
    res = c.close(s)
    assert res["closed"] is True
    end = c.index
    assert c.events(start) == [(end, "delete", "svc/a"), (end, "delete", "svc/b"),
                               (end, "delete", "svc/c")]
    assert sorted(c.kv.data) == ["plain", "svc/other"]
    assert s not in c.kv.bound and c.kv.owner == {"svc/other": other}
    # The other session's expiry deletes its key, at the expiry's index.
    c.expire(other, idle_ms=4999)  # not due: nothing ends, nothing is deleted
    assert "svc/other" in c.kv.data
    c.expire(other)
    assert c.events(end + 1) == [(c.index, "delete", "svc/other")]
    assert sorted(c.kv.data) == ["plain"] and c.kv.owner == {} and c.kv.bound == {}


def test_the_binding_follows_the_last_put() -> None:
    c = Cluster()
    a, b = c.open(), c.open()
    c.put("k/unbound", 1, a)
    c.put("k/unbound", 2)  # a put without a session makes it ordinary again
    c.put("k/moved", 1, a)
    c.put("k/moved", 2, b)  # another session's put moves it
    c.put("k/deleted", 1, a)
    c.do("kv", "delete", {"key": "k/deleted"})
    c.put("k/kept", 1, a)
    c.put("k/kept", 2, a)  # the same session again: still bound
    assert c.kv.owner == {"k/moved": b, "k/kept": a}
    start = c.index + 1
    c.close(a)
    assert c.events(start) == [(c.index, "delete", "k/kept")]
    assert sorted(c.kv.data) == ["k/moved", "k/unbound"]
    c.put("k/deleted", 3)  # absent since its delete; a new ordinary key
    c.close(b)
    assert sorted(c.kv.data) == ["k/deleted", "k/unbound"]


def test_a_put_to_a_session_that_is_not_open_changes_nothing() -> None:
    c = Cluster()
    s = c.open()
    c.put("k", "before")
    c.close(s)
    before, events = c.reg.snapshot(), c.events()
    for sid in (s, "s999", "nope"):
        res = c.put("k", "after", sid)
        assert res["error"] == "session_not_found" and res["status"] == 404, res
        assert res["session"] == sid and res["message"]
        res = c.put("new", "after", sid)
        assert res["error"] == "session_not_found"
    assert c.reg.snapshot() == before and c.events() == events
    assert c.kv.get("k") == ("before", 2)


def test_an_unknown_session_wins_over_a_failed_compare_and_bad_sessions_are_400() -> None:
    c = Cluster()
    res = c.put("k", 1, "s404", expect_revision=7)
    assert res["error"] == "session_not_found"
    before = c.reg.snapshot()
    for bad in ("", 5, ["s1"], {"id": "s1"}, True):
        res = c.do("kv", "put", {"key": "k", "value": 1, "session": bad})
        assert (res["error"], res["status"]) == ("invalid_command", 400), (bad, res)
    assert c.reg.snapshot() == before


def test_a_kv_store_without_a_lock_service_knows_no_session() -> None:
    kv = KVStore()
    from distsync.services.base import CommandError

    with pytest.raises(CommandError) as ei:
        kv.apply("put", {"key": "k", "value": 1, "session": "s1"}, 1)
    assert ei.value.code == "session_not_found" and kv.data == {}


def test_a_failed_compare_with_an_open_session_binds_nothing() -> None:
    c = Cluster()
    s = c.open()
    res = c.put("k", 1, s, expect_revision=3)
    assert res["error"] == "compare_failed"
    assert c.kv.owner == {} and c.kv.data == {}
    assert c.put("k", 1, s, expect_revision=0)["revision"] == c.index
    assert c.kv.owner == {"k": s}


def test_snapshot_round_trip_keeps_bindings() -> None:
    c = Cluster()
    a, b = c.open(), c.open()
    c.put("x/1", 1, a)
    c.put("x/2", {"v": 2}, b)
    c.put("x/3", 3)
    blob = c.reg.snapshot()
    rows = msgpack.unpackb(blob, raw=False)["services"]["kv"]
    assert sorted(rows, key=lambda r: r[0]) == [["x/1", 1, 3, a], ["x/2", {"v": 2}, 4, b],
                                                ["x/3", 3, 5]]
    # The cached rows give exactly the bytes of packing the snapshot whole.
    assert b"".join(c.kv.snapshot_chunks()) == msgpack.packb(c.kv.snapshot(),
                                                             use_bin_type=True)
    d = Cluster()
    d.reg.restore(blob, c.index)
    d.index = c.index
    assert d.kv.owner == c.kv.owner and d.kv.bound == c.kv.bound
    assert d.reg.snapshot() == blob
    d.close(a)
    assert sorted(d.kv.data) == ["x/2", "x/3"]
    assert d.events(c.index + 1) == [(d.index, "delete", "x/1")]


def test_an_old_snapshot_without_bindings_restores() -> None:
    """A snapshot from before ephemeral keys: three-element rows, no session anywhere."""
    old = msgpack.packb({"services": {"kv": [["a", 1, 1], ["b", [2], 2]]}, "dedupe": []},
                        use_bin_type=True)
    c = Cluster()
    c.reg.restore(old, 2)
    c.index = 2
    assert c.kv.get("b") == ([2], 2) and c.kv.owner == {} and c.kv.bound == {}
    s = c.open()
    c.put("a", 9, s)
    c.close(s)
    assert sorted(c.kv.data) == ["b"]
    kv = KVStore()
    kv.restore([["a", 1, 1], ["b", 2, 2, "s7"]])  # old and new rows side by side
    assert kv.owner == {"b": "s7"} and kv.bound == {"s7": {"b": None}}


def test_listing_pages_by_count_and_bytes() -> None:
    kv = KVStore()
    for i in range(7):
        kv.apply("put", {"key": f"p/{i}", "value": "x" * 100, "sz": 102}, i + 1)
    kv.apply("put", {"key": "q", "value": 1, "sz": 1}, 8)
    page, nxt = kv.page("p/", "", 3)
    assert [i["key"] for i in page] == ["p/0", "p/1", "p/2"] and nxt == "p/2"
    page, nxt = kv.page("p/", nxt, 3)
    assert [i["key"] for i in page] == ["p/3", "p/4", "p/5"] and nxt == "p/5"
    page, nxt = kv.page("p/", nxt, 3)
    assert [i["key"] for i in page] == ["p/6"] and nxt is None
    page, nxt = kv.page("p/", "", 3, max_bytes=200)  # two values of ~105 bytes fill it
    assert [i["key"] for i in page] == ["p/0", "p/1"] and nxt == "p/1"
    page, nxt = kv.page("p/", "", 3, max_bytes=1)  # never fewer than one
    assert [i["key"] for i in page] == ["p/0"] and nxt == "p/0"
    assert kv.page("zzz") == ([], None)
    assert kv.page("", "p/6") == ([{"key": "q", "value": 1, "revision": 8}], None)


# -- properties: random sessions, ephemeral and ordinary puts, deletes, ends ---------------

KEYS = ["e/a", "e/b", "e/c", "f"]


@st.composite
def programs(draw: st.DrawFn) -> list[tuple[str, Any]]:
    steps = draw(st.lists(st.tuples(
        st.sampled_from(["open", "put_s", "put_s", "put", "delete", "close", "expire"]),
        st.sampled_from(KEYS), st.integers(0, 4)), max_size=30))
    return steps


def run_program(c: Cluster, steps: list[tuple[str, Any]], check: bool = True,
                opened: list[str] | None = None) -> list[Any]:
    """Apply `steps`; sessions are named by their order of opening (an index into `opened`,
    which this extends). With `check`, after every step: a key is bound only to an open
    session, a session end deleted exactly the keys bound to it, at its index, and a put to
    a session that is not open changed nothing."""
    opened = [] if opened is None else opened
    results = []
    for what, key, n in steps:
        sid = opened[n % len(opened)] if opened else "s0"
        bound_before = {k: s for k, s in c.kv.owner.items()}
        keys_before = set(c.kv.data)
        if what == "open":
            res = c.do("locks", "open", {"ttl_ms": 1000})
            opened.append(res["session"])
        elif what == "put_s":
            res = c.put(key, n, sid)
        elif what == "put":
            res = c.put(key, n)
        elif what == "delete":
            res = c.do("kv", "delete", {"key": key})
        elif what == "close":
            res = c.close(sid)
        else:
            res = c.expire(sid, idle_ms=1000)
        results.append(res)
        if not check:
            continue
        for k, s in c.kv.owner.items():
            assert c.locks.session_open(s), (k, s)
            assert k in c.kv.data and k in c.kv.bound[s]
        assert sum(len(v) for v in c.kv.bound.values()) == len(c.kv.owner)
        if what in ("close", "expire"):
            ended = isinstance(res, dict) and (res.get("closed") or res.get("expired"))
            gone = keys_before - set(c.kv.data)
            want = {k for k, s in bound_before.items() if s == sid} if ended else set()
            assert gone == want, (what, sid, gone, want)
            evs = [(e.type, e.key) for e in c.kv.history.events_from(c.index)]
            assert evs == [("delete", k) for k in sorted(want)]
        elif what == "put_s" and isinstance(res, dict) and "error" in res:
            assert res["error"] == "session_not_found" and set(c.kv.data) == keys_before
    return results


@settings(max_examples=200, deadline=None)
@given(programs())
def test_bindings_hold_only_open_sessions_and_ends_delete_exactly_their_keys(
        steps: list[tuple[str, Any]]) -> None:
    run_program(Cluster(), steps)


@settings(max_examples=100, deadline=None)
@given(programs(), st.data())
def test_a_snapshot_restored_mid_program_ends_the_same(steps: list[tuple[str, Any]],
                                                       data: Any) -> None:
    """The same program, straight or with the state restored from a snapshot at any point,
    gives the same results, the same final snapshot bytes and the same history events after
    the cut (a restored node deletes a session's keys in the same order as one that
    replayed the log)."""
    cut = data.draw(st.integers(0, len(steps)))
    straight = Cluster()
    want = run_program(straight, steps, check=False)
    first = Cluster()
    opened: list[str] = []
    got = run_program(first, steps[:cut], check=False, opened=opened)
    restored = Cluster()
    restored.reg.restore(first.reg.snapshot(), first.index)
    restored.index = first.index
    got += run_program(restored, steps[cut:], opened=opened)
    assert got == want
    assert restored.reg.snapshot() == straight.reg.snapshot()
    assert [(e.revision, e.type, e.key) for e in
            straight.kv.history.events_from(first.index + 1)] == restored.events(
                first.index + 1)
