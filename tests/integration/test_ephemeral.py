"""Ephemeral keys and kv listings on a real 3-node cluster (README "Ephemeral keys").

The main test kills a real client process with SIGKILL while it holds a session with an
ephemeral key: its keepalives stop, the leader expires the session, and the key is deleted
through the log; a watcher on the prefix sees the delete within the session's TTL plus one
leader tick (and the commit), and not before the lease could have run out.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from cluster_helpers import diag, raw_request, ready

from distsync.client import BlockingClient, Client, NotFound
from distsync.client.locks import SessionLost
from distsync.local import LocalCluster
from distsync.node import LEADER_TIMER_MS

TTL_S = 2.0
# The session's end is proposed at the first leader tick past its deadline; then it commits
# (a round trip and an fsync on each node) and reaches the watcher. Allowance for those last
# two on a loaded 2-core CI machine.
COMMIT_AND_DELIVERY_S = 0.5

HOLDER = """
import asyncio, json, sys
from distsync.client import Client

async def main():
    c = Client(sys.argv[1].split(","))
    s = c.session(ttl=float(sys.argv[3]))
    await s.open()
    res = await c.put(sys.argv[2], {"pid": __import__("os").getpid()}, session=s)
    print(json.dumps({"session": s.id, "revision": res["revision"]}), flush=True)
    await asyncio.Event().wait()  # keepalives run in the background until the kill

asyncio.run(main())
"""


async def test_a_killed_clients_key_is_deleted_within_its_ttl_and_watchers_see_it(
        shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    ready(lc)
    prefix = f"eph-kill/{uuid.uuid4().hex[:8]}/"
    key = prefix + "instance-1"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ",".join(lc.addrs), key, str(TTL_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 30)
        assert line, diag(lc, f"the holder said nothing: {holder.stderr.read() if holder.stderr else ''}")
        held = json.loads(line)
        async with Client(lc.addrs) as c:
            got = await c.get(key)
            assert got["session"] == held["session"] and got["revision"] == held["revision"]
            events: list[tuple[float, dict]] = []

            async def watcher() -> None:
                async for ev in c.watch(prefix=prefix, start_revision=held["revision"],
                                        progress_ms=200):
                    events.append((time.monotonic(), ev))
                    if ev["type"] == "delete":
                        return

            task = asyncio.create_task(watcher())
            # Alive past its TTL: the holder's keepalives keep the session (and the key).
            await asyncio.sleep(TTL_S * 1.5)
            assert (await c.get(key))["session"] == held["session"]
            assert [e["type"] for _, e in events] == ["put"], events
            killed = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            bound = TTL_S + LEADER_TIMER_MS / 1000 + COMMIT_AND_DELIVERY_S
            try:
                await asyncio.wait_for(task, bound + 5)
            except TimeoutError:
                pytest.fail(diag(lc, f"no delete of {key} within {bound + 5:.1f} s of the "
                                     f"kill: {events}"))
            at, ev = events[-1]
            took = at - killed
            print(f"{key}: deleted {took:.3f} s after the kill")
            assert ev["type"] == "delete" and ev["key"] == key, events
            # Not before the lease could have run out: the last keepalive went at most a
            # third of the TTL before the kill.
            assert TTL_S * 2 / 3 - 0.1 <= took <= bound, (
                f"deleted {took:.3f} s after the kill (TTL {TTL_S} s, bound {bound:.2f} s)")
            with pytest.raises(NotFound):
                await c.get(key)
            status, _, body = raw_request("GET", f"{lc.nodes['n1'].url}/v1/sessions/"
                                                 f"{held['session']}")
            assert status == 404, body
            # A put bound to the expired session is refused, and writes nothing.
            with pytest.raises(SessionLost):
                await c.put(key, "again", session=held["session"])
            with pytest.raises(NotFound):
                await c.get(key)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)


def test_close_deletes_every_key_of_the_session_at_one_revision(
        shared_cluster: LocalCluster) -> None:
    """A watcher that reads the close's deletes (several at one revision) sees each once,
    and the key that a later plain put unbound survives."""
    lc = shared_cluster
    prefix = f"eph-close/{uuid.uuid4().hex[:8]}/"
    with BlockingClient(lc.addrs) as c:
        s = c.session(ttl=10).open()
        start = c.put(prefix + "a", 1, session=s)["revision"]
        c.put(prefix + "b", 2, session=s)
        c.put(prefix + "c", 3, session=s)
        c.put(prefix + "c", 4)  # unbound: survives the session
        other = c.session(ttl=10).open()
        c.put(prefix + "d", 5, session=other)
        assert [i.get("session") for i in c.list(prefix)["keys"]] == [
            s.id, s.id, None, other.id]
        s.close()
        seen = []
        for ev in c.watch(prefix=prefix, start_revision=start):
            seen.append((ev["type"], ev["key"], ev["revision"]))
            if len([t for t in seen if t[0] == "delete"]) == 2:
                break
        deletes = [t for t in seen if t[0] == "delete"]
        assert [k for _, k, _ in deletes] == [prefix + "a", prefix + "b"], seen
        assert deletes[0][2] == deletes[1][2]  # one revision: the close's index
        listing = c.list(prefix)
        assert [(i["key"], i["value"], i.get("session")) for i in listing["keys"]] == [
            (prefix + "c", 4, None), (prefix + "d", 5, other.id)]
        assert listing["revision"] >= deletes[0][2]
        other.close()
        assert [i["key"] for i in c.list(prefix)["keys"]] == [prefix + "c"]


def test_listing_pages_and_consistency(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    prefix = f"eph-list/{uuid.uuid4().hex[:8]}/"
    with BlockingClient(lc.addrs) as c:
        revs = [c.put(f"{prefix}{i:02d}", {"i": i})["revision"] for i in range(25)]
        c.put(prefix[:-1] + "0", "outside the prefix")
        whole = c.list(prefix)
        assert [i["key"] for i in whole["keys"]] == [f"{prefix}{i:02d}" for i in range(25)]
        assert [i["revision"] for i in whole["keys"]] == revs
        assert whole["next"] is None and whole["revision"] >= revs[-1]
        paged = c.list(prefix, page_size=4)
        assert paged["keys"] == whole["keys"]
        first = c.list(prefix, limit=10, page_size=3)
        assert len(first["keys"]) == 10 and first["next"] == f"{prefix}09"
        rest = c.list(prefix, after=first["next"])
        assert first["keys"] + rest["keys"] == whole["keys"]
        assert list(c.items(prefix, page_size=7)) == whole["keys"]
        # Every node answers a stale listing from its own state; the follower may lag, but
        # is never ahead of what it says its revision is.
        for nid, nd in lc.nodes.items():
            status, _, body = raw_request(
                "GET", f"{nd.url}/v1/kv?prefix={prefix}&consistency=stale&limit=3")
            assert status == 200, (nid, body)
            assert len(body["keys"]) <= 3
            assert all(i["revision"] <= body["revision"] for i in body["keys"]), body
        # The raw page: next is the last key when more remain, null at the end.
        status, _, body = raw_request("GET", f"{lc.nodes['n1'].url}/v1/kv?prefix={prefix}"
                                             f"&limit=20")
        assert status == 200 and len(body["keys"]) == 20 and body["next"] == f"{prefix}19"
        status, _, body = raw_request("GET", f"{lc.nodes['n1'].url}/v1/kv?prefix={prefix}"
                                             f"&after={prefix}19")
        assert status == 200 and len(body["keys"]) == 5 and body["next"] is None


def test_a_put_to_an_unknown_session_is_404_and_writes_nothing(
        shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    key = f"eph-bad/{uuid.uuid4().hex[:8]}"
    for nid, nd in lc.nodes.items():  # the leader, and followers that forward
        status, _, body = raw_request(
            "PUT", f"{nd.url}/v1/kv/{key}", json.dumps({"value": 1, "session": "s0"}).encode(),
            {"Content-Type": "application/json"})
        assert status == 404 and body["error"] == "session_not_found", (nid, body)
        assert body["session"] == "s0" and body["message"]
        status, _, body = raw_request("GET", f"{nd.url}/v1/kv/{key}")
        assert status == 404 and body["error"] == "not_found", (nid, body)
    with BlockingClient(lc.addrs) as c:
        with pytest.raises(ValueError):
            c.put(key, 1, session="not a session id")  # refused before any request
        with pytest.raises(ValueError):
            c.list("bad prefix")
