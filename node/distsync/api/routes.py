"""Which route modules the API mounts: one line per service, each a module with a `routes`
RouteTableDef (and optionally `setup(app)`).

Its own module so that the app (which mounts them) and the OpenAPI description (which
describes exactly what is mounted) both read this list, and neither imports the other.
"""

from __future__ import annotations

from . import (
    barriers,
    cache,
    cluster,
    elections,
    kv,
    locks,
    overview,
    queues,
    semaphores,
    ui,
    watch,
)

ROUTE_MODULES = [cluster, kv, watch, queues, locks, elections, semaphores, barriers, cache,
                 overview, ui]
