"""ElectionService as a pure state machine, applied through a real Registry with the lock
service wired as server.py wires it: FIFO election, the fencing token (the electing index),
proclaim by a non-leader refused, resign and withdrawal, a session's close or expiry electing
the next candidate at that index, quotas, and a snapshot round trip (also from a snapshot
taken before the service existed)."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from distsync.services.elections import ElectionService
from distsync.services.kv import KVStore
from distsync.services.locks import LockService
from distsync.services.registry import Registry, encode_command


class Cluster:
    """One node's registry, fed commands at consecutive indexes."""

    def __init__(self) -> None:
        self.locks = LockService()
        self.el = ElectionService(self.locks)
        self.locks.on_session_end(self.el.session_ended)
        self.reg = Registry([KVStore(), self.locks, self.el])
        self.index = 0

    def do(self, service: str, op: str, **args: Any) -> Any:
        self.index += 1
        return self.reg.apply(encode_command(service, op, args, None), self.index)

    def open(self) -> str:
        return self.do("locks", "open", ttl_ms=5000)["session"]

    def campaign(self, sid: str, value: Any = "v", name: str = "e") -> Any:
        return self.do("elections", "campaign", election=name, session=sid, value=value)


def test_first_candidate_is_elected_with_its_campaign_index_as_token() -> None:
    c = Cluster()
    a = c.open()
    r = c.campaign(a, "host-a")
    assert r["elected"] is True and r["token"] == c.index and r["value"] == "host-a"
    assert c.el.leader("e")["leader"] == {"session": a, "value": "host-a", "token": c.index,
                                          "candidate": c.index}


def test_candidates_are_elected_in_fifo_order_with_increasing_tokens() -> None:
    c = Cluster()
    sids = [c.open() for _ in range(4)]
    first = c.campaign(sids[0])
    waits = [c.campaign(s, f"v{i}") for i, s in enumerate(sids[1:], 1)]
    assert [w["position"] for w in waits] == [1, 2, 3]
    assert all(not w["elected"] for w in waits)
    tokens = [first["token"]]
    for i in range(3):
        leader = c.el.leader("e")["leader"]
        assert leader["session"] == sids[i]
        r = c.do("elections", "resign", election="e", session=sids[i], token=leader["token"])
        assert r["was_leader"] and r["leader"]["session"] == sids[i + 1]
        assert r["leader"]["token"] == c.index  # elected by the resign, at its index
        tokens.append(r["leader"]["token"])
    assert tokens == sorted(set(tokens))
    assert c.el.leader("e")["leader"]["value"] == "v3"


def test_campaign_again_answers_the_same_candidacy() -> None:
    c = Cluster()
    a, b = c.open(), c.open()
    first = c.campaign(a)
    assert c.campaign(a, "other") == {**first, "revision": first["revision"]}
    w = c.campaign(b)
    again = c.campaign(b)
    assert again["candidate"] == w["candidate"] and again["position"] == 1
    assert c.el.info("e")["waiting"] == [{"session": b, "candidate": w["candidate"],
                                          "value": "v"}]


def test_proclaim_by_the_leader_changes_the_value_and_the_revision() -> None:
    c = Cluster()
    a = c.open()
    tok = c.campaign(a, 1)["token"]
    r = c.do("elections", "proclaim", election="e", session=a, token=tok, value={"x": 2})
    assert r["value"] == {"x": 2} and r["token"] == tok and r["revision"] == c.index
    assert [ev["leader"]["value"] for ev in c.el.recent_changes("e")] == [1, {"x": 2}]


def test_proclaim_by_a_non_leader_or_with_a_stale_token_is_refused_and_changes_nothing() -> None:
    c = Cluster()
    a, b = c.open(), c.open()
    tok = c.campaign(a, "a")["token"]
    c.campaign(b, "b")
    before = c.reg.snapshot()
    r = c.do("elections", "proclaim", election="e", session=b, token=tok, value="b!")
    assert r["error"] == "not_leader" and r["status"] == 409
    assert r["leader"]["session"] == a
    r = c.do("elections", "proclaim", election="e", session=a, token=tok - 1, value="a!")
    assert r["error"] == "not_leader"
    r = c.do("elections", "proclaim", election="nobody", session=a, token=tok, value="a!")
    assert r["error"] == "not_leader"
    assert c.reg.snapshot() == before


def test_a_waiting_candidate_withdraws_and_the_leader_stays() -> None:
    c = Cluster()
    a, b, d = c.open(), c.open(), c.open()
    tok = c.campaign(a)["token"]
    c.campaign(b)
    w = c.campaign(d)
    r = c.do("elections", "resign", election="e", session=b)
    assert r == {"resigned": True, "was_leader": False, "election": "e", "session": b,
                 "index": c.index, "leader": c.el.leader("e")["leader"]}
    assert c.el.leader("e")["leader"]["token"] == tok
    assert c.el.candidacy(w["candidate"])["position"] == 1
    r = c.do("elections", "resign", election="e", session=b)
    assert r["error"] == "not_candidate" and r["status"] == 409


def test_resign_of_the_last_leader_leaves_nobody_and_the_next_token_is_larger() -> None:
    c = Cluster()
    a = c.open()
    t1 = c.campaign(a)["token"]
    c.do("elections", "resign", election="e", session=a)
    assert c.el.leader("e")["leader"] is None and "e" not in c.el.elections
    t2 = c.campaign(a)["token"]
    assert t2 > t1


def test_session_close_and_expiry_elect_the_next_candidate_at_that_index() -> None:
    c = Cluster()
    a, b, d = c.open(), c.open(), c.open()
    c.campaign(a, "a")
    c.campaign(b, "b")
    c.campaign(d, "d")
    c.do("locks", "close", session=a)
    assert c.el.leader("e")["leader"] == {"session": b, "value": "b", "token": c.index,
                                          "candidate": c.el.leader("e")["leader"]["candidate"]}
    c.do("locks", "expire", session=b, idle_ms=5000)
    assert c.el.leader("e")["leader"]["session"] == d
    assert c.el.leader("e")["leader"]["token"] == c.index


def test_a_candidate_whose_session_ends_leaves_the_queue() -> None:
    c = Cluster()
    a, b, d = c.open(), c.open(), c.open()
    tok = c.campaign(a)["token"]
    wb = c.campaign(b)
    c.campaign(d)
    c.do("locks", "close", session=b)
    assert c.el.candidacy(wb["candidate"])["state"] == "session_closed"
    assert c.el.leader("e")["leader"]["token"] == tok  # the leader did not change
    c.do("elections", "resign", election="e", session=a)
    assert c.el.leader("e")["leader"]["session"] == d


def test_campaign_with_an_unknown_session_is_refused() -> None:
    c = Cluster()
    r = c.campaign("s999")
    assert r["error"] == "session_not_found" and r["status"] == 404
    assert c.el.elections == {}


def test_bad_arguments_are_refused() -> None:
    c = Cluster()
    a = c.open()
    for op, args in [("campaign", {"election": "e", "session": a}),
                     ("campaign", {"election": "", "session": a, "value": 1}),
                     ("proclaim", {"election": "e", "session": a, "value": 1}),
                     ("proclaim", {"election": "e", "session": a, "token": True, "value": 1}),
                     ("resign", {"election": "e"})]:
        r = c.do("elections", op, **args)
        assert r["error"] == "invalid_command" and r["status"] == 400, (op, args, r)
    assert c.do("elections", "nope")["error"] == "bad_op"


def test_quotas_count_elections_and_waiting_candidates() -> None:
    c = Cluster()
    c.reg.quota.limits.update(max_locks=1, max_waiters=1)
    a, b, d = c.open(), c.open(), c.open()
    c.campaign(a, name="one")
    r = c.campaign(a, name="two")
    assert r["error"] == "quota_exceeded" and r["limit"] == "max_locks"
    c.campaign(b, name="one")
    r = c.campaign(d, name="one")
    assert r["error"] == "quota_exceeded" and r["limit"] == "max_waiters"
    assert c.campaign(b, name="one")["position"] == 1  # its own candidacy: no new room


def test_snapshot_round_trip_keeps_leaders_queues_tokens_and_session_bindings() -> None:
    c = Cluster()
    a, b, d = c.open(), c.open(), c.open()
    c.campaign(a, "a", "x")
    c.campaign(b, "b", "x")
    c.campaign(d, "d", "y")
    snap = c.reg.snapshot()
    c2 = Cluster()
    c2.reg.restore(snap, c.index)
    c2.index = c.index
    assert c2.reg.snapshot() == snap
    assert c2.el.info("x") == c.el.info("x") and c2.el.info("y") == c.el.info("y")
    c2.do("locks", "close", session=a)  # the restored binding: b leads x now
    assert c2.el.leader("x")["leader"]["session"] == b


def test_restore_of_a_snapshot_from_before_the_service_gives_empty_elections() -> None:
    c = Cluster()
    a = c.open()
    snap = msgpack.unpackb(c.reg.snapshot(), raw=False, strict_map_key=False)
    del snap["services"]["elections"]
    c2 = Cluster()
    c2.campaign(c2.open())
    c2.reg.restore(msgpack.packb(snap, use_bin_type=True), c.index)
    assert c2.el.elections == {} and c2.el.leader("e")["leader"] is None
    c2.index = c.index
    assert c2.campaign(a)["elected"] is True  # the session came with the locks' state


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["campaign", "resign", "proclaim", "close",
                                           "expire", "open"]),
                          st.integers(0, 4), st.sampled_from(["e", "f"])),
                max_size=60))
def test_invariants_hold_after_every_command(ops: list[tuple[str, int, str]]) -> None:
    """At every index: at most one leader per election and it is a live session; a waiting
    candidate is a live session too; tokens never go back and change only with the leader;
    and a snapshot restored elsewhere gives the same state."""
    c = Cluster()
    sids = [c.open() for _ in range(3)]
    last: dict[str, tuple[int, str | None]] = {}
    for op, k, name in ops:
        sid = sids[k % len(sids)]
        if op == "open":
            sids.append(c.open())
        elif op in ("close", "expire"):
            c.do("locks", op, session=sid, idle_ms=5000)
        elif op == "campaign":
            c.campaign(sid, k, name)
        elif op == "resign":
            c.do("elections", "resign", election=name, session=sid)
        else:
            tok = (c.el.leader(name)["leader"] or {}).get("token", 1)
            c.do("elections", "proclaim", election=name, session=sid, token=tok, value=-k)
        for n, el in c.el.elections.items():
            assert el.leader is not None, "a queue without a leader"
            assert c.locks.session_open(el.leader.session)
            assert all(c.locks.session_open(w.session) for w in el.waiting)
            members = [el.leader.session] + [w.session for w in el.waiting]
            assert len(members) == len(set(members))
            tok, who = last.get(n, (0, None))
            assert el.token >= tok
            if el.token == tok:
                assert el.leader.session == who
            last[n] = (el.token, el.leader.session)
        live = {x.id: n for n, el in c.el.elections.items()
                for x in [el.leader, *el.waiting] if x is not None}
        assert c.el._cands == live  # the long polls' index agrees with the state
        for cid in live:
            assert c.el.candidacy(cid)["election"] == live[cid]
    snap = c.reg.snapshot()
    c2 = Cluster()
    c2.reg.restore(snap, c.index)
    assert c2.reg.snapshot() == snap
