"""The keys of what the HTTP app shares with its handlers (the node, its cache and watch
hub, the forwarding session), as aiohttp's typed `web.AppKey`: a plain string key works but
warns on every app built (NotAppKeyWarning) and tells a type checker nothing."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from ..cache import CacheService
from ..node import Node
from ..watch import WatchHub

NODE = web.AppKey("node", Node)
CACHE = web.AppKey("cache", CacheService)
WATCH = web.AppKey("watch", WatchHub)  # None when the node has no watch hub
FORWARD_SESSION = web.AppKey("forward_session", aiohttp.ClientSession)
STARTED = web.AppKey("started", float)  # the loop's clock when the app started
