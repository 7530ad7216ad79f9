"""Commit notices are held back briefly and dropped when an append with entries makes them
moot (node.py NoticeHold); held notices are still delivered, so followers apply every
committed write without further traffic. And the hard state, which saves of entries no
longer rewrite when only the commit index moved, is still written when a membership change
commits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from raftsim import Cluster

from distsync.api.app import serve
from distsync.node import Node, NodeConfig, NoticeHold
from distsync.raft.types import Entry, EntryType, Message, MsgType
from distsync.server import build_server


def notice(dst: str, commit: int) -> Message:
    return Message(MsgType.APPEND, "n1", dst, 2, index=commit, log_term=2, commit=commit)


def append(dst: str, idx: int) -> Message:
    return Message(MsgType.APPEND, "n1", dst, 2, index=idx - 1, log_term=2,
                   entries=[Entry(idx, 2, EntryType.NORMAL, b"x")], commit=idx - 1)


def test_held_notices_go_out_once_due_latest_per_peer() -> None:
    h = NoticeHold(0.005)
    h.hold([notice("n2", 7), notice("n3", 7)], now=100.0)
    assert h.take_due(100.004, leading_term=2) == []
    h.hold([notice("n2", 8)], now=100.003)  # a newer one replaces it; the due time stays
    out = h.take_due(100.005, leading_term=2)
    assert sorted((m.dst, m.commit) for m in out) == [("n2", 8), ("n3", 7)]
    assert h.take_due(200.0, leading_term=2) == [] and not h.held


def test_an_append_with_entries_makes_the_peers_notice_moot() -> None:
    h = NoticeHold(0.005)
    h.hold([notice("n2", 7), notice("n3", 7)], now=0.0)
    hb = Message(MsgType.HEARTBEAT, "n1", "n3", 2, commit=7)
    h.sent([append("n2", 8), hb])  # a heartbeat does not replace a notice
    assert [m.dst for m in h.take_due(1.0, leading_term=2)] == ["n3"]


def test_notices_of_a_term_we_no_longer_lead_are_dropped() -> None:
    """A leader that stepped down while notices were held must not send them: they carry a
    term that is over (harmless to a follower, which rejects them, but etcd drops them and
    so do we; found by the step-by-step tests on the real driver)."""
    h = NoticeHold(0.005)
    h.hold([notice("n2", 7), notice("n3", 7)], now=0.0)
    assert h.take_due(1.0, leading_term=3) == [] and not h.held
    h.hold([notice("n2", 7)], now=2.0)
    assert h.take_due(3.0, leading_term=None) == [] and not h.held
    h.hold([notice("n2", 7)], now=4.0)
    assert [m.dst for m in h.take_due(5.0, leading_term=2)] == ["n2"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.asynccontextmanager
async def three_nodes(tmp_path) -> AsyncIterator[list[Node]]:
    """Three real nodes over loopback, in this event loop, with a leader elected."""
    ids = ["n1", "n2", "n3"]
    peers = {nid: f"127.0.0.1:{p}" for nid, p in zip(ids, _free_ports(3), strict=True)}
    built = [build_server(NodeConfig(node_id=nid, listen=peers[nid], peers=peers,
                                     data_dir=str(tmp_path / nid))) for nid in ids]
    nodes = [nd for nd, _ in built]
    runners = [await serve(nd, app) for nd, app in built]
    try:
        for _ in range(200):
            if any(nd.is_leader() for nd in nodes):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no leader elected")
        yield nodes
    finally:
        # Every node stops first, then the servers go (as `distsync node` does). A test here
        # once took 61 s now and then under load: a request handler waited on a ReadIndex
        # round queued for a stopped node's loop, and aiohttp's cleanup waited out its 60 s
        # for it. Node.stop() now fails such work at once (tests/unit/test_node_stop.py).
        for nd in nodes:
            if nd._task is not None:
                await nd.stop()
        for r in runners:
            await r.cleanup()


def leader_of(nodes: list[Node]) -> Node:
    return next(nd for nd in nodes if nd.is_leader())


@pytest.mark.asyncio
async def test_followers_apply_every_write_with_no_traffic_after_it(tmp_path) -> None:
    """After a burst of writes (whose notices are mostly dropped) and then silence, every
    follower has applied the last write."""
    async with three_nodes(tmp_path) as nodes:
        ld = leader_of(nodes)
        for i in range(30):
            await ld.propose("kv", "put", {"key": f"k{i}", "value": i}, f"rid-{i}", 5.0)
        last = ld.core.log.committed
        for nd in nodes:
            if nd is not ld:
                assert await nd.wait_until(lambda nd=nd: nd.core.log.applied >= last, 5.0), (
                    nd.id, nd.core.log.applied, last)
                assert nd.kv.get("k29") is not None


@pytest.mark.asyncio
async def test_a_committed_membership_change_is_in_the_persisted_commit_index(tmp_path) -> None:
    """A restarted node rebuilds its membership from the entries its stored commit index
    covers: once a node has applied a change, its disk must say it is committed."""
    async with three_nodes(tmp_path) as nodes:
        ld = leader_of(nodes)
        for i in range(5):
            await ld.propose("kv", "put", {"key": f"k{i}", "value": i}, f"rid-{i}", 5.0)
        victim = next(nd for nd in nodes if nd is not ld)
        await ld.remove_member(victim.id)
        conf_index = ld.core.conf_index
        rest = [nd for nd in nodes if nd is not victim]
        for nd in rest:
            assert await nd.wait_until(lambda nd=nd: nd.core.conf_index >= conf_index, 5.0)
            assert nd.storage.load().hard_state.commit >= conf_index, nd.id


def test_a_due_notice_with_nothing_to_supersede_it_goes_out_on_the_next_pass() -> None:
    """The step-by-step driver: once the leader's clock passes a held notice's due time,
    its next pass sends it to every follower, with the commit index it was held for."""
    c = Cluster(["n1", "n2", "n3"], seed=1)
    c.stabilize()
    c.elect("n1")
    first = c.propose("n1", b"a")
    for _ in range(3):  # append out, acknowledgements back, commit: notices now held
        c.process_all()
        c.deliver_all()
    c.process("n1")
    leader = c.nodes["n1"]
    assert leader.node is not None and leader.clock is not None
    assert c.raft("n1").log.committed >= first
    due = leader.node.notices_due()
    assert due is not None, "the commit of the first write should be held as notices"
    c.inflight.clear()
    assert c.flush_notices()  # the clock moved to when they are due, then a pass
    out = [m for m in c.inflight if m.src == "n1" and m.type == MsgType.APPEND]
    assert sorted(m.dst for m in out) == ["n2", "n3"], out
    assert all(not m.entries and m.commit >= first for m in out), out
    assert leader.node.notices_due() is None
