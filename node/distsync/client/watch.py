"""Watching kv keys and prefixes (README "Watches"): `Client.watch` yields every put and
delete from a revision on, and resumes after a disconnect or a node failure, on the same node
or another (any node serves watches), so the caller sees each event once, in revision order.

Several events may share a revision (a session's end deletes all its ephemeral keys at the
index of the close or expiry), and a connection may break between two of them. So the client
resumes from the last revision it saw an event of (not + 1) and skips that revision's events
it already yielded, by key (one command changes a key at most once); only once it has seen a
later event, or a progress line at or past that revision, is the revision known complete."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from .errors import Compacted, DistSyncError, InvalidArgument, Unavailable
from .ndjson import follow


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
    # A stream is quiet at most progress_ms: past three intervals the node is gone.
    read_timeout = max(3 * progress_ms / 1000, 2.0)
    # The client's `client_id` goes with the watch too: a node counts a client's watchers
    # under its token and Client-Id (--max-watchers-per-client).
    headers = client._auth_headers()
    if client.client_id:
        headers["Client-Id"] = client.client_id

    def params() -> dict[str, str]:
        p = {"progress_ms": str(progress_ms)}
        p["key" if key is not None else "prefix"] = key if key is not None else prefix
        if next_rev is not None:
            p["start_revision"] = str(next_rev)
        elif linearizable:
            p["linearizable"] = "true"
        return p

    def retry(err: DistSyncError, status: int) -> bool:
        return not isinstance(err, Compacted) and (isinstance(err, Unavailable)
                                                   or status == 429)

    async with aclosing(follow(client, "/v1/watch", params, what="watch",
                               read_timeout=read_timeout, headers=headers, nodes=nodes,
                               at=at, retry=retry)) as events:
        async for ev in events:
            kind = ev.get("type")
            if kind in ("put", "delete"):
                rev = ev["revision"]
                if next_rev is not None and (
                        rev < next_rev or (rev == next_rev and ev["key"] in seen)):
                    continue  # already yielded, before a resume
                if next_rev is None or rev > next_rev:
                    next_rev, seen = rev, set()
                seen.add(ev["key"])
                yield ev
            elif kind == "progress":
                if next_rev is None or ev["revision"] + 1 > next_rev:
                    next_rev, seen = ev["revision"] + 1, set()
                if progress:
                    yield ev
