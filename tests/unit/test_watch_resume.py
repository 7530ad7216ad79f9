"""The client's watch resumes without loss or duplicate when a connection breaks between two
events of one revision (a session's end deletes all its ephemeral keys at one revision).

A stand-in node (a small aiohttp app on a loopback port) serves a fixed list of events from
each request's `start_revision`, and its first streams end right after chosen lines, as a
connection that breaks would; the client must yield every event once, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from distsync.client import Client

EVENTS = [
    (5, "put", "svc/a"),
    (6, "delete", "svc/b"), (6, "delete", "svc/c"), (6, "delete", "svc/d"),
    (7, "put", "svc/e"),
]


class StandIn:
    def __init__(self, cuts: list[int]) -> None:
        self.cuts = list(cuts)  # stream n ends after this many event lines
        self.starts: list[int | None] = []

    async def watch(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("start_revision")
        start = int(raw) if raw is not None else None
        self.starts.append(start)
        resp = web.StreamResponse()
        resp.content_type = "application/x-ndjson"
        await resp.prepare(request)
        first = start if start is not None else EVENTS[0][0]
        await resp.write(json.dumps({"type": "progress", "revision": first - 1}).encode()
                         + b"\n")
        cut = self.cuts.pop(0) if self.cuts else None
        sent = 0
        for rev, typ, key in EVENTS:
            if rev < first:
                continue
            if cut is not None and sent == cut:
                return resp  # the stream ends here, between two lines
            await resp.write(json.dumps({"type": typ, "key": key, "value": None,
                                         "revision": rev, "prev_revision": 1}).encode() + b"\n")
            sent += 1
        await resp.write(json.dumps({"type": "progress", "revision": EVENTS[-1][0]}).encode()
                         + b"\n")
        for _ in range(100):  # then quiet, as a live stream with nothing new, until the
            await asyncio.sleep(0.05)  # client goes (a blank line is skipped by it)
            try:
                await resp.write(b"\n")
            except ConnectionError:
                break
        return resp


@pytest.fixture
async def runners() -> AsyncIterator[list[Any]]:
    holder: list[Any] = []
    yield holder
    for runner in holder:
        await runner.cleanup()


async def _serve(node: StandIn, holder: list[Any]) -> str:
    app = web.Application()
    app.router.add_get("/v1/watch", node.watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    holder.append(runner)
    port = runner.addresses[0][1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize("cuts,starts", [
    # broken after the first delete of revision 6: resume at 6, skip svc/b
    ([2], [5, 6]),
    # broken after the last delete of revision 6 (its end is not known yet): resume at 6
    ([4], [5, 6]),
    # broken twice inside revision 6, then after it
    ([2, 2, 1], [5, 6, 6, 6]),
    # broken right after revision 5: it is complete only once a later line came
    ([1], [5, 5]),
])
async def test_a_break_inside_a_revision_loses_and_repeats_nothing(
        runners: list[Any], cuts: list[int], starts: list[int]) -> None:
    node = StandIn(cuts)
    addr = await _serve(node, runners)
    got = []
    async with Client([addr], timeout=10) as c:
        try:
            async with asyncio.timeout(10):
                async for ev in c.watch(prefix="svc/", start_revision=5, progress_ms=1000):
                    got.append((ev["revision"], ev["type"], ev["key"]))
                    if len(got) == len(EVENTS):
                        break
        except TimeoutError:
            pass  # an event was lost: the comparison says which
    assert got == EVENTS
    assert node.starts == starts
