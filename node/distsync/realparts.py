"""The production implementations of the driver's seams (seams.py): SQLite storage, the
websocket transport with TLS and peer authentication, the OS clock, worker threads.

Used by the composition root (server.py); kept apart from it so that what runs against the
real disk, network and clock is in one short module.
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
from .starts import PeerStarts
from .storage import Storage
from .transport import Transport

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .config import NodeConfig
    from .node import Node

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


def _exit(exc: BaseException | None) -> None:
    os._exit(EXIT_LOOP_DIED)


def real_parts(cfg: NodeConfig, registry: CollectorRegistry | None = None) -> NodeParts:
    """`registry`: the node's Prometheus registry, for the peer authenticator's refusals."""
    # Peer authentication and TLS (README "Security"): the transport's, and the node's
    # other node-to-node HTTP calls' (they sign with `peer_auth.request_headers(target)`).
    ssl_server, ssl_client = tls_contexts(cfg)
    peer_auth = peer_auth_from_config(cfg, registry)

    storage = Storage(cfg.data_dir, cluster=cfg.cluster, node=cfg.node_id)

    def transport(node: Node) -> Transport:
        # This node's start, durable before it dials anyone (starts.py: how its peers
        # catch a data directory restored in place from an older copy of itself).
        starts = PeerStarts(node.id, storage, lambda: node.storage_fault() is not None,
                            node.rolled_back, node.peer_replaced)
        node.start_chains = starts  # for /v1/status
        t = Transport(
            node.id, node._resolve, node._on_message, cluster=cfg.cluster,
            on_peer_state=node._on_peer_state, advertise=cfg.address, ssl=ssl_client,
            authenticator=peer_auth, starts=starts, cluster_id=lambda: node.core.cluster_id,
            on_peer_id=lambda peer, cid: node.core.note_peer_id(peer, cid),
        )
        # Dial every member at once rather than at the first message: a follower sends
        # nothing to the other followers, and each of them must see this start while it
        # can (a copy restored later is caught only by a peer that saw what came after).
        t.set_peers(node.conf.voters | node.conf.learners)
        return t

    return NodeParts(
        storage=storage,
        transport=transport,
        clock=RealClock(),
        rng=random.Random(os.urandom(8)),
        io=ThreadIO(f"fsync-{cfg.node_id}"),
        # Snapshots are written by a thread of their own, so that the Raft loop's saves do
        # not queue behind a large one (see Node._maybe_snapshot).
        snap_io=ThreadIO(f"snap-{cfg.node_id}"),
        on_fatal=_exit,
        ssl_server=ssl_server, ssl_client=ssl_client, peer_auth=peer_auth,
    )
