"""The one composition root: builds a real node, its services and its HTTP API from a
`NodeConfig`, and runs it until a signal.

The driver (node.py) gets its storage, transport, clock and threads here (realparts.py);
the simulator (testing/sim.py) builds the very same `Node` from in-memory parts instead.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .node import Node, NodeConfig
from .realparts import real_parts
from .services import default_services
from .services.kv import KVStore
from .services.registry import Registry

log = logging.getLogger("distsync")


def build_node(cfg: NodeConfig) -> Node:
    """A real node: SQLite storage in `cfg.data_dir`, the websocket transport (with TLS and
    peer authentication from `cfg`), the OS clock, and the default services."""
    registry = Registry([KVStore(), *default_services()])
    return Node(cfg, parts=real_parts(cfg), registry=registry)


async def start_node(cfg: NodeConfig) -> tuple[Node, web.AppRunner]:
    """Build the node, start its HTTP listener (clients and peers) and its Raft loop."""
    from .api.app import serve

    node = build_node(cfg)
    return node, await serve(node)


async def run_node(cfg: NodeConfig) -> None:
    """`distsync node`: serve until SIGINT or SIGTERM, then stop cleanly."""
    node, runner = await start_node(cfg)
    log.info("node %s serving on %s", cfg.node_id, cfg.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()
    await runner.cleanup()
