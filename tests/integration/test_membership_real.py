"""Membership changes on real processes: grow 3 -> 5, shrink 5 -> 3 (removing the leader).

Writers run through every change and must keep being acknowledged. After the shrink the two
removed processes are left RUNNING; the test then shows they no longer matter:

* the remaining members' voters exclude them and the cluster's term stays put while they run
  (a removed node that times out must not disrupt the cluster with elections);
* the cluster keeps committing entries that the removed nodes do not even have in their logs;
* with one of the three remaining voters killed, the other two still commit (2 of 3), again
  with entries the removed nodes do not have, so their votes were never part of the quorum.
"""

from __future__ import annotations

import asyncio
import time

from cluster_helpers import (
    agreed_leader,
    async_wait_until,
    diag,
    healthz,
    ready,
    wait_caught_up,
    wait_until,
)

from distsync.client import Client, DistSyncError
from distsync.local import LocalCluster


def _voters(res: dict) -> list[str]:
    return sorted(m["id"] for m in res["members"] if m["voter"])


async def test_grow_to_five_then_shrink_to_three_removing_the_leader() -> None:
    with LocalCluster(3) as lc:
        await asyncio.to_thread(ready, lc)
        acked: dict[str, int] = {}
        failed: list[str] = []
        stop = asyncio.Event()
        phases: dict[str, tuple[int, float]] = {}

        async with Client(lc.addrs, timeout=30) as wc, Client(lc.addrs, timeout=30) as admin:

            async def writer(w: int) -> None:
                i = 0
                while not stop.is_set():
                    key = f"mb/w{w}/{i:05d}"
                    try:
                        await wc.put(key, i)
                        acked[key] = i
                    except DistSyncError as e:
                        failed.append(f"{key}: {e!r}")
                    i += 1

            async def progress(phase: str, more: int = 20) -> None:
                """Writes are still being acknowledged after `phase`."""
                n = len(acked)
                await async_wait_until(
                    lc, lambda: len(acked) >= n + more, 30, f"{more} writes after {phase}"
                )
                phases[phase] = (len(acked), round(time.monotonic() - t0, 2))

            t0 = time.monotonic()
            tasks = [asyncio.create_task(writer(w)) for w in range(4)]
            try:
                await progress("start")

                # -- grow 3 -> 5 -------------------------------------------------------------
                for _ in range(2):
                    nd = lc.add_joiner()
                    await asyncio.to_thread(
                        wait_until, lc, lambda nd=nd: healthz(lc, nd.node_id), 30,
                        f"joiner {nd.node_id} to answer /healthz",
                    )
                    res = await admin.add_member(nd.node_id, nd.addr)
                    assert nd.node_id in _voters(res), diag(lc, f"add {nd.node_id}: {res}")
                    await progress(f"adding {nd.node_id}")

                everyone = sorted(lc.nodes)
                assert len(everyone) == 5
                leader = await asyncio.to_thread(agreed_leader, lc, 15.0)
                st = lc.status(leader)
                assert st["voters"] == everyone and st["learners"] == [], diag(lc, str(st))

                # -- shrink 5 -> 3: first the leader itself, then a follower ----------------
                res = await admin.remove_member(leader)
                assert leader not in [m["id"] for m in res["members"]], diag(lc, str(res))
                removed = [leader]
                new_leader = await asyncio.to_thread(
                    agreed_leader, lc, 15.0, [n for n in everyone if n not in removed]
                )
                assert new_leader != leader
                await progress(f"removing leader {leader}")

                victim = next(n for n in everyone if n not in (leader, new_leader))
                res = await admin.remove_member(victim)
                assert victim not in [m["id"] for m in res["members"]], diag(lc, str(res))
                removed.append(victim)
                await progress(f"removing {victim}")
            finally:
                stop.set()
                done, pending = await asyncio.wait(tasks, timeout=30)
                for t in pending:
                    t.cancel()
            assert not pending, diag(lc, "writers hung")
            for t in done:
                t.result()
            assert not failed, diag(lc, f"{len(failed)} writes failed: {failed[:5]}")
            print(f"acknowledged writes by phase: {phases}")

            remaining = [n for n in everyone if n not in removed]
            for r in removed:
                assert lc.nodes[r].alive(), diag(lc, f"removed node {r} should still run")
            leader = await asyncio.to_thread(agreed_leader, lc, 15.0, remaining)
            # Followers learn the commit of the last removal with the next heartbeat.
            def converged() -> bool:
                sts = [lc.status(n) for n in remaining]
                return all(
                    st is not None and st["voters"] == remaining and st["learners"] == []
                    for st in sts
                )

            await asyncio.to_thread(
                wait_until, lc, converged, 10, f"remaining nodes to see voters {remaining}"
            )
            members = await admin.members()
            assert sorted(m["id"] for m in members["members"]) == remaining

            # -- the removed nodes run but disturb nothing --------------------------------
            async with Client([lc.nodes[n].addr for n in remaining], timeout=20) as c:
                await c.put("mb/after-shrink", "ok")
                term = lc.status(leader)["term"]
                t_end = time.monotonic() + 2.5
                while time.monotonic() < t_end:  # an observation window, not a wait
                    for n in remaining:
                        st = await asyncio.to_thread(lc.status, n)
                        assert st is not None and st["term"] == term and st["leader"] == leader, \
                            diag(lc, f"cluster disturbed while removed nodes run: {n}: {st}")
                    await asyncio.sleep(0.1)
                for r in removed:
                    assert lc.nodes[r].alive()

                frozen = {r: lc.status(r)["last_index"] for r in removed}
                for i in range(5):
                    await c.put(f"mb/quorum3/{i}", i)
                commit = lc.status(leader)["commit"]
                assert commit > max(frozen.values()), diag(
                    lc, f"commit {commit} vs removed nodes' logs {frozen}"
                )

                # -- 2 of the 3 remaining voters are a majority on their own ------------------
                down = next(n for n in remaining if n != leader)
                await asyncio.to_thread(lc.kill, down)
                for i in range(10):
                    await c.put(f"mb/quorum2/{i}", i)
                assert await c.get_value("mb/quorum2/9") == 9
                st = lc.status(leader)
                assert st["role"] == "leader" and st["commit"] > commit, diag(lc, str(st))
                now = {r: lc.status(r)["last_index"] for r in removed}
                assert max(now.values()) < st["commit"], diag(
                    lc, f"removed nodes' logs {now} vs commit {st['commit']}"
                )
                assert st["term"] == term, diag(lc, f"term moved from {term}: {st}")

            # Every acknowledged write survived the reconfigurations (seeded with live nodes
            # only: the client would otherwise keep retrying the dead one with back-off).
            alive = [lc.nodes[n].addr for n in remaining if n != down]
            async with Client(alive, timeout=20) as c:
                sem = asyncio.Semaphore(16)

                async def check(key: str) -> str | None:
                    async with sem:
                        got = await c.get_value(key)
                    return None if got == acked[key] else f"{key}: {got!r} != {acked[key]!r}"

                bad = [b for b in await asyncio.gather(*(check(k) for k in acked)) if b]
            assert not bad, diag(lc, f"{len(bad)} acknowledged writes lost: {bad[:10]}")


async def test_joiner_led_cluster_adds_members_and_retried_add_is_idempotent() -> None:
    """A leader that itself joined later (not in anyone's --peers) must be able to add a new
    node: the new node has an empty log and must still be able to answer it. A retried add
    (same Request-Id, as the client does after a timeout) must succeed rather than 409, and a
    just-elected leader must accept the removal that its predecessor forwards to it."""
    with LocalCluster(3) as lc:
        await asyncio.to_thread(ready, lc)
        async with Client(lc.addrs, timeout=30) as c:
            n4 = lc.add_joiner()
            await asyncio.to_thread(
                wait_until, lc, lambda: healthz(lc, n4.node_id), 30, "n4 /healthz"
            )
            await c.add_member(n4.node_id, n4.addr)
            assert await c.transfer_leader(n4.node_id) == n4.node_id
            assert await asyncio.to_thread(agreed_leader, lc, 15.0) == n4.node_id

            n5 = lc.add_joiner()
            await asyncio.to_thread(
                wait_until, lc, lambda: healthz(lc, n5.node_id), 30, "n5 /healthz"
            )
            body = {"id": n5.node_id, "addr": n5.addr}
            first = await c.request_or_raise(
                "POST", "/v1/cluster/members", body, mutating=True, request_id="add-n5",
                timeout=40,
            )
            assert n5.node_id in _voters(first), diag(lc, f"add n5 under n4: {first}")
            again = await c.request_or_raise(
                "POST", "/v1/cluster/members", body, mutating=True, request_id="add-n5",
                timeout=40,
            )
            assert _voters(again) == _voters(first), diag(lc, f"retried add: {again}")

            await c.put("jl/after-add", "v")
            await asyncio.to_thread(wait_caught_up, lc, n5.node_id, n4.node_id, 30.0)
            got = await c.request_or_raise(
                "GET", "/v1/kv/jl/after-add", params={"consistency": "stale"}, addr=n5.addr
            )
            assert got["value"] == "v"

            # Remove the leader twice in a row: each time the request lands on a leader
            # that was elected a moment ago by the transfer.
            for _ in range(2):
                lead = await asyncio.to_thread(agreed_leader, lc, 15.0)
                res = await c.remove_member(lead)
                assert lead not in [m["id"] for m in res["members"]], diag(lc, str(res))
                await asyncio.to_thread(lc.kill, lead)
            await c.put("jl/after-removals", "ok")
            assert await c.get_value("jl/after-removals") == "ok"
            assert len(_voters(await c.members())) == 3
