"""The production implementations of the driver's seams (seams.py): SQLite storage, the
websocket transport with TLS and peer authentication, the OS clock, worker threads.

Kept apart from server.py (the composition root) so that node.py can still build a real node
from a bare `Node(cfg)`, as the existing tests and tools do, without importing server.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .seams import NodeParts
from .security.peer_auth import from_config as peer_auth_from_config
from .security.tls import contexts as tls_contexts
from .storage import Storage
from .transport import Transport

if TYPE_CHECKING:
    from .node import Node, NodeConfig

log = logging.getLogger("distsync.node")

# The exit status of a node whose Raft loop died; its supervisor restarts it from its disk.
EXIT_LOOP_DIED = 70


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return int(time.time() * 1000)


class ThreadIO:
    """One worker thread: saves are ordered, and overlap the event loop's work."""

    inline = True

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    shutdown = close  # the executor's name, which callers used before this seam existed


def _transport(node: Node) -> Transport:
    cfg = node.cfg
    # Peer authentication and TLS (README "Security"). Other node-to-node HTTP calls
    # (/v1/internal/...) sign with `peer_auth.request_headers(target)` when it is set.
    node.ssl_server, node.ssl_client = tls_contexts(cfg)
    node.peer_auth = peer_auth_from_config(cfg, node.metrics.registry)
    return Transport(
        node.id, node._resolve, node._on_message, cluster=cfg.cluster,
        on_peer_state=node._on_peer_state, advertise=cfg.address, ssl=node.ssl_client,
        authenticator=node.peer_auth,
    )


def _exit(exc: BaseException | None) -> None:
    os._exit(EXIT_LOOP_DIED)


def real_parts(cfg: NodeConfig) -> NodeParts:
    return NodeParts(
        storage=Storage(cfg.data_dir),
        transport=_transport,
        clock=RealClock(),
        rng=random.Random(os.urandom(8)),
        io=ThreadIO(f"fsync-{cfg.node_id}"),
        # Snapshots are written by a thread of their own, so that the Raft loop's saves do
        # not queue behind a large one (see Node._maybe_snapshot).
        snap_io=ThreadIO(f"snap-{cfg.node_id}"),
        on_fatal=_exit,
    )
