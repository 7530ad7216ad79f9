"""One error shape for every failure: `{"error": code, "message": text, ...}` with a fitting
status. Clients branch on `error`, humans read `message`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from ..node import Unavailable
from ..raft.conf import ConfChangeError
from ..raft.core import NotLeader, ProposalDropped
from .appkeys import NODE
from .jsonio import json_response

log = logging.getLogger("distsync.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return json_response({"error": code, "message": message, **extra}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return json_error(e.status, e.code, e.message, **e.extra)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        message = e.reason
        if e.status == 404:
            message = f"no route for {request.method} {request.path}"
        elif e.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif e.status == 413:
            limit = request.app[NODE].cfg.max_body_bytes
            message = f"request body exceeds the limit of {limit} bytes"
        return json_error(e.status, code, message)
    except NotLeader as e:
        node = request.app[NODE]
        return json_error(
            503, "not_leader", str(e), leader=e.leader, leader_addr=node.addr_of(e.leader)
        )
    except ProposalDropped as e:
        return json_error(503, "unavailable", str(e))
    except Unavailable as e:
        return json_error(503, "unavailable", str(e))
    except ConfChangeError as e:
        return json_error(409, "membership_conflict", str(e))
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the last line of defence must answer in JSON
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error; see the node's log")
