"""The aiohttp application: one listener for clients and for peers (the Raft stream).

It mounts routes over what the composition root (server.py) built and hands it: the node
and the cache service. Nothing here builds a service or reads configuration beyond the
node's config."""

from __future__ import annotations

import time

import aiohttp
from aiohttp import web

from ..cache import CacheService
from ..node import Node
from ..watch import WatchHub
from .appkeys import CACHE, FORWARD_SESSION, NODE, STARTED, WATCH
from .auth import auth_middleware
from .auth import install as install_auth
from .body import body_middleware
from .errors import error_middleware
from .http_server import ConnectionLimits, JsonAppRunner
from .openapi import routes as openapi_routes
from .peer_trust import MEMBER_IPS, peer_trust_middleware
from .routes import ROUTE_MODULES


@web.middleware
async def metrics_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    resp = await handler(request)
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    # labels() takes a lock and builds a key on every call; the children are few (routes x
    # statuses), so they are looked up once and kept.
    children = request.app[_COUNTERS]
    child = children.get((name, resp.status))
    if child is None:
        child = request.app[NODE].metrics.http_requests.labels(name, str(resp.status))
        children[(name, resp.status)] = child
    child.inc()
    return resp


_COUNTERS = web.AppKey("http_request_counters", dict)


def create_app(node: Node, cache: CacheService,
               watches: WatchHub | None = None) -> web.Application:
    """`watches`: the node's watch hub (server.py builds it); without one, GET /v1/watch
    answers 503 `watch_unavailable`."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware, body_middleware,
                     peer_trust_middleware],
        client_max_size=node.cfg.max_body_bytes,
    )
    app[NODE] = node
    app[CACHE] = cache
    app[WATCH] = watches
    app[_COUNTERS] = {}
    app[MEMBER_IPS] = {}
    install_auth(app, node.cfg)
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
        if hasattr(module, "setup"):  # optional: the lifecycle of what a module serves
            module.setup(app)
    app.add_routes(openapi_routes)  # GET /v1/openapi.json
    node.transport.add_routes(app)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[FORWARD_SESSION] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=node.cfg.request_timeout + 1),
            connector=aiohttp.TCPConnector(use_dns_cache=False, ssl=node.ssl_client or True),
        )
        app[STARTED] = time.monotonic()
        yield
        await app[FORWARD_SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    return app


async def serve(node: Node, app: web.Application) -> web.AppRunner:
    """Start the node and `app`, its HTTP listener; returns the runner to clean up."""
    cfg = node.cfg
    limits = ConnectionLimits(
        header_timeout_s=cfg.header_timeout_s, idle_timeout_s=cfg.idle_timeout_s,
        max_connections=cfg.max_connections,
        max_connections_per_client=cfg.max_connections_per_client,
    )
    runner = JsonAppRunner(app, limits, access_log=None)
    await runner.setup()
    host, port = node.cfg.listen.rsplit(":", 1)
    site = web.TCPSite(
        runner, host, int(port), reuse_address=True, ssl_context=node.ssl_server
    )
    try:
        await site.start()
        await node.start()
    except BaseException:
        await runner.cleanup()  # e.g. the port is taken: close what setup opened, then say so
        raise
    return runner
