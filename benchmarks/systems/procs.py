"""Named server processes on loopback for the peer adapters (etcd, PySyncObj): spawn, SIGKILL,
restart with the same data, a stop that leaves nothing behind, and the "first node to
acknowledge" write that start-up and failover timing both wait on.

Each adapter owns one `ProcessSet`, so the harness can kill a leader by name and read pids
for RSS/CPU without knowing how the peer is launched. Output goes to a per-node log file in
the set's temp dir, not to pipes, so a chatty server never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path


class ProcessSet:
    """Server processes keyed by node name, all under one temporary directory.

    The argv of each node is remembered at spawn, so `restart` relaunches it with the same
    ports and data dir: what a crashed member sees when its supervisor brings it back.
    """

    def __init__(self, prefix: str, parent_dir: str | os.PathLike[str] | None = None) -> None:
        if parent_dir is not None:
            Path(parent_dir).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent_dir))
        self._argv: dict[str, list[str]] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def log_path(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def spawn(self, name: str, argv: list[str]) -> None:
        """Start `argv` as node `name`, stdout+stderr appended to its log. It stays in the
        harness's process group, so a Ctrl-C reaches it even if `stop` never runs."""
        self._argv[name] = argv
        self.data_dir(name).mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            self._procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def alive(self, name: str) -> bool:
        p = self._procs.get(name)
        return p is not None and p.poll() is None

    def names(self) -> list[str]:
        return list(self._argv)

    def live_names(self) -> list[str]:
        return [n for n in self._argv if self.alive(n)]

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self._procs.items() if p.poll() is None}

    def kill(self, name: str) -> None:
        p = self._procs.get(name)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def restart(self, name: str) -> None:
        if self.alive(name):
            raise RuntimeError(f"{name} is still running; kill it first")
        self.spawn(name, self._argv[name])

    def stop(self, grace: float = 10.0, last: str | None = None) -> None:
        """SIGTERM every live process, SIGKILL what is left after `grace` seconds, then
        delete the temp dir (data and logs). `last` (a leader) is stopped after the others:
        a leader told to stop may first hand over leadership and wait for a successor
        (etcd waits ~7 s when its followers are stopping too)."""
        for stage in ([n for n in self._procs if n != last], [last] if last else []):
            live = [self._procs[n] for n in stage if self.alive(n)]
            for p in live:
                p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for p in live:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"<no log: {e}>"


async def wait_until_written(
    write: Callable[[], Awaitable[None]], timeout: float, what: str, logs: Callable[[], str]
) -> None:
    """Retry `write` until it succeeds; on timeout, fail with the nodes' log tails so a
    peer that never came up can be diagnosed from the message alone."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            await write()
            return
        except Exception as e:  # any failure means "not ready yet"
            last = e
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{what}: no acknowledged write within {timeout:.0f} s ({last!r})\n{logs()}")


async def first_ack(attempts: Mapping[str, Callable[[], Awaitable[object]]], what: str) -> None:
    """Run one attempt per node at once and return as soon as any succeeds (cancelling the
    rest); raise with every node's error if none does. Concurrent rather than in turn, so a
    member that hangs until its timeout does not delay the one that would answer, and the
    failover time is not rounded up by the order the members are tried in."""
    tasks = {asyncio.ensure_future(call()): node for node, call in attempts.items()}
    errors: list[str] = []
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is None:
                    return
                errors.append(f"{tasks[t]}: {t.exception()!r}")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise RuntimeError(f"{what}: no node acknowledged the write: " + "; ".join(errors or ["no live node"]))
