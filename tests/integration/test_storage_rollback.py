"""A member whose data directory was restored in place from an older copy of itself.

Found by an adversarial run (stop 34): such a directory is consistent, only older, so the
store finds nothing wrong with it. With the member that holds the later writes down and the
third member behind, the restored member voted, the two elected a leader without those
writes, and every one of them was lost.

What tells it apart is outside the directory: its peers remember every start of every member
(node/distsync/starts.py). A member's start carries the id of the start before it; a copy
from before a start the peers saw cannot continue that chain, so they refuse its stream,
tell it why, and it recovers like a damaged disk (no vote until a leader repairs it).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
from cluster_helpers import (
    diag,
    no_leader_for,
    raw_request,
    ready,
    wait_caught_up,
    wait_until,
)

from distsync.client import BlockingClient, NotFound
from distsync.local import LocalCluster, format_status

TICK_MS = 20


def test_a_member_restored_from_its_own_backup_is_caught_and_repaired(tmp_path: Path) -> None:
    with LocalCluster(3, tick_ms=TICK_MS, data_dir=tmp_path / "c") as lc:
        leader = ready(lc)
        victim, third = sorted(n for n in lc.nodes if n != leader)
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                c.put(f"one/{i}", i)
        wait_caught_up(lc, victim, leader)
        # The backup: taken while the member is stopped, as an operator would.
        lc.kill(victim, signal.SIGTERM)
        backup = tmp_path / "backup"
        shutil.copytree(lc.nodes[victim].data_dir, backup)
        lc.start_node(victim)
        ready(lc)
        wait_caught_up(lc, victim, leader)
        wait_until(lc, lambda: f"{victim} is on its start 2" in lc.nodes[third].log_path
                   .read_text(errors="replace"), 15, f"{third} to see {victim}'s new start")
        _write_with_one_down(lc, leader, third, "two")
        _restore(lc, victim, backup)  # in place
        lc.kill(leader)
        lc.start_node(third)
        lc.start_node(victim)

        def fault() -> str | None:
            f = (lc.status(victim) or {}).get("storage_fault")
            return f["kind"] if f else None

        wait_until(lc, fault, 15, f"{victim} to learn that it was rolled back")
        assert fault() == "rolled_back", diag(lc, f"{victim}: {fault()}")
        no_leader_for(lc, 2.0, "elected without the writes the restored member had")
        lc.start_node(leader)
        ready(lc)
        wait_until(lc, lambda: fault() is None, 30, f"{victim} to be repaired")
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                assert c.get(f"one/{i}")["value"] == i
                assert c.get(f"two/{i}")["value"] == i, diag(lc, f"two/{i} lost")


def test_two_lost_directories_beside_a_member_that_saw_no_write_stay_unavailable(
        tmp_path: Path) -> None:
    """Stop 34's adversarial run, its extra probe: the two members that held the writes
    come back with nothing, one with its files cut to 0 bytes and one on an empty disk, next
    to a third that never got past the founding entries. Each empty member asked its peers
    whether the cluster was new; the other empty one and the third both said "only the
    founding entries", and a new cluster was founded without the 20 writes.

    The third had heard each of them finish asking whether the cluster was new, and kept
    that on its disk (HardState.finished; before stop 37: it had seen a start of each, and an
    empty directory that cannot continue a start a peer saw is not a new one, starts.py). It
    answers so, both wait for a leader to repair them, and with two of three damaged none is
    elected."""
    with LocalCluster(3, tick_ms=TICK_MS, data_dir=tmp_path / "c",
                      extra_args=["--election-ticks", "100"]) as lc:
        def logged(n: str, text: str) -> bool:
            return text in lc.nodes[n].log_path.read_text(errors="replace")

        wait_until(lc, lambda: all(logged(n, "a new cluster") for n in lc.nodes)
                   and logged("n3", "n1 is on its start 1")
                   and logged("n3", "n2 is on its start 1"), 30,
                   "the three to find the cluster new, n3 to see the others' starts",
                   interval=0.005)
        lc.kill("n3")  # before the first election (2 s away at the soonest)
        leader = lc.leader(timeout=30, among=["n1", "n2"])
        with BlockingClient([lc.nodes["n1"].addr, lc.nodes["n2"].addr], timeout=30) as c:
            for i in range(20):
                c.put(f"held/{i}", i)
        lc.kill("n1", signal.SIGTERM)
        lc.kill("n2", signal.SIGTERM)
        for f in lc.nodes["n1"].data_dir.rglob("*"):
            if f.is_file():
                os.truncate(f, 0)  # what the helper did to the one segment
        shutil.rmtree(lc.nodes["n2"].data_dir)
        lc.nodes["n2"].data_dir.mkdir()
        lc.extra_args = ["--election-ticks", "10"]  # many election timeouts in the window
        for n in lc.nodes:
            lc.start_node(n)

        def fault(n: str) -> dict | None:
            return (lc.status(n) or {}).get("storage_fault")

        wait_until(lc, lambda: all(
            (f := fault(n)) is not None and not f["discovering"] for n in ("n1", "n2")), 15,
            "n1 and n2 to learn that their empty directories replaced used ones")
        # The first to stop asking was told by n3 (the two empty ones vouch for each other
        # while both ask); the other may then hear it from either.
        told = [n for n in ("n1", "n2")
                if "n3 knows this data directory replaced one in use" in fault(n)["detail"]]
        assert told, diag(lc, f"neither was told by n3: {fault('n1')}, {fault('n2')}")
        no_leader_for(lc, 3.0, f"a new cluster founded without the writes {leader} held")


def test_a_directory_from_a_same_named_cluster_is_shut_out_and_cannot_shut_others_out(
        tmp_path: Path) -> None:
    """A member's directory replaced by the same member's from another cluster with the
    same cluster and member names (a directory records only names, so the identity check at
    start passes it). Its chain of starts is not the one its peers saw, so they refuse it.
    But it holds the other cluster's record of their starts too, and refused them in turn:
    before, the first refusal was believed, and the healthy third member (and then the
    returning leader) went into recovery on the word of the foreign one, leaving no member
    that could lead. A refusal is now believed only from a peer whose own start continues
    the one this node saw of it (test_starts.py). Since cluster ids, the two hold different
    ones, and refuse each other as two clusters' members before start chains are compared."""
    base = _free_port_run(3)  # both clusters at the same addresses, as under one DNS name
    _other_cluster_with_the_same_names(base, tmp_path / "other", writes=10)
    with LocalCluster(3, base, tick_ms=TICK_MS, data_dir=tmp_path / "c") as lc:
        leader = ready(lc)
        victim, third = sorted(n for n in lc.nodes if n != leader)
        wait_until(lc, lambda: f"{victim} is on its start 1" in lc.nodes[third].log_path
                   .read_text(errors="replace"), 15, f"{third} to see {victim}'s start")
        _write_with_one_down(lc, leader, third, "held")
        _restore(lc, victim, tmp_path / "other" / victim)
        lc.kill(leader)
        lc.start_node(third)
        lc.start_node(victim)

        def logged(n: str, text: str) -> bool:
            return text in lc.nodes[n].log_path.read_text(errors="replace")

        wait_until(lc, lambda: all(
            logged(a, f"refused stream from {b}") and logged(b, f"{a} refused this node")
            for a, b in ((victim, third), (third, victim))), 15,
            f"{victim} and {third} to refuse each other, and neither to believe the other")
        no_leader_for(lc, 2.0, f"elected with {victim}'s foreign log")
        st = lc.status(third)
        assert st is not None and st["storage_fault"] is None, diag(
            lc, f"{third} believed the foreign member: {st and st['storage_fault']}")
        # What an operator sees: each side says whom it refuses and whom it does not believe.
        sv = lc.status(victim)
        assert sv is not None, diag(lc, f"{victim} did not answer")
        for s_, other_ in ((st, victim), (sv, third)):
            r = s_["start_refusals"]
            assert other_ in r["refusing"] and other_ in r["refused_by"], diag(lc, str(r))
        table = format_status([st, sv])
        assert f"{third}: refuses {victim}: it holds another cluster's data" in table, table
        assert f"{victim}: refused by {third}:" in table, table
        assert f"{victim}: cluster id {sv['cluster_id']}" in table, table
        lc.start_node(leader)
        assert lc.leader(timeout=30, among=[leader, third]) in (leader, third)
        with BlockingClient([lc.nodes[leader].addr, lc.nodes[third].addr], timeout=30) as c:
            c.put("after", 1)
            for i in range(10):
                assert c.get(f"held/{i}")["value"] == i, diag(lc, f"held/{i} lost")
            with pytest.raises(NotFound):
                c.get("foreign/0")  # the foreign member's data never reached the cluster
        for n in (leader, third):
            st = lc.status(n)
            assert st is not None and st["storage_fault"] is None, diag(lc, f"{n}: {st}")
        st = lc.status(victim)
        assert st is not None and st["role"] != "leader", diag(lc, f"{victim} leads: {st}")


def _other_cluster_with_the_same_names(base: int, data_dir: Path, writes: int,
                                       leader_kills: int = 0) -> int:
    """Another cluster at the same addresses and under the same names, stopped once every
    member holds its `writes` keys (foreign/<i>; a last one after `leader_kills` stops of
    its leader, each followed by an election without it). Returns its first leader's term."""
    with LocalCluster(3, base, tick_ms=TICK_MS, data_dir=data_dir) as other:
        first_term = _term(other, ready(other))
        with BlockingClient(other.addrs, timeout=30) as c:
            for i in range(writes):
                c.put(f"foreign/{i}", i)
        for _ in range(leader_kills):
            ld = other.leader()
            other.kill(ld, signal.SIGTERM)
            other.leader(timeout=30, among=[n for n in other.nodes if n != ld])
            other.start_node(ld)
            ready(other)
        if leader_kills:
            with BlockingClient(other.addrs, timeout=30) as c:
                c.put("foreign/last", 1)
        for n in other.nodes:
            wait_caught_up(other, n, other.leader())
        for n in list(other.nodes):
            other.kill(n, signal.SIGTERM)
    return first_term


def _term(lc: LocalCluster, node: str) -> int:
    st = lc.status(node)
    assert st is not None, diag(lc, f"{node} did not answer")
    return int(st["term"])


def _write_with_one_down(lc: LocalCluster, leader: str, down: str, prefix: str) -> None:
    """`down` stopped, then ten writes through `leader`: only the leader and the other member
    hold them."""
    lc.kill(down)
    with BlockingClient([lc.nodes[leader].addr], timeout=30) as c:
        for i in range(10):
            c.put(f"{prefix}/{i}", i)


def _restore(lc: LocalCluster, node: str, copy: Path) -> None:
    """Stop `node` and replace its data directory by `copy`."""
    lc.kill(node, signal.SIGTERM)
    shutil.rmtree(lc.nodes[node].data_dir)
    shutil.copytree(copy, lc.nodes[node].data_dir)


def _free_port_run(n: int) -> int:
    """A first port such that it and the n - 1 after it are free now."""
    for base in range(random.randrange(20000, 50000), 60000, n):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def test_a_member_back_from_downtime_does_not_keep_a_replaced_peer_in_recovery(
        tmp_path: Path) -> None:
    """Stop 35's adversarial run (F3): R is down while H's directory is emptied, repaired by
    the others and started again. Back, R knows only H's old chain, refuses H's new one as
    "older", and H, with no record of R to doubt it by, recovers. A leader repaired H before
    its next dial to R, which it then made as a healthy member: refused and recovering again,
    four to six times over. H now dials R as recovering until R has taken a stream of it:
    one recovery, then healthy for good."""
    with LocalCluster(5, tick_ms=TICK_MS, data_dir=tmp_path / "c") as lc:
        leader = ready(lc)
        r, h = sorted(n for n in lc.nodes if n != leader)[:2]
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                c.put(f"one/{i}", i)
        lc.kill(h, signal.SIGTERM)
        lc.start_node(h)
        ready(lc)

        def logged(n: str, text: str) -> int:
            return lc.nodes[n].log_path.read_text(errors="replace").count(text)

        wait_until(lc, lambda: logged(r, f"{h} is on its start 2"), 15, f"{r} to see {h}'s start")
        lc.kill(r)
        lc.kill(h, signal.SIGTERM)
        shutil.rmtree(lc.nodes[h].data_dir)
        lc.start_node(h)

        def healthy(n: str) -> bool:
            st = lc.status(n)
            return st is not None and st["storage_fault"] is None

        wait_until(lc, lambda: healthy(h), 30, f"{h} to be repaired")
        lc.kill(h, signal.SIGTERM)
        lc.start_node(h)  # start 2 of its new chain
        ready(lc)
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                c.put(f"two/{i}", i)
        lc.start_node(r)
        wait_until(lc, lambda: logged(r, f"refused stream from {h}"), 15,
                   f"{r} to refuse {h}'s new chain")
        wait_until(lc, lambda: healthy(h) and h not in (lc.status(r) or {}).get(
            "start_refusals", {}).get("refusing", {h: ""}), 30,
            f"{h} repaired, and {r} to take its start")
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert healthy(h), diag(lc, f"{h} went back into recovery")
            time.sleep(0.05)
        assert logged(h, f"{h}: storage fault rolled_back") == 1, diag(
            lc, f"{h} recovered again and again")
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                assert c.get(f"one/{i}")["value"] == i and c.get(f"two/{i}")["value"] == i


def test_a_same_named_clusters_directory_is_never_taken_for_repaired(tmp_path: Path) -> None:
    """Stop 35's adversarial run (F1): with every member of this cluster still on its first
    start, a follower's directory was replaced by the same member's from another cluster
    with the same names, addresses and more terms. It took its peers' first starts as new
    chains, believed their refusal, recovered, and was 'repaired' at once (its longer log held
    the repair point's index): a voter serving the other cluster's keys. It now stops at the
    first entry the leader sends below its commit index that differs from its own."""
    base = _free_port_run(3)
    # more terms than this cluster will have
    _other_cluster_with_the_same_names(base, tmp_path / "other", writes=30, leader_kills=3)
    with LocalCluster(3, base, tick_ms=TICK_MS, data_dir=tmp_path / "c") as lc:
        leader = ready(lc)
        victim = sorted(n for n in lc.nodes if n != leader)[0]
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                c.put(f"held/{i}", i)
        _restore(lc, victim, tmp_path / "other" / victim)
        lc.start_node(victim)

        def stopped() -> bool:
            return not lc.nodes[victim].alive() and "is not this cluster's" in lc.nodes[
                victim].log_path.read_text(errors="replace")

        # Shut out (refused both ways), or recovering, or stopped: never a healthy member
        # following this cluster's leader.
        end = time.monotonic() + 15.0
        while time.monotonic() < end and not stopped():
            if lc.nodes[victim].alive():
                st = lc.status(victim)
                assert st is None or st["storage_fault"] is not None or st["leader"] is None, \
                    diag(lc, f"{victim} is taken for a healthy member: {st}")
            time.sleep(0.05)
        with BlockingClient([lc.nodes[n].addr for n in lc.nodes if n != victim],
                            timeout=30) as c:
            c.put("after", 1)
            for i in range(10):
                assert c.get(f"held/{i}")["value"] == i, diag(lc, f"held/{i} lost")
            with pytest.raises(NotFound):
                c.get("foreign/0")


def test_a_same_named_clusters_directory_with_the_same_terms_is_shut_out(
        tmp_path: Path) -> None:
    """The case `DivergentLog` cannot see: two clusters founded alike and elected once hold
    the same term at every index, so a leader finds nothing to tell the other cluster's
    directory from its own member's. With this cluster's members on their first starts,
    the foreign member believed their refusal, recovered, and was repaired at once: a voter
    whose applied state is the other cluster's. The first leader of a cluster now gives it
    an id of its own (in the no-op it commits), every member keeps it once applied, and two
    members with different ids refuse each other's streams."""
    base = _free_port_run(3)
    other_term = _other_cluster_with_the_same_names(base, tmp_path / "other", writes=10)
    for attempt in range(6):
        # Both clusters' logs must match term for term: the same first term, the same writes.
        lc = LocalCluster(3, base, tick_ms=TICK_MS, data_dir=tmp_path / f"c{attempt}")
        lc.start()
        try:
            leader = ready(lc)
            if _term(lc, leader) == other_term:
                break
        except BaseException:
            lc.keep_data = True  # its logs stay for the failure's reader
            lc.close()
            raise
        lc.stop()
    else:
        pytest.fail(f"no cluster elected its first leader in term {other_term}")
    with lc:
        victim = sorted(n for n in lc.nodes if n != leader)[0]
        with BlockingClient(lc.addrs, timeout=30) as c:
            for i in range(10):
                c.put(f"held/{i}", i)
        for n in lc.nodes:
            wait_caught_up(lc, n, leader)
        assert _term(lc, leader) == other_term, diag(lc, "an election while writing")
        _restore(lc, victim, tmp_path / "other" / victim)
        lc.start_node(victim)
        others = [n for n in lc.nodes if n != victim]

        def refused_as_foreign() -> bool:
            sts = [lc.status(n) for n in others]
            return all(s is not None and victim in s["start_refusals"]["refusing"]
                       and "another cluster" in s["start_refusals"]["refusing"][victim]
                       for s in sts)

        end = time.monotonic() + 10.0
        while time.monotonic() < end:
            st = lc.status(victim)
            assert st is None or st["storage_fault"] is not None or st["leader"] is None, \
                diag(lc, f"{victim} is taken for a healthy member: {st}")
            time.sleep(0.05)
        assert refused_as_foreign(), diag(lc, f"{victim} is not refused as another cluster's")
        # What an alert sees: each healthy member's id, and its refusal of the foreign one.
        ours = lc.status(others[0])["cluster_id"]
        for n in others:
            _, _, text = raw_request("GET", f"{lc.nodes[n].url}/metrics")
            for line in (f'distsync_cluster_id_info{{cluster_id="{ours}"}} 1.0',
                         f'distsync_peer_stream_refusals{{peer="{victim}",'
                         f'reason="foreign_cluster",side="refusing"}} 1.0'):
                assert line in text, diag(lc, f"{n}'s metrics lack {line}")
        with BlockingClient([lc.nodes[n].addr for n in others], timeout=30) as c:
            c.put("after", 1)
            for i in range(10):
                assert c.get(f"held/{i}")["value"] == i, diag(lc, f"held/{i} lost")
            with pytest.raises(NotFound):
                c.get("foreign/0")
