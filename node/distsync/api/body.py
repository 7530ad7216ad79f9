"""Request bodies before any route sees them: the size limit from `Content-Length` alone, and
a deadline for the body to arrive (README "Connection limits").

A request that declares more than `--max-body-bytes` is answered 413 at once, without
waiting for (or reading) a byte of its body, and its connection is closed. Any other body is
read here, within `body_timeout_s`; a body that does not arrive in time gets 408
`body_timeout`, and a client that hangs up mid-body is logged at INFO (rate-limited) rather
than counted as a 500. Handlers then read the body from memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from ..transport import STREAM_PATH
from .appkeys import NODE
from .errors import json_error
from .http_server import REFUSALS


def _closing(resp: web.Response) -> web.Response:
    resp.force_close()
    return resp


@web.middleware
async def body_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path == STREAM_PATH or not request.body_exists:
        return await handler(request)
    node = request.app[NODE]
    limit = node.cfg.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        return _closing(json_error(
            413, "body_too_large",
            f"Content-Length {declared} exceeds the limit of {limit} bytes", limit=limit))
    timeout = node.cfg.body_timeout_s
    try:
        if request.content.is_eof():
            # The whole body came with the headers (the usual small request): nothing to
            # wait for, so no deadline timer to arm and cancel.
            await request.read()
        else:
            async with asyncio.timeout(timeout):
                await request.read()
    except TimeoutError:
        REFUSALS.log(logging.INFO, "body from %s did not arrive within %s s", request.remote,
                     timeout)
        return _closing(json_error(408, "body_timeout",
                                   f"the request body did not arrive within {timeout} s"))
    except (ConnectionResetError, web.RequestPayloadError) as e:
        REFUSALS.log(logging.INFO, "body from %s broke off: %s", request.remote, e)
        return _closing(json_error(400, "incomplete_body", f"the request body broke off: {e}"))
    return await handler(request)
