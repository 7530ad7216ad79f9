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
import time
from typing import Any

import aiohttp

from benchmarks.systems.base import Op, Unsupported
from benchmarks.systems.procs import ProcessSet, first_ack, wait_until_written
from distsync.local import free_ports

ETCD_BIN = "/usr/bin/etcd"
VALUE = "v" * 100
# The lock session lease outlives any benchmark phase, so no keepalive stream is needed
# through the gateway; etcd's lock requests are the same with a kept-alive lease.
LOCK_LEASE_TTL_S = 3600
READ_KEYS = 256
STATUS_TIMEOUT = aiohttp.ClientTimeout(total=1.0)
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


class Etcd:
    """A 3.4 cluster with default durability, one data dir per member in a temp dir."""

    name = "etcd"
    durability = (
        "etcd 3.4 defaults: WAL fsynced on a majority before the ack "
        "(heartbeat 100 ms, election 1000 ms)"
    )

    def __init__(self, nodes: int = 3, data_dir: str | None = None) -> None:
        self.nodes = nodes
        self._parent_dir = data_dir
        self._procs: ProcessSet | None = None
        self._client_url: dict[str, str] = {}
        self._member_name: dict[str, str] = {}   # etcd member_id -> node name
        self._leader_url = ""
        self._read_keys: list[str] = []
        self._leases: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> float:
        self._procs = procs = ProcessSet("etcd-bench", self._parent_dir)
        self._member_name, self._read_keys, self._leases = {}, [], []  # a fresh cluster's
        ports = free_ports(2 * self.nodes)
        names = [f"etcd-{i}" for i in range(self.nodes)]
        peer_url = {n: f"http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names)}
        self._client_url = {n: f"http://127.0.0.1:{ports[2 * i]}" for i, n in enumerate(names)}
        cluster = ",".join(f"{n}={peer_url[n]}" for n in names)
        token = f"bench-{procs.root.name}"
        t0 = time.perf_counter()
        for n in names:
            procs.spawn(n, [
                ETCD_BIN, "--name", n, "--data-dir", str(procs.data_dir(n)),
                "--listen-client-urls", self._client_url[n],
                "--advertise-client-urls", self._client_url[n],
                "--listen-peer-urls", peer_url[n],
                "--initial-advertise-peer-urls", peer_url[n],
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--logger", "zap", "--log-level", "error",
            ])
        async with aiohttp.ClientSession() as session:
            await wait_until_written(
                lambda: self.write_once(session, "bench/ready"), 30.0, "etcd start",
                self._log_tails,
            )
        ready = time.perf_counter() - t0
        await self._find_leader_url()
        return ready

    async def stop(self) -> None:
        if self._procs is not None:
            async with aiohttp.ClientSession(timeout=STATUS_TIMEOUT) as session:
                leader = await self._agreed_leader(session)
            await asyncio.to_thread(self._procs.stop, last=leader)
            self._procs = None

    def pids(self) -> dict[str, int]:
        return self._procs.pids() if self._procs else {}

    def kill(self, node: str) -> None:
        assert self._procs is not None
        self._procs.kill(node)

    def restart(self, node: str) -> None:
        """Relaunch with the same flags: etcd ignores --initial-cluster once its data dir
        holds a member, so it rejoins with its WAL."""
        assert self._procs is not None
        self._procs.restart(node)

    async def leader(self) -> str:
        """The member every reachable member agrees is leader (by member id)."""
        async with aiohttp.ClientSession(timeout=STATUS_TIMEOUT) as session:
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                if (name := await self._agreed_leader(session)) is not None:
                    return name
                await asyncio.sleep(0.05)
        raise TimeoutError(f"etcd: no agreed leader among {self._live()}")

    async def _agreed_leader(self, session: aiohttp.ClientSession) -> str | None:
        """One round of /v3/maintenance/status: the live member all answers name, if any."""
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

    def op(self, workload: str) -> Op:
        if workload == "put":
            return self._put
        if workload == "get":
            return self._get
        if workload == "lock":
            return self._lock
        raise Unsupported(f"etcd adapter has no workload {workload!r}")

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

    async def write_once(self, session: aiohttp.ClientSession, key: str) -> None:
        body = {"key": _b64(key), "value": _b64(VALUE)}
        await first_ack({
            n: lambda n=n: _post(session, self._client_url[n] + "/v3/kv/put", body,
                                 WRITE_ONCE_TIMEOUT)
            for n in self._live()
        }, "etcd")

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

    # -- helpers ----------------------------------------------------------------------------

    def _live(self) -> list[str]:
        return self._procs.live_names() if self._procs else []

    async def _find_leader_url(self) -> None:
        self._leader_url = self._client_url[await self.leader()]

    def _log_tails(self) -> str:
        assert self._procs is not None
        return "\n".join(f"--- {n} ---\n{self._procs.log_tail(n)}" for n in self._procs.names())


if __name__ == "__main__":
    from benchmarks.systems.selfcheck import main

    main(Etcd())
