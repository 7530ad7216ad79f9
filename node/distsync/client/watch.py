"""Watching kv keys and prefixes (README "Watches"): `Client.watch` yields every put and
delete from a revision on, and resumes after a disconnect or a node failure, on the same node
or another (any node serves watches), so the caller sees each event once, in revision order.

Several events may share a revision (a session's end deletes all its ephemeral keys at the
index of the close or expiry), and a connection may break between two of them. So the client
resumes from the last revision it saw an event of (not + 1) and skips that revision's events
it already yielded, by key (one command changes a key at most once); only once it has seen a
later event, or a progress line at or past that revision, is the revision known complete."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from .errors import Compacted, DistSyncError, InvalidArgument, Unavailable, error_from_answer

RETRY_PAUSE_S = (0.02, 0.05, 0.1, 0.2, 0.5)  # between attempts after a failure, growing


async def watch(
    client: Any, *, key: str | None = None, prefix: str | None = None,
    start_revision: int | None = None, progress_ms: int = 5000, linearizable: bool = False,
    progress: bool = False, addr: str | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """See `Client.watch`."""
    if (key is None) == (prefix is None):
        raise InvalidArgument("invalid_argument", "give exactly one of key or prefix")
    if start_revision is not None and (type(start_revision) is not int or start_revision < 1):
        raise InvalidArgument("invalid_argument", "start_revision must be an integer >= 1")
    nodes = list(client.seeds)
    at = nodes.index(addr) if addr in nodes else 0
    if addr is not None and addr not in nodes:
        nodes.insert(0, addr)
    # Where to resume: every event before `next_rev` was yielded, and of revision `next_rev`
    # those of the keys in `seen` (the revision may hold more).
    next_rev = start_revision
    seen: set[str] = set()
    failing_since: float | None = None
    failures = 0
    # A stream is quiet at most progress_ms: past three intervals the node is gone.
    read_timeout = max(3 * progress_ms / 1000, 2.0)
    # The client's `client_id` goes with the watch too: a node counts a client's watchers
    # under its token and Client-Id (--max-watchers-per-client).
    headers = client._auth_headers()
    if client.client_id:
        headers["Client-Id"] = client.client_id
    while True:
        target = nodes[at % len(nodes)]
        params = {"progress_ms": str(progress_ms)}
        params["key" if key is not None else "prefix"] = key if key is not None else prefix
        if next_rev is not None:
            params["start_revision"] = str(next_rev)
        elif linearizable:
            params["linearizable"] = "true"
        try:
            async with client._sess().get(
                f"{client.scheme}://{target}/v1/watch", params=params,
                headers=headers,
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
                    if isinstance(err, Compacted) or not (
                            isinstance(err, Unavailable) or r.status == 429):
                        raise err
                    raise _NextNode(err)
                async for raw in r.content:
                    if not raw.strip():
                        continue
                    ev = json.loads(raw)
                    kind = ev.get("type")
                    if kind in ("put", "delete"):
                        rev = ev["revision"]
                        if next_rev is not None and (
                                rev < next_rev or (rev == next_rev and ev["key"] in seen)):
                            continue  # already yielded, before a resume
                        if next_rev is None or rev > next_rev:
                            next_rev, seen = rev, set()
                        seen.add(ev["key"])
                        failing_since, failures = None, 0
                        yield ev
                    elif kind == "progress":
                        if next_rev is None or ev["revision"] + 1 > next_rev:
                            next_rev, seen = ev["revision"] + 1, set()
                        failing_since, failures = None, 0
                        if progress:
                            yield ev
                    elif kind == "canceled":
                        break  # resume: from the next revision, perhaps elsewhere
            at += 1  # the stream ended: resume, on the next node
        except DistSyncError:
            raise
        except (_NextNode, aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > client.timeout:
                raise Unavailable(503, "unreachable",
                                  f"no node served the watch for {client.timeout} s: "
                                  f"{e!r}") from None
            at += 1
            # Pace the retries (not a synchronisation: nothing is awaited but time).
            await asyncio.sleep(RETRY_PAUSE_S[min(failures, len(RETRY_PAUSE_S) - 1)])
            failures += 1


class _NextNode(Exception):
    def __init__(self, cause: DistSyncError):
        super().__init__(str(cause))
        self.cause = cause
