"""Memory stays bounded when a client keeps trying to go past its quotas (issue 15): after a
warm-up, `DISTSYNC_QUOTA_ATTEMPTS` (default 10,000; the issue's figure is 50,000) refused
attempts (session opens past the per-client quota, queue creates past max_queues, kv puts of
new keys past max_kv_keys, each with its own request id, so each one is a log entry refused
at apply) leave every node's resident memory within RSS_SLACK_MIB of where it was.

Refusals are not remembered under their request ids and the log is compacted by snapshots
(every 2,000 entries here), so nothing grows with the number of attempts.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from cluster_helpers import diag, ready, wait_until

from distsync.local import LocalCluster

ATTEMPTS = int(os.environ.get("DISTSYNC_QUOTA_ATTEMPTS", "10000"))
WARMUP = 2_000
RSS_SLACK_MIB = 16
CONCURRENCY = 32


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    args = ["--max-sessions-per-client", "3", "--max-queues", "3", "--max-kv-keys", "3",
            "--snapshot-threshold", "2000"]
    with LocalCluster(3, extra_args=args) as c:
        ready(c)
        yield c


def rss_mib(lc: LocalCluster, nid: str) -> float:
    proc = lc.nodes[nid].proc
    assert proc is not None
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def attempts(lc: LocalCluster, n: int, phase: str) -> dict[int, int]:
    """`n` requests past a quota, spread over the nodes and three kinds, each naming a new
    queue or key (`phase` keeps names apart between calls); status counts."""
    urls = [nd.url for nd in lc.nodes.values()]
    statuses: dict[int, int] = {}
    it = iter(range(n))

    async def worker(s: aiohttp.ClientSession) -> None:
        for i in it:
            url = urls[i % len(urls)]
            kind = i % 3
            hdrs = {"Request-Id": str(uuid.uuid4())}
            if kind == 0:
                req = s.post(f"{url}/v1/sessions", json={"ttl_ms": 3_600_000}, headers=hdrs)
            elif kind == 1:
                req = s.put(f"{url}/v1/queues/{phase}-{i}", json={}, headers=hdrs)
            else:
                req = s.put(f"{url}/v1/kv/{phase}/{i}", json={"value": i}, headers=hdrs)
            async with req as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:
        await asyncio.gather(*(worker(s) for _ in range(CONCURRENCY)))
    return statuses


def limits_in_force(lc: LocalCluster) -> None:
    def applied() -> bool:
        return all((st := lc.status(nid)) is not None and st["quotas"]["max_queues"] == 3
                   for nid in lc.nodes)

    wait_until(lc, applied, 15, "the configured quotas in force on every node")


async def test_rss_stays_bounded_past_quotas(lc: LocalCluster) -> None:
    await asyncio.to_thread(ready, lc)
    await asyncio.to_thread(limits_in_force, lc)
    # Fill the quotas (the first few attempts of each kind pass), then warm up.
    await attempts(lc, WARMUP, "warm")
    before = {nid: rss_mib(lc, nid) for nid in lc.nodes}
    got = await attempts(lc, ATTEMPTS, "over")
    after = {nid: rss_mib(lc, nid) for nid in lc.nodes}
    assert got.get(429, 0) >= ATTEMPTS - 30, got  # a few 503s during elections are fine
    grown = {nid: round(after[nid] - before[nid], 1) for nid in lc.nodes}
    print(f"{ATTEMPTS} refused attempts; RSS before {before} after {after} MiB")
    assert all(g <= RSS_SLACK_MIB for g in grown.values()), diag(
        lc, f"RSS grew by {grown} MiB over {ATTEMPTS} refused attempts")
