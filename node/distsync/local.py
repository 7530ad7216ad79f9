"""A cluster of real `distsync node` processes on loopback: what `distsync up` and `distsync
demo` run, and the harness the integration tests use to kill, restart and wipe nodes.

Plain blocking HTTP (urllib) on purpose: the harness must keep working while the test's own
event loop or client is the thing under suspicion.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_ports(n: int) -> list[int]:
    import socket

    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_json(
    method: str, url: str, body: Any = None, timeout: float = 3.0,
    headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


@dataclass
class LocalNode:
    node_id: str
    addr: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    join: bool = False
    scheme: str = "http"
    stopped: bool = False  # the harness stopped it on purpose (kill, stop): not a death

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.addr}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def died(self) -> bool:
        """The process exited and nobody asked it to: a crash (at start-up or later)."""
        return self.proc is not None and not self.stopped and self.proc.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])


class NodeDied(RuntimeError):
    """A node process exited that the harness did not stop. The message carries what a user
    needs to see why without digging: the node, its exit code and the end of its log."""

    def __init__(self, nodes: list[LocalNode]):
        self.nodes = nodes
        parts = []
        for nd in nodes:
            code = nd.proc.returncode if nd.proc is not None else None
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            parts.append(f"node {nd.node_id} ({nd.addr}) died: {how}; last lines of "
                         f"{nd.log_path}:\n{nd.log_tail()}")
        super().__init__("\n\n".join(parts))


class LocalCluster:
    """`extra_args` and `env` go to every node, `node_env[id]` to one (e.g. its own TLS
    certificate). With security on, the harness itself needs credentials for the status and
    readiness calls it makes: `token` (sent as a bearer token; read role suffices) and `ca`
    (a CA file: talk HTTPS and verify the nodes against it). `python`: the interpreter the
    nodes run on (default: this one); it must be able to import distsync. Why: how fast a
    node is depends on how its CPython was built (benchmarks/README.md, "The interpreter"),
    and a benchmark should be able to run the nodes on the kind of build that ships."""

    def __init__(
        self, n: int = 3, base_port: int = 0, data_dir: str | os.PathLike | None = None,
        extra_args: list[str] | None = None, tick_ms: int = 50,
        env: dict[str, str] | None = None, node_env: dict[str, dict[str, str]] | None = None,
        token: str | None = None, ca: str | os.PathLike | None = None,
        python: str | os.PathLike | None = None,
    ):
        self.python = str(python) if python else sys.executable
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="distsync-")
        self.keep_data = False  # set on failure: the logs stay for the user to read
        self.data_dir = Path(data_dir or self._tmp or ".")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args or [])
        self.tick_ms = tick_ms
        self.env = dict(env or {})
        self.node_env = {k: dict(v) for k, v in (node_env or {}).items()}
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ssl_context = ssl.create_default_context(cafile=str(ca)) if ca else None
        self.scheme = "https" if ca else "http"
        ports = [base_port + i for i in range(n)] if base_port else free_ports(n)
        self.nodes: dict[str, LocalNode] = {}
        for i, port in enumerate(ports, start=1):
            self._add(f"n{i}", f"127.0.0.1:{port}")
        self.founders = dict(self.peer_map())

    def _add(self, node_id: str, addr: str, join: bool = False) -> LocalNode:
        nd = LocalNode(
            node_id, addr, self.data_dir / node_id, self.data_dir / f"{node_id}.log", join=join,
            scheme=self.scheme,
        )
        self.nodes[node_id] = nd
        return nd

    def peer_map(self) -> dict[str, str]:
        return {n.node_id: n.addr for n in self.nodes.values() if not n.join}

    @property
    def addrs(self) -> list[str]:
        return [n.addr for n in self.nodes.values()]

    # -- processes -----------------------------------------------------------------------

    def start(self) -> LocalCluster:
        for nid in self.nodes:
            self.start_node(nid)
        return self

    def start_node(self, node_id: str) -> None:
        nd = self.nodes[node_id]
        if nd.alive():
            return
        peers = ",".join(f"{k}={v}" for k, v in self.founders.items())
        # -P: the current directory is not put on sys.path, so a folder named `distsync` where
        # the user stands cannot shadow the installed package (a namespace package import).
        cmd = [
            *self._command_prefix(node_id),
            self.python, "-P", "-m", "distsync.cli", "node", "--id", nd.node_id,
            "--listen", nd.addr, "--peers", peers, "--data-dir", str(nd.data_dir),
            "--tick-ms", str(self.tick_ms), *self.extra_args,
        ]
        if nd.join:
            cmd.append("--join")
        logf = open(nd.log_path, "ab")  # noqa: SIM115 - the child owns it
        nd.stopped = False
        nd.proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env,
                 **self.node_env.get(node_id, {})},
        )
        logf.close()

    def _command_prefix(self, node_id: str) -> list[str]:
        """What the node's command runs under (a network namespace, in the chaos harness)."""
        return []

    def add_joiner(self) -> LocalNode:
        """A new, empty process that waits to be added through the membership API."""
        nid = f"n{len(self.nodes) + 1}"
        while nid in self.nodes:
            nid += "x"
        nd = self._add(nid, f"127.0.0.1:{free_ports(1)[0]}", join=True)
        self.start_node(nid)
        return nd

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        nd = self.nodes[node_id]
        ends = sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
        if ends:
            nd.stopped = True
        if nd.proc is not None and nd.proc.poll() is None:
            nd.proc.send_signal(sig)
            if ends:
                try:
                    nd.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    nd.proc.kill()
                    nd.proc.wait()

    def restart(self, node_id: str) -> None:
        self.kill(node_id)
        self.start_node(node_id)

    def wipe(self, node_id: str) -> None:
        """Delete a stopped node's data directory (a replaced disk)."""
        assert not self.nodes[node_id].alive(), "stop the node before wiping it"
        shutil.rmtree(self.nodes[node_id].data_dir, ignore_errors=True)

    def stop(self) -> None:
        for nd in self.nodes.values():
            nd.stopped = True
            if nd.alive():
                nd.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for nd in self.nodes.values():
            if nd.proc is not None:
                try:
                    nd.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    nd.proc.kill()
                    nd.proc.wait()

    def close(self) -> None:
        self.stop()
        if self._tmp and not self.keep_data:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.keep_data = True  # whatever went wrong, its traces are in the node logs
        self.close()

    def dead(self) -> list[LocalNode]:
        return [nd for nd in self.nodes.values() if nd.died()]

    def check_alive(self) -> None:
        """Raise NodeDied if a node exited that nobody stopped."""
        dead = self.dead()
        if dead:
            raise NodeDied(dead)

    # -- observing -----------------------------------------------------------------------

    def status(self, node_id: str, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            code, body = http_json(
                "GET", f"{self.nodes[node_id].url}/v1/status", timeout=timeout,
                headers=self.headers, context=self.ssl_context,
            )
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return body if code == 200 else None

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        return {nid: self.status(nid) if nd.alive() else None for nid, nd in self.nodes.items()}

    def wait_for(self, cond: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()  # a crashed node is an answer, not a reason to wait it out
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def leader(self, timeout: float = 10.0, among: list[str] | None = None) -> str:
        """The leader that every live node in `among` agrees on."""
        def agreed() -> str | None:
            sts = {k: v for k, v in self.statuses().items() if among is None or k in among}
            live = [s for s in sts.values() if s is not None]
            if not live:
                return None
            leaders = {s["leader"] for s in live}
            if len(leaders) == 1:
                (lead,) = leaders
                if lead is not None and any(s["id"] == lead and s["role"] == "leader"
                                            for s in live):
                    return lead
            return None

        return self.wait_for(agreed, timeout, "an agreed leader")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every node the harness has not stopped is alive and ready (a dead one raises)."""
        def ready() -> bool:
            if not any(nd.alive() for nd in self.nodes.values()):
                return False
            for nd in self.nodes.values():
                if nd.stopped or nd.proc is None:
                    continue
                try:
                    code, _ = http_json(
                        "GET", f"{nd.url}/readyz", timeout=1.0, context=self.ssl_context
                    )
                except (OSError, urllib.error.URLError):
                    return False
                if code != 200:
                    return False
            return True

        self.wait_for(ready, timeout, "all live nodes ready")

    def status_table(self) -> str:
        return format_status([s for s in self.statuses().values() if s])


def format_status(statuses: list[dict[str, Any]]) -> str:
    cols = ["id", "addr", "role", "term", "leader", "commit", "applied", "storage",
            "members"]
    rows = []
    notes = []
    for s in statuses:
        members = s.get("members")
        fault = s.get("storage_fault")
        rows.append([
            str(s.get("id", "")), str(s.get("addr", "")), str(s.get("role", "")),
            str(s.get("term", "")), str(s.get("leader", "")), str(s.get("commit", "")),
            str(s.get("applied", "")),
            f"RECOVERING({fault['kind']})" if fault else "ok" if "storage_fault" in s else "",
            ",".join(m["id"] + ("" if m["voter"] else "(learner)") for m in members)
            if members else "",
        ])
        if fault:
            notes.append(f"{s.get('id')}: storage fault {fault['kind']} since "
                         f"{fault['since']}: {fault['detail']} (repaired up to "
                         f"{fault['repaired_up_to']}); not voting until a leader repairs it")
        if s.get("no_leader_reason"):
            notes.append(f"{s.get('id')}: no leader: {s['no_leader_reason']}")
        refusals = s.get("start_refusals") or {}
        for peer, why in sorted((refusals.get("refusing") or {}).items()):
            notes.append(f"{s.get('id')}: refuses {peer}: {why}")
        for peer, why in sorted((refusals.get("refused_by") or {}).items()):
            notes.append(f"{s.get('id')}: refused by {peer}: {why}")
    ids = {str(s.get("id")): s["cluster_id"] for s in statuses if s.get("cluster_id")}
    if len(set(ids.values())) == 1:
        notes.insert(0, f"cluster id: {next(iter(ids.values()))}")
    elif ids:  # two clusters' members under one set of names: they refuse each other
        notes[:0] = [f"{n}: cluster id {cid}" for n, cid in sorted(ids.items())]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out + notes)
