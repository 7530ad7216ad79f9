"""The Python client's public surface is typed: `mypy --strict` passes on its modules (issue
20), so IDEs and type checkers see real signatures and return types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "node"
CLIENT_MODULES = ["distsync/client/core.py", "distsync/client/locks.py", "distsync/client/queues.py",
                  "distsync/client/cache.py"]


def test_mypy_strict_on_the_client(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), *CLIENT_MODULES],
        cwd=NODE, capture_output=True, text=True, timeout=240,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_blocking_methods_are_visible_to_help() -> None:
    """The blocking wrappers spell out their methods (not only __getattr__), so help() and
    IDEs list them with signatures."""
    import inspect

    from distsync.client import BlockingClient, Client
    from distsync.client.cache import BlockingCache, CacheClient
    from distsync.client.locks import BlockingLock, Lock
    from distsync.client.queues import BlockingQueue, Queue

    for blocking, source in ((BlockingClient, Client), (BlockingCache, CacheClient),
                             (BlockingQueue, Queue), (BlockingLock, Lock)):
        wanted = {n for n, f in inspect.getmembers(source, inspect.iscoroutinefunction)
                  if not n.startswith("_") and n not in ("request_or_raise", "lock_session")}
        missing = {n for n in wanted if n not in vars(blocking)}
        assert not missing, f"{blocking.__name__} lacks {sorted(missing)}"
