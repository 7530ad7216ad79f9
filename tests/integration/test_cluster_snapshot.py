"""Log compaction and InstallSnapshot with real processes.

With `--snapshot-threshold 50`, a few hundred writes make every node snapshot and compact.
A follower is then stopped and its data directory wiped (a replaced disk). It restarts as a
founding member without `--join`, so it bootstraps itself again: the founding configuration
entries at indexes 1..3 in term 1. The leader has compacted those entries away, so the only
way to bring the node back is InstallSnapshot; afterwards it must have applied everything the
leader committed, serve every key from its own state, and its on-disk log must start right
after the installed snapshot (the bootstrap entries are gone).
"""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import quote

from cluster_helpers import agreed_leader, diag, ready, wait_caught_up, wait_until

from distsync.client import Client
from distsync.local import LocalCluster
from distsync.storage import Storage

THRESHOLD = 50


async def _write_keys(c: Client, prefix: str, n: int) -> dict[str, dict[str, int]]:
    sem = asyncio.Semaphore(16)
    out: dict[str, dict[str, int]] = {}

    async def one(i: int) -> None:
        key, val = f"{prefix}/{i:04d}", {"i": i, "p": len(prefix)}
        async with sem:
            await c.put(key, val)
        out[key] = val

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def _stale_values(addr: str, keys: list[str]) -> dict[str, object]:
    sem = asyncio.Semaphore(16)
    async with Client([addr], timeout=10) as c:

        async def one(key: str) -> tuple[str, object]:
            async with sem:
                try:
                    got = await c.request_or_raise(
                        "GET", f"/v1/kv/{quote(key)}", params={"consistency": "stale"}, addr=addr
                    )
                except Exception as e:  # noqa: BLE001 - reported as the value
                    return key, repr(e)
            return key, got["value"]

        return dict(await asyncio.gather(*(one(k) for k in keys)))


async def test_wiped_follower_catches_up_by_install_snapshot() -> None:
    with LocalCluster(3, extra_args=["--snapshot-threshold", str(THRESHOLD)]) as lc:
        leader = await asyncio.to_thread(ready, lc)
        async with Client(lc.addrs, timeout=20) as c:
            want = await _write_keys(c, "snap/a", 300)

        # Every node compacted its log (followers snapshot from their own applied state).
        def all_compacted() -> bool:
            sts = lc.statuses()
            return all(s is not None and s["snapshot_index"] > THRESHOLD for s in sts.values())

        await asyncio.to_thread(wait_until, lc, all_compacted, 20, "every node to snapshot")
        for nid, st in lc.statuses().items():
            assert st["snapshot_index"] <= st["applied"], diag(lc, f"{nid}: {st}")

        follower = next(n for n in lc.nodes if n != leader)
        await asyncio.to_thread(lc.kill, follower, signal.SIGKILL)
        lc.wipe(follower)
        assert not lc.nodes[follower].data_dir.exists()

        # More writes while it is away, so the leader compacts past anything it had.
        async with Client([lc.nodes[n].addr for n in lc.nodes if n != follower], timeout=20) as c:
            want.update(await _write_keys(c, "snap/b", 120))
        leader = await asyncio.to_thread(agreed_leader, lc, 15.0, [n for n in lc.nodes
                                                                 if n != follower])
        lst = lc.status(leader)
        assert lst["snapshot_index"] > 3, diag(lc, f"leader did not compact: {lst}")

        lc.start_node(follower)  # no --join: it bootstraps the founding config again
        target = await asyncio.to_thread(wait_caught_up, lc, follower, leader, 30.0)
        fst = lc.status(follower)
        assert fst["applied"] >= target and fst["snapshot_index"] > 3, diag(
            lc, f"{follower} did not install a snapshot: {fst}"
        )
        assert fst["voters"] == sorted(lc.nodes), diag(lc, f"{follower} membership: {fst}")
        # The cluster's id came with the snapshot (its no-op is compacted away).
        assert fst["cluster_id"] is not None and fst["cluster_id"] == lc.status(leader)[
            "cluster_id"], diag(lc, f"{follower} cluster id: {fst['cluster_id']}")

        got = await _stale_values(lc.nodes[follower].addr, sorted(want))
        bad = {k: v for k, v in got.items() if v != want[k]}
        assert not bad, diag(lc, f"wiped {follower} misses {len(bad)} keys: "
                                 f"{dict(list(bad.items())[:5])}")

        # Cleanly stop it and inspect its disk: the log starts right after the snapshot.
        await asyncio.to_thread(lc.kill, follower, signal.SIGTERM)
        with Storage(lc.nodes[follower].data_dir) as st:
            persisted = st.load()
        snap = persisted.snapshot
        assert snap is not None and snap.meta.index > 3, diag(lc, f"stored snapshot: {snap}")
        if persisted.entries:
            assert persisted.entries[0].index == snap.meta.index + 1, diag(
                lc, f"log starts at {persisted.entries[0].index}, snapshot at {snap.meta.index}"
            )
        assert all(e.index > snap.meta.index for e in persisted.entries)
        assert persisted.hard_state.commit >= snap.meta.index
        assert sorted(snap.meta.conf.voters) == sorted(lc.nodes)
        assert snap.meta.cluster_id.hex() == fst["cluster_id"], diag(lc, "stored snapshot's id")

        # And it restarts from that snapshot + log with the same state.
        lc.start_node(follower)
        leader = await asyncio.to_thread(ready, lc, 30.0)
        await asyncio.to_thread(wait_caught_up, lc, follower, leader, 30.0)
        got = await _stale_values(lc.nodes[follower].addr, sorted(want))
        bad = {k: v for k, v in got.items() if v != want[k]}
        assert not bad, diag(lc, f"{follower} lost {len(bad)} keys across its own restart")
