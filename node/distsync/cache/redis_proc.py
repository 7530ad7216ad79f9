"""A local `redis-server` process on a free loopback port: for `distsync up`, the cache demo,
the benchmark and the tests (which start and stop their own). AOF is on, so stopping and
starting it again on the same directory keeps the data, as a real deployment would."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, port: int = 0, data_dir: str | Path | None = None):
        exe = redis_server_path()
        if exe is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.exe = exe
        self.port = port or _free_port()
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="distsync-redis-")
        self.dir = Path(data_dir or self._tmp or ".")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.alive():
            return self
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--protected-mode", "no", "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}; "
                                   f"see {self.dir / 'redis.log'}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Graceful stop (SIGTERM: redis flushes its AOF first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def local_backend(say: Callable[[str], None] = print) -> Iterator[list[str]]:
    """For `distsync up` and the demo: a redis-server if one is on PATH, else the embedded
    store; yields the node arguments that point the nodes at it."""
    if redis_server_path():
        with RedisServer() as rs:
            say(f"cache backend: redis-server on {rs.url}")
            yield ["--redis-url", rs.url]
        return
    from .embedded import EmbeddedStoreServer

    store = EmbeddedStoreServer().start()
    say(f"cache backend: no redis-server on PATH; using the embedded in-process store at "
        f"{store.url} (development only: its data lives in this process)")
    try:
        yield ["--redis-url", store.url]
    finally:
        store.close()
