"""etcd 3.4 as a peer in the side-by-side benchmark: `nodes` real `/usr/bin/etcd` members on
loopback, driven through etcd's HTTP/JSON gRPC gateway with the harness's aiohttp session.

The gateway is etcd's own JSON mapping of its gRPC API, so every request is a real etcd
request (same raft, same WAL fsync, same linearizable read path) with JSON+base64 on top
instead of protobuf: a cost every system in the table pays in some form, since all are
driven over HTTP/JSON by the same client.

Ops go to the leader (found with /v3/maintenance/status), as a leader-aware etcd client
would; `write_once` tries every live member, since any member forwards proposals.

Self-check: `python -m benchmarks.systems.etcd` from the repo root.
"""

from __future__ import annotations

import asyncio
import base64
import random
import shutil
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from benchmarks.systems.base import STATUS_TIMEOUT, ProcessPeer
from benchmarks.systems.procs import ProcessSet

ETCD_BIN = "/usr/bin/etcd"
VALUE = "v" * 100
# The lock session lease outlives any benchmark phase, so no keepalive stream is needed
# through the gateway; etcd's lock requests are the same with a kept-alive lease.
LOCK_LEASE_TTL_S = 3600
READ_KEYS = 256
# A member without a leader holds a proposal until etcd's own request timeout (~7 s), so
# the per-attempt timeout is what bounds how finely a failover is timed (the caller retries).
WRITE_ONCE_TIMEOUT = aiohttp.ClientTimeout(total=0.25)


def available() -> bool:
    """Whether the etcd binary this adapter launches is installed."""
    return shutil.which(ETCD_BIN) is not None


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any],
    timeout: aiohttp.ClientTimeout | None = None,
) -> dict[str, Any]:
    """One gateway call; any non-200 or gateway error body raises, so the harness counts it."""
    kwargs: dict[str, Any] = {"json": body}
    if timeout is not None:
        kwargs["timeout"] = timeout
    async with session.post(url, **kwargs) as r:
        data = await r.json(content_type=None)
        if r.status != 200 or "error" in data:
            raise RuntimeError(f"etcd {url}: {r.status} {data}")
        return data


class Etcd(ProcessPeer):
    """A 3.4 cluster with default durability, one data dir per member in a temp dir.

    `restart` relaunches a member with the same flags: etcd ignores --initial-cluster once
    its data dir holds a member, so it rejoins with its WAL."""

    name = "etcd"
    durability = (
        "etcd 3.4 defaults: WAL fsynced on a majority before the ack "
        "(heartbeat 100 ms, election 1000 ms)"
    )
    WORKLOADS = {"put": "_put", "get": "_get", "lock": "_lock"}
    NO_WORKLOAD = "etcd adapter has no workload {workload!r}"

    def __init__(self, nodes: int = 3, data_dir: str | None = None) -> None:
        super().__init__(nodes, data_dir)
        self._member_name: dict[str, str] = {}   # etcd member_id -> node name
        self._read_keys: list[str] = []
        self._leases: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> float:
        self._member_name, self._read_keys, self._leases = {}, [], []  # a fresh cluster's
        return await super().start()

    def _argv(self, node: str, procs: ProcessSet) -> list[str]:
        peer_url = {n: f"http://{a}" for n, a in self._peer_addr.items()}
        cluster = ",".join(f"{n}={u}" for n, u in peer_url.items())
        return [
            ETCD_BIN, "--name", node, "--data-dir", str(procs.data_dir(node)),
            "--listen-client-urls", self._client_url[node],
            "--advertise-client-urls", self._client_url[node],
            "--listen-peer-urls", peer_url[node],
            "--initial-advertise-peer-urls", peer_url[node],
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"bench-{procs.root.name}",
            "--logger", "zap", "--log-level", "error",
        ]

    async def _stop_last(self) -> str | None:
        """The leader: stopped first, it would try to hand over to followers that are
        stopping too, and wait (~7 s) for one."""
        async with aiohttp.ClientSession(timeout=STATUS_TIMEOUT) as session:
            return await self._agreed_leader(session)

    async def _agreed_leader(self, session: aiohttp.ClientSession) -> str | None:
        """One round of /v3/maintenance/status: the live member all answers name (by member
        id), if any."""
        seen = set()
        for n in self._live():
            try:
                st = await _post(session, self._client_url[n] + "/v3/maintenance/status", {})
            except (TimeoutError, aiohttp.ClientError, RuntimeError):
                continue
            self._member_name[st["header"]["member_id"]] = n
            if st.get("leader", "0") != "0":
                seen.add(st["leader"])
        if len(seen) != 1:
            return None
        name = self._member_name.get(seen.pop())
        return name if name in self._live() else None

    # -- workloads --------------------------------------------------------------------------

    async def prepare(self, workload: str, session: aiohttp.ClientSession, workers: int) -> None:
        await self._find_leader_url()
        if workload == "get" and not self._read_keys:
            keys = [f"bench/read/{i}" for i in range(READ_KEYS)]
            sem = asyncio.Semaphore(32)

            async def put(k: str) -> None:
                async with sem:
                    await self._put(session, 0, k)

            await asyncio.gather(*(put(k) for k in keys))
            self._read_keys = keys
        elif workload == "lock":
            # One session lease per worker, as each worker stands for one etcd client.
            while len(self._leases) < workers:
                res = await _post(session, self._leader_url + "/v3/lease/grant",
                                  {"TTL": LOCK_LEASE_TTL_S})
                self._leases.append(res["ID"])

    async def _write_to(self, session: aiohttp.ClientSession, node: str, key: str) -> None:
        await _post(session, self._client_url[node] + "/v3/kv/put",
                    {"key": _b64(key), "value": _b64(VALUE)}, WRITE_ONCE_TIMEOUT)

    async def _put(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        await _post(session, self._leader_url + "/v3/kv/put",
                    {"key": _b64(key), "value": _b64(VALUE)})

    async def _get(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        # serializable defaults to false: a linearizable read (ReadIndex on the leader).
        res = await _post(session, self._leader_url + "/v3/kv/range",
                          {"key": _b64(random.choice(self._read_keys))})
        if not res.get("kvs"):
            raise RuntimeError("etcd: prepared key not found")

    async def _lock(self, session: aiohttp.ClientSession, worker: int, key: str) -> None:
        held = await _post(session, self._leader_url + "/v3/lock/lock",
                           {"name": _b64(f"bench/lock/w{worker}"), "lease": self._leases[worker]})
        await _post(session, self._leader_url + "/v3/lock/unlock", {"key": held["key"]})

    # -- watches (watch_bench.py) --------------------------------------------------------------

    def watch_urls(self) -> list[str]:
        """Every live member: watchers spread over them (any member serves a watch)."""
        return [self._client_url[n] for n in self._live()]

    async def watch_put(self, session: aiohttp.ClientSession, key: str) -> int:
        """A put to the leader (found by `prepare`); its revision."""
        res = await _post(session, self._leader_url + "/v3/kv/put",
                          {"key": _b64(key), "value": _b64(VALUE)})
        return int(res["header"]["revision"])

    async def watch(self, session: aiohttp.ClientSession, url: str, prefix: str,
                    on_revisions: Callable[[list[int]], None], ready: asyncio.Event) -> None:
        """POST /v3/watch through the gateway: one watch of the prefix from the next change,
        streamed as newline-delimited JSON (`{"result": WatchResponse}` per message). `ready`
        once etcd confirms it was created, then `on_revisions` with each message's events'
        mod_revisions, as they are read."""
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}
        async with session.post(url + "/v3/watch", json=body,
                                timeout=aiohttp.ClientTimeout(total=None)) as r:
            if r.status != 200:
                raise RuntimeError(f"etcd watch: {r.status} {(await r.text())[:100]}")
            rest = b""
            async for chunk in r.content.iter_any():
                *lines, rest = (rest + chunk).split(b"\n")
                revs = []
                for line in lines:
                    if line.strip():
                        revs += watch_revisions(orjson.loads(line), ready)
                if revs:
                    on_revisions(revs)


def prefix_end(prefix: str) -> str:
    """etcd's range end of a prefix: the prefix with its last byte plus one."""
    b = prefix.encode()
    return (b[:-1] + bytes([b[-1] + 1])).decode()


def watch_revisions(msg: dict[str, Any], ready: asyncio.Event) -> list[int]:
    """The mod_revisions of one gateway watch message's events (int64s come as strings);
    sets `ready` on the creation message, raises on an error or a cancellation."""
    if "error" in msg:
        raise RuntimeError(f"etcd watch: {msg['error']}")
    res = msg.get("result", {})
    if res.get("canceled"):
        raise RuntimeError(f"etcd watch canceled: {res.get('cancel_reason', '')}")
    if res.get("created"):
        ready.set()
    return [int(ev["kv"]["mod_revision"]) for ev in res.get("events", ())]


if __name__ == "__main__":
    from benchmarks.systems.selfcheck import main

    main(Etcd())
