"""Whole-cluster crash: SIGKILL every node while writers are running, restart them all.

Two kinds of writers run concurrently:

* counter writers, one per key, each writing 1, 2, 3, ... to its own key and recording the last
  counter that was acknowledged and the last that was attempted. After the crash, a
  linearizable read of the key must return a value in [last acknowledged, last attempted]: an
  acknowledged write can never be lost, and a write that was in flight may or may not have
  committed, but nothing that was never attempted can appear.
* unique-key writers, whose every acknowledged key must be present with its exact value.

A write in flight at the crash keeps retrying (same Request-Id) in the client while the
cluster restarts, so it may still be acknowledged afterwards; that is accounted for by waiting
for the writers to finish before checking.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any
from urllib.parse import quote

from cluster_helpers import async_wait_until, diag, ready, wait_caught_up

from distsync.client import Client, DistSyncError, Unavailable
from distsync.local import LocalCluster

COUNTER_WRITERS = 8
UNIQUE_WRITERS = 8


async def test_sigkill_all_nodes_mid_load_then_restart() -> None:
    with LocalCluster(3) as lc:
        await asyncio.to_thread(ready, lc)
        last_acked = dict.fromkeys(range(COUNTER_WRITERS), 0)
        last_tried = dict.fromkeys(range(COUNTER_WRITERS), 0)
        acked_unique: dict[str, Any] = {}
        errors: list[DistSyncError] = []
        stop = asyncio.Event()
        crashed = asyncio.Event()
        acks_after_crash = 0

        async with Client(lc.addrs, timeout=25) as c:

            async def counter_writer(w: int) -> None:
                nonlocal acks_after_crash
                n = 0
                while not stop.is_set():
                    n += 1
                    last_tried[w] = n
                    try:
                        await c.put(f"rs/counter/{w}", n)
                    except DistSyncError as e:
                        errors.append(e)
                        continue
                    last_acked[w] = n
                    acks_after_crash += crashed.is_set()

            async def unique_writer(w: int) -> None:
                i = 0
                while not stop.is_set():
                    key, val = f"rs/unique/{w}/{i:05d}", {"w": w, "i": i}
                    i += 1
                    try:
                        await c.put(key, val)
                    except DistSyncError as e:
                        errors.append(e)
                        continue
                    acked_unique[key] = val

            tasks = [asyncio.create_task(counter_writer(w)) for w in range(COUNTER_WRITERS)]
            tasks += [asyncio.create_task(unique_writer(w)) for w in range(UNIQUE_WRITERS)]
            try:
                await async_wait_until(
                    lc, lambda: min(last_acked.values()) >= 10 and len(acked_unique) >= 100,
                    30, "every writer to have acknowledged writes",
                )
                # Crash every node while writes are in flight: signal all first, then reap.
                for nd in lc.nodes.values():
                    nd.proc.send_signal(signal.SIGKILL)
                crashed.set()
                for nid in lc.nodes:
                    await asyncio.to_thread(lc.kill, nid)
                stop.set()  # no new writes; the in-flight ones keep retrying meanwhile
                acked_at_crash = dict(last_acked)
                n_unique_at_crash = len(acked_unique)
                lc.start()
                leader = await asyncio.to_thread(ready, lc, 60.0)
                done, pending = await asyncio.wait(tasks, timeout=40)
            finally:
                stop.set()
                for t in tasks:
                    t.cancel()
            assert not pending, diag(lc, f"{len(pending)} writers still busy after restart")
            for t in done:
                t.result()

        print(f"acked at crash: counters {acked_at_crash}, {n_unique_at_crash} unique keys; "
              f"after restart: {acks_after_crash} counter writes completed, errors {len(errors)}")
        # A write may time out while the whole cluster is down, but only as "unavailable";
        # anything else (a 4xx, a 500) is a bug.
        odd = [e for e in errors if not isinstance(e, Unavailable)]
        assert not odd, diag(lc, f"unexpected write errors: {odd[:5]}")

        # Linearizable reads through the restarted cluster.
        async with Client(lc.addrs, timeout=20) as c:
            for w in range(COUNTER_WRITERS):
                got = await c.get_value(f"rs/counter/{w}")
                assert isinstance(got, int) and last_acked[w] <= got <= last_tried[w], diag(
                    lc, f"counter {w}: read {got!r}, but last acknowledged was {last_acked[w]} "
                        f"and last attempted {last_tried[w]}",
                )
            sem = asyncio.Semaphore(16)

            async def check(key: str) -> str | None:
                async with sem:
                    got = await c.get_value(key)
                return None if got == acked_unique[key] else f"{key}: {got!r}"

            bad = [b for b in await asyncio.gather(*(check(k) for k in acked_unique)) if b]
            assert not bad, diag(lc, f"{len(bad)} acknowledged writes lost: {bad[:10]}")

            # Every node, once caught up, holds the same values in its own state.
            counters = {w: await c.get_value(f"rs/counter/{w}") for w in range(COUNTER_WRITERS)}
            for nid, nd in lc.nodes.items():
                await asyncio.to_thread(wait_caught_up, lc, nid, leader, 30.0)
                for w, want in counters.items():
                    got = await c.request_or_raise(
                        "GET", f"/v1/kv/{quote(f'rs/counter/{w}')}",
                        params={"consistency": "stale"}, addr=nd.addr,
                    )
                    assert got["value"] == want, diag(
                        lc, f"{nid} has counter {w}={got['value']!r}, cluster says {want!r}"
                    )
