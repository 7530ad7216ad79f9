"""Clusters for chaos runs: real `distsync node` processes, each in its own network namespace
(`NetnsCluster`: real network faults), or on loopback (`LoopbackCluster`: process faults only,
for machines where namespaces cannot be made).

The network of a `NetnsCluster` in slot k (a test-only range, 10.77.k.0/24):

    root namespace: bridge dsc<k>br, 10.77.k.254/24  <- the test's clients connect from here
        |-- veth dsc<k>v1 <-> eth0 in namespace dsc<k>-n1, 10.77.k.1/24, node n1 on :7001
        |-- veth dsc<k>v2 <-> eth0 in namespace dsc<k>-n2, 10.77.k.2/24, node n2 on :7001
        ...

Nodes have no default route, so their traffic cannot leave the bridge; the root namespace
only gains the on-link route of its bridge. Faults are nftables rules in an `inet chaos`
table inside each node's namespace (drop by source address: full, one-way and bridge
partitions; `numgen random` for loss), `ip link set` on a node's host-side veth, and
signals to the node process (SIGKILL, SIGSTOP/SIGCONT).

Slots are claimed with an exclusive `flock` on /run/distsync-chaos/slot-<k>.lock, so runs on
one machine (several developers, CI) never share a namespace, bridge or subnet; holding a
slot's lock proves that whatever carries its prefix is stale, and it is removed first
(processes in the namespaces killed, namespaces and bridge deleted).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..local import LocalCluster

SUBNET_PREFIX = "10.77"  # test-only range: 10.77.<slot>.0/24
PORT = 7001
REDIS_PORT = 6379
SLOTS = 32
LOCK_DIR = Path("/run/distsync-chaos")


class HarnessUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no `ip`, no `nft`, ...)."""


def _run(cmd: list[str], check: bool = True, input: str | None = None,
         timeout: float = 20) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def netns_unavailable_reason() -> str | None:
    """Why a NetnsCluster cannot run here, or None if it can. Tries a real namespace."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return (f"`{tool}` is not installed (Debian: iproute2, nftables; install with "
                    "apt-get install -y iproute2 nftables)")
    name = f"dsprobe-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", name])
        _run(["ip", "netns", "exec", name, "nft", "add", "table", "inet", "probe"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace with nftables: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class NetSlot:
    """An exclusive claim on one 10.77.k.0/24 slot, released when closed or at exit."""

    def __init__(self, k: int, fd: int):
        self.k, self._fd = k, fd
        self.prefix = f"dsc{k}"

    @staticmethod
    def _try_lock(k: int) -> int | None:
        fd = os.open(LOCK_DIR / f"slot-{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @classmethod
    def claim(cls) -> NetSlot:
        """Claim a free slot; on the way, clear what runs that died (SIGKILL, power loss)
        left in slots nobody holds."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        sweep_unclaimed()
        order = list(range(SLOTS))
        random.Random(os.getpid()).shuffle(order)
        for k in order:
            fd = cls._try_lock(k)
            if fd is None:
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return cls(k, fd)
        raise HarnessUnavailable(f"all {SLOTS} chaos network slots are in use")

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _stale_prefixes() -> set[str]:
    names = _run(["ip", "netns", "list"], check=False).stdout.split()
    names += [ln.split(":")[1].strip().split("@")[0]
              for ln in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
              if ln.count(":") >= 2]
    out = set()
    for name in names:
        head = name.split("-")[0].removesuffix("br")
        if head.startswith("dsc") and head[3:].split("v")[0].isdigit():
            out.add("dsc" + head[3:].split("v")[0])
    return out


def sweep_unclaimed() -> None:
    """Clear every slot that has leftovers and whose lock nobody holds."""
    for prefix in _stale_prefixes():
        k = int(prefix[3:])
        if not 0 <= k < SLOTS:
            continue
        fd = NetSlot._try_lock(k)
        if fd is None:
            continue  # a live run owns it
        try:
            removed = cleanup_stale(prefix)
            if removed:
                print(f"removed stale chaos network objects: {' '.join(removed)}",
                      file=sys.stderr)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def pids_where(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids of the processes whose command line (argv, from /proc) `match` accepts."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and match(cmd):
            pids.append(int(d.name))
    return pids


def _kill_redis_on(gateway: str) -> None:
    """A redis-server that a dead run left bound to this slot's bridge address."""
    for pid in pids_where(lambda cmd: cmd[0].endswith(b"redis-server")
                          and gateway.encode() in cmd):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cleanup_stale(prefix: str) -> list[str]:
    """Remove namespaces `<prefix>-*` (killing what runs in them), veths and the bridge
    `<prefix>br`, and a redis-server bound to its address. Only call it while holding the
    slot's lock. Returns what was removed."""
    removed = []
    _kill_redis_on(f"{SUBNET_PREFIX}.{int(prefix[3:])}.254")
    out = _run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(prefix + "-"):
            continue
        pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            dev = parts[1].strip().split("@")[0]
            if dev == f"{prefix}br" or dev.startswith(f"{prefix}v"):
                _run(["ip", "link", "del", dev], check=False)
                removed.append(dev)
    return removed


class ChaosCluster(LocalCluster):
    """What the nemesis needs from a cluster; process faults work everywhere."""

    kind = "loopback"
    network_faults = False

    # -- process faults ------------------------------------------------------------------

    def pause(self, node_id: str) -> None:
        self.kill(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.kill(node_id, signal.SIGCONT)

    def crash(self, node_id: str) -> None:
        self.resume(node_id)  # a stopped process still dies of SIGKILL; be explicit anyway
        self.kill(node_id, signal.SIGKILL)

    def crash_all(self) -> None:
        for nd in self.nodes.values():
            if nd.alive():
                nd.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        for nid in self.nodes:
            self.kill(nid, signal.SIGKILL)

    # -- network faults (NetnsCluster only) --------------------------------------------------

    def set_network(self, blocked: set[tuple[str, str]], loss: dict[str, int]) -> None:
        raise NotImplementedError("network faults need a NetnsCluster")

    def link(self, node_id: str, up: bool) -> None:
        raise NotImplementedError("network faults need a NetnsCluster")

    def heal(self) -> None:
        """Undo every fault: network healed, paused nodes resumed, dead nodes restarted."""
        for nid, nd in self.nodes.items():
            if nd.alive():
                self.resume(nid)
            else:
                self.start_node(nid)

    # -- cache backend ---------------------------------------------------------------------

    def start_cache_backend(self) -> str:
        """Start a redis-server the nodes can reach, point them at it (call before start),
        and return its URL. Stopped by close()."""
        from ..cache.redis_proc import RedisServer

        self._redis = RedisServer().start()
        self.extra_args += ["--redis-url", self._redis.url]
        return self._redis.url

    def stop_cache_backend(self) -> None:
        rs = getattr(self, "_redis", None)
        if rs is not None:
            rs.close()
            self._redis = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.stop_cache_backend()

    # -- observing -----------------------------------------------------------------------

    def probe_leader(self, timeout: float = 0.5) -> str | None:
        """The node that claims leadership with the highest term right now, if any (no
        agreement needed: during a partition two nodes may both claim it)."""
        best: tuple[int, str] | None = None
        for nid, nd in self.nodes.items():
            st = self.status(nid, timeout=timeout) if nd.alive() else None
            if st is not None and st.get("role") == "leader":
                if best is None or st["term"] > best[0]:
                    best = (st["term"], nid)
        return best[1] if best else None

    def describe(self) -> str:
        return f"{len(self.nodes)} nodes on loopback"


class LoopbackCluster(ChaosCluster):
    """Nodes on 127.0.0.1: the fallback where namespaces cannot be made."""


class NetnsCluster(ChaosCluster):
    kind = "netns"
    network_faults = True

    def __init__(self, n: int = 3, tick_ms: int = 50, data_dir: str | None = None,
                 extra_args: list[str] | None = None):
        super().__init__(0, data_dir=data_dir, extra_args=extra_args, tick_ms=tick_ms)
        self.slot = NetSlot.claim()
        k = self.slot.k
        self.prefix = self.slot.prefix
        self.bridge = f"{self.prefix}br"
        self.gateway = f"{SUBNET_PREFIX}.{k}.254"
        self.ip: dict[str, str] = {}
        for i in range(1, n + 1):
            nid = f"n{i}"
            self.ip[nid] = f"{SUBNET_PREFIX}.{k}.{i}"
            self._add(nid, f"{self.ip[nid]}:{PORT}")
        self.founders = dict(self.peer_map())
        self._net_up = False
        # Last resort if the run is torn down without close() (an interrupted event loop):
        # the next run's sweep would also clear it, but nothing should outlive the process.
        atexit.register(self.close)
        self._closed = False

    def ns(self, node_id: str) -> str:
        return f"{self.prefix}-{node_id}"

    def veth(self, node_id: str) -> str:
        return f"{self.prefix}v{node_id.lstrip('n')}"

    def describe(self) -> str:
        return (f"{len(self.nodes)} nodes in network namespaces {self.prefix}-n*, "
                f"{SUBNET_PREFIX}.{self.slot.k}.0/24 on bridge {self.bridge}")

    # -- network setup -------------------------------------------------------------------

    def setup_network(self) -> None:
        stale = cleanup_stale(self.prefix)
        if stale:
            print(f"removed stale chaos network objects: {' '.join(stale)}", file=sys.stderr)
        br = self.bridge
        self._net_up = True  # from here on, teardown has something to remove
        _run(["ip", "link", "add", br, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", br])
        _run(["ip", "link", "set", br, "up"])
        for nid in self.nodes:
            ns, veth = self.ns(nid), self.veth(nid)
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                  "netns", ns])
            _run(["ip", "link", "set", veth, "master", br, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip[nid]}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=(
                "table inet chaos {\n"
                "  chain input { type filter hook input priority 0; policy accept; }\n"
                "}\n"
            ))

    def teardown_network(self) -> None:
        if self._net_up:
            cleanup_stale(self.prefix)
            self._net_up = False

    # -- processes -------------------------------------------------------------------------

    def start(self) -> NetnsCluster:
        if not self._net_up:
            self.setup_network()
        super().start()
        return self

    def _command_prefix(self, node_id: str) -> list[str]:
        # `ip netns exec` execs the command, so the pid is the node's own (signals reach it).
        return ["ip", "netns", "exec", self.ns(node_id)]

    def stop(self) -> None:
        for nid, nd in self.nodes.items():
            if nd.alive():
                self.resume(nid)
        super().stop()

    def start_cache_backend(self) -> str:
        """redis-server in the root namespace, bound to the bridge address only (the nodes
        reach it over their veths; node-to-node faults never touch it)."""
        from ..cache.redis_proc import redis_server_path

        exe = redis_server_path()
        if exe is None:
            raise HarnessUnavailable("redis-server is not installed")
        if not self._net_up:
            self.setup_network()
        rdir = self.data_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        self._redis_proc = subprocess.Popen(
            [exe, "--port", str(REDIS_PORT), "--bind", self.gateway, "--dir", str(rdir),
             "--save", "", "--appendonly", "no", "--protected-mode", "no",
             "--logfile", str(rdir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.gateway, REDIS_PORT), timeout=0.5) as so:
                    so.sendall(b"PING\r\n")
                    if so.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self._redis_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {rdir / 'redis.log'}")
            time.sleep(0.05)
        url = f"redis://{self.gateway}:{REDIS_PORT}/0"
        self.extra_args += ["--redis-url", url]
        return url

    def stop_cache_backend(self) -> None:
        proc = getattr(self, "_redis_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            for nd in self.nodes.values():  # no graceful stop needed: the data is thrown away
                if nd.alive():
                    nd.proc.kill()  # type: ignore[union-attr]
            self.stop()
        finally:
            try:
                self.stop_cache_backend()
                self.teardown_network()
            finally:
                self.slot.release()
                if self._tmp:
                    shutil.rmtree(self._tmp, ignore_errors=True)

    # -- network faults ----------------------------------------------------------------------

    def set_network(self, blocked: set[tuple[str, str]], loss: dict[str, int]) -> None:
        """Make the network exactly this: packets from a to b dropped for every (a, b) in
        `blocked` (dropped on arrival in b's namespace), and `loss[n]` percent of all packets
        arriving at n dropped at random. Each namespace's rules are replaced atomically."""
        for nid in self.nodes:
            srcs = sorted(self.ip[a] for a, b in blocked if b == nid)
            rules = ["flush chain inet chaos input"]
            if srcs:
                rules.append(f"add rule inet chaos input ip saddr {{ {', '.join(srcs)} }} drop")
            pct = loss.get(nid, 0)
            if pct > 0:
                rules.append(
                    f"add rule inet chaos input iifname \"eth0\" numgen random mod 100 < {pct} drop"
                )
            _run(["ip", "netns", "exec", self.ns(nid), "nft", "-f", "-"],
                 input="\n".join(rules) + "\n")

    def link(self, node_id: str, up: bool) -> None:
        _run(["ip", "link", "set", self.veth(node_id), "up" if up else "down"])

    def heal(self) -> None:
        self.set_network(set(), {})
        for nid in self.nodes:
            self.link(nid, True)
        super().heal()

    def rules(self) -> dict[str, str]:
        """Each namespace's current chaos rules (for diagnostics)."""
        return {
            nid: _run(["ip", "netns", "exec", self.ns(nid), "nft", "list", "table", "inet",
                       "chaos"], check=False).stdout
            for nid in self.nodes
        }


def make_cluster(kind: str, n: int, tick_ms: int = 50) -> ChaosCluster:
    """`kind` is "netns", "loopback" or "auto" (netns when possible)."""
    if kind == "auto":
        kind = "loopback" if netns_unavailable_reason() else "netns"
    if kind == "netns":
        reason = netns_unavailable_reason()
        if reason:
            raise HarnessUnavailable(reason)
        return NetnsCluster(n, tick_ms=tick_ms)
    if kind == "loopback":
        return LoopbackCluster(n, tick_ms=tick_ms)
    raise ValueError(f"unknown cluster kind {kind!r}")


def wait_recovered(c: ChaosCluster, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until every node is ready and they agree on a leader; returns {leader, took}."""
    t0 = time.monotonic()
    c.wait_ready(timeout)
    leader = c.leader(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    return {"leader": leader, "took": time.monotonic() - t0}
