"""The operator console: static files served at `/ui/` by every node.

The page is plain HTML, CSS and ES modules shipped inside the package (`distsync/console/`):
no build step, no CDN, so it works offline and matches the node's version. Its files hold
no data and are open like `/v1/openapi.json`; everything the page shows it reads from the
documented JSON API with the token the operator types in, so it sees exactly what that
token may see (README "Operator console").
"""

from __future__ import annotations

import re
from importlib import resources

from aiohttp import web

from .errors import ApiError

routes = web.RouteTableDef()

_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
          ".svg": "image/svg+xml", ".txt": "text/plain"}
# Flat names only (js/<name>.js at most one folder deep): no path can leave the folder.
_NAME = re.compile(r"^(?:[a-z0-9_-]+/)?[a-z0-9_-]+\.(?:html|css|js|svg|txt)$")
# Served as written; the node's version changes with the files, and a reload revalidates.
_CACHE = "no-cache"


def _file(name: str) -> web.Response:
    if not _NAME.fullmatch(name):
        raise ApiError(404, "not_found", f"no console file {name!r}")
    path = resources.files("distsync").joinpath("console", *name.split("/"))
    if not path.is_file():
        raise ApiError(404, "not_found", f"no console file {name!r}")
    suffix = name[name.rindex("."):]
    resp = web.Response(body=path.read_bytes(), content_type=_TYPES[suffix],
                        charset="utf-8")
    resp.headers["Cache-Control"] = _CACHE
    # The page runs only its own scripts and talks only to this node.
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@routes.get("/ui")
async def ui_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def ui_index(request: web.Request) -> web.StreamResponse:
    return _file("index.html")


@routes.get("/ui/{name:.+}")
async def ui_file(request: web.Request) -> web.StreamResponse:
    return _file(request.match_info["name"])
