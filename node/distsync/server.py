"""The one composition root: builds a real node, its services, its cache and its HTTP API
from a `NodeConfig`, and runs it until a signal.

Every piece is built here and handed to what uses it; nothing below reads the environment or
reaches into another piece to finish its wiring:

* the driver (node.py) gets its storage, transport, clock, threads, TLS contexts and peer
  authenticator (realparts.py) and the replicated state machine (`assemble_node`);
* the services get their clocks, quotas and metrics where they are built (`node_services`);
* the cache service gets its backend, peers and capacity (`build_cache`);
* the API (api/app.py) gets the node and the cache service, and only parses, calls and maps.

The simulator (testing/sim.py) builds the very same `Node` and services through
`assemble_node`, from in-memory parts instead of realparts.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from .api.app import create_app, serve
from .api.appkeys import WATCH
from .cache import CacheConfig, CacheService, NodeView, make_backend
from .cache.transport import HttpPeers
from .config import NodeConfig
from .metrics import (
    IdentityCollector,
    LockCollector,
    NodeMetrics,
    QuotaCollector,
    RequestIdCollector,
)
from .node import Node
from .realparts import real_parts
from .seams import Clock, NodeParts
from .services.barriers import BarrierService
from .services.base import StateMachine
from .services.coord_metrics import BarrierCollector, SemaphoreCollector
from .services.election_metrics import ElectionCollector
from .services.elections import ElectionService
from .services.kv import KVStore
from .services.kv_history import KVHistory
from .services.locks import LockService
from .services.queue_metrics import QueueMetrics
from .services.queues import QueueService
from .services.quotas import DEFAULT_LIMITS
from .services.registry import Registry
from .services.semaphores import SemaphoreService
from .watch import WatchHub

log = logging.getLogger("distsync")


def node_services(clock: Clock, metrics: NodeMetrics,
                  cfg: NodeConfig | None = None) -> list[StateMachine]:
    """Every service a node runs, the kv register first; a new service adds itself here
    (one line) and its routes in api/routes.py. The lock leases run on the node's clock;
    each service's metrics go to the node's registry."""
    queues = QueueService()
    queues.obs = QueueMetrics(metrics.registry, queues)
    locks = LockService(clock=lambda: clock.monotonic() * 1000.0)
    metrics.registry.register(LockCollector(locks))
    history = KVHistory() if cfg is None else KVHistory(cfg.watch_history_events,
                                                        cfg.watch_history_bytes)
    elections = ElectionService(locks)
    metrics.registry.register(ElectionCollector(elections))
    sems, barriers = SemaphoreService(), BarrierService()
    metrics.registry.register(SemaphoreCollector(sems))
    metrics.registry.register(BarrierCollector(barriers))
    kv = KVStore(history)
    # Services that bind state to lock sessions hear of each session's end in the apply of
    # its close or expiry, in this order on every node: ephemeral keys, elections,
    # semaphores (which also join the locks' wait-for graph), barriers.
    kv.bind_sessions(locks)
    locks.on_session_end(elections.session_ended)
    sems.bind(locks)
    barriers.bind(locks)
    return [kv, queues, locks, elections, sems, barriers]


def assemble_node(
    cfg: NodeConfig, parts: NodeParts, *, metrics: NodeMetrics | None = None,
    make_registry: Callable[[list[StateMachine]], Registry] = Registry,
) -> Node:
    """A `Node` over `parts` with the services of `node_services` in a registry made by
    `make_registry` (the simulator's records every apply), the quotas `cfg` asks for, and
    the registry's metrics."""
    metrics = metrics or NodeMetrics(cfg.node_id)
    registry = make_registry(node_services(parts.clock, metrics, cfg))
    # Quotas are replicated: the leader proposes these once elected (services/quotas.py).
    registry.quota.desired = {k: getattr(cfg, k) for k in DEFAULT_LIMITS}
    metrics.registry.register(RequestIdCollector(registry))
    metrics.registry.register(QuotaCollector(registry.quota))
    node = Node(cfg, parts=parts, registry=registry, metrics=metrics)
    metrics.registry.register(IdentityCollector(node))
    return node


def build_node(cfg: NodeConfig) -> Node:
    """A real node: SQLite storage in `cfg.data_dir`, the websocket transport (with TLS and
    peer authentication from `cfg`), the OS clock, and every service."""
    metrics = NodeMetrics(cfg.node_id)
    return assemble_node(cfg, real_parts(cfg, metrics.registry), metrics=metrics)


def build_cache(node: Node) -> CacheService:
    """The node's coherent cache: the backend `cfg.redis_url` names, HTTP peers signed like
    every node-to-node call, and the capacity from `cfg`."""
    cfg = node.cfg
    ccfg = CacheConfig(max_bytes=cfg.cache_max_bytes, max_value_bytes=cfg.cache_max_value_bytes,
                       lease_ms=cfg.cache_lease_ms)
    backend = make_backend(cfg.redis_url or None)
    auth = node.peer_auth
    peers = HttpPeers(node.addr_of, timeout=ccfg.rpc_timeout, ssl=node.ssl_client,
                      headers_for=auth.request_headers if auth is not None else None)
    log.info("%s: cache backend %s (%s)", node.id, backend.kind, cfg.redis_url or "embedded")
    return CacheService(NodeView(node), backend, peers, ccfg, registry=node.metrics.registry)


def build_watches(node: Node) -> WatchHub:
    """The node's watchers of kv keys, fed by its kv history, with the bounds from `cfg`."""
    cfg = node.cfg
    return WatchHub(node.kv.history, cfg.max_watchers, cfg.watch_buffer_events, node.metrics,
                    max_watchers_per_client=cfg.max_watchers_per_client)


def build_server(cfg: NodeConfig) -> tuple[Node, web.Application]:
    """The node and its HTTP app (clients and peers), not yet started."""
    node = build_node(cfg)
    return node, create_app(node, build_cache(node), build_watches(node))


async def start_node(cfg: NodeConfig) -> tuple[Node, web.AppRunner]:
    """Build the node, start its HTTP listener (clients and peers) and its Raft loop."""
    node, app = build_server(cfg)
    return node, await serve(node, app)


async def run_node(cfg: NodeConfig) -> None:
    """`distsync node`: serve until SIGINT or SIGTERM, then stop cleanly."""
    node, runner = await start_node(cfg)
    log.info("node %s serving on %s", cfg.node_id, cfg.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    hub = runner.app[WATCH]
    if hub is not None:
        hub.shutdown()  # watch streams end first: their handlers would hold up the cleanup
    await node.stop()
    await runner.cleanup()
