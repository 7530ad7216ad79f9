"""Following a node's NDJSON stream (`/v1/watch`, an election's `/observe`) across nodes:
after the stream ends or its node fails, the same request goes to the next node, with the
resume point the caller has reached by then. The caller keeps the resume state (it decides
what an event means), this keeps the connection, the error mapping and the pacing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from .errors import DistSyncError, Unavailable, error_from_answer

RETRY_PAUSE_S = (0.02, 0.05, 0.1, 0.2, 0.5)  # between attempts after a failure, growing


def unavailable(err: DistSyncError, status: int) -> bool:
    """The default for which refusals another node may serve: 503s."""
    return isinstance(err, Unavailable)


async def follow(client: Any, path: str, params: Callable[[], dict[str, str]], *,
                 what: str, read_timeout: float, headers: dict[str, str] | None = None,
                 nodes: list[str] | None = None, at: int = 0,
                 retry: Callable[[DistSyncError, int], bool] = unavailable,
                 ) -> AsyncGenerator[dict[str, Any], None]:
    """Every event line of the stream at `path`, from node `nodes[at]` on. A `canceled`
    line, a closed stream, a node that fails or a refusal `retry` allows move to the next
    node; any other refusal is raised; once no node has served it for `client.timeout`,
    Unavailable. `params()` is asked again before each attempt."""
    nodes = nodes or list(client.seeds)
    headers = headers if headers is not None else client._auth_headers()
    failing_since: float | None = None
    failures = 0
    while True:
        target = nodes[at % len(nodes)]
        try:
            async with client._sess().get(
                f"{client.scheme}://{target}{path}", params=params(), headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout,
                                              sock_read=read_timeout),
            ) as r:
                client.answered_once = True
                if r.status != 200:
                    try:
                        body = await r.json(content_type=None)
                    except ValueError:
                        body = {}
                    err = error_from_answer(r.status, body if isinstance(body, dict) else {})
                    if not retry(err, r.status):
                        raise err
                    raise _NextNode(str(err))
                async for raw in r.content:
                    if not raw.strip():
                        continue
                    ev = json.loads(raw)
                    if ev.get("type") == "canceled":
                        break  # resume: from the caller's point, perhaps elsewhere
                    failing_since, failures = None, 0
                    yield ev
            at += 1  # the stream ended: resume, on the next node
        except DistSyncError:
            raise
        except (_NextNode, aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > client.timeout:
                raise Unavailable(503, "unreachable",
                                  f"no node served the {what} for {client.timeout} s: "
                                  f"{e!r}") from None
            at += 1
            # Pace the retries (not a synchronisation: nothing is awaited but time).
            await asyncio.sleep(RETRY_PAUSE_S[min(failures, len(RETRY_PAUSE_S) - 1)])
            failures += 1


class _NextNode(Exception):
    pass
