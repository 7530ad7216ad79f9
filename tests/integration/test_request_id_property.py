"""Request ids under leader kills (issue 15): random clients send kv puts, enqueues, dequeues
and acks with ids, retry each through any node until it is answered, replay old ids with the
same request, and reuse old ids for different requests, while the leader is SIGKILLed and
restarted. Afterwards:

* every acknowledged put was applied exactly once: the key's revision is the acknowledged
  one, and every answer for its id (retries, later replays) is the first answer;
* every acknowledged enqueue is in the queue exactly once, one whose outcome the client never
  learned at most once, and none sent under a reused id;
* every acknowledged ack is counted once by the queue, and no ack retry answered 404;
* every reuse of an id for a different request was refused (422 `request_id_mismatch`) and
  applied nothing.

Bounded: `DISTSYNC_RID_PROP_SECONDS` (default 12) of load and one leader kill per 4 s; the
seed is printed and can be fixed with `DISTSYNC_RID_PROP_SEED`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cluster_helpers import agreed_leader, diag, ready

from distsync.local import LocalCluster

SECONDS = float(os.environ.get("DISTSYNC_RID_PROP_SECONDS", "12"))
SEED = int(os.environ.get("DISTSYNC_RID_PROP_SEED", str(random.randrange(1 << 30))))
CLIENTS = 4
QUEUE = "ridq"
RETRY_FOR = 30.0


@dataclass
class Sent:
    """One logical request: its id, what it was, and every answer it got."""

    rid: str
    client_id: str | None
    method: str
    path: str
    body: Any
    answers: list[tuple[int, Any]] = field(default_factory=list)

    def final(self) -> tuple[int, Any] | None:
        return self.answers[0] if self.answers else None


@dataclass
class History:
    puts: list[tuple[Sent, str]] = field(default_factory=list)  # (request, key)
    enqueues: list[tuple[Sent, str]] = field(default_factory=list)  # (request, body tag)
    acks: list[tuple[Sent, str]] = field(default_factory=list)  # (request, message body)
    mismatches: list[tuple[Sent, str]] = field(default_factory=list)  # (request, what)
    replays: list[Sent] = field(default_factory=list)  # (a replay of an answered request)
    ack_404: list[tuple[Sent, Any]] = field(default_factory=list)


async def send(s: aiohttp.ClientSession, urls: list[str], req: Sent, rng: random.Random,
               ) -> tuple[int, Any] | None:
    """Send until a definitive answer (anything but a 503 or a broken connection), through
    random nodes, with the same id and body; None if RETRY_FOR passes first."""
    headers = {"Request-Id": req.rid, "Content-Type": "application/json"}
    if req.client_id:
        headers["Client-Id"] = req.client_id
    data = None if req.body is None else json.dumps(req.body)
    deadline = time.monotonic() + RETRY_FOR
    while time.monotonic() < deadline:
        url = rng.choice(urls) + req.path
        try:
            async with s.request(req.method, url, data=data, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=6)) as r:
                body = await r.json(content_type=None)
                if r.status != 503:
                    return r.status, body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        await asyncio.sleep(rng.uniform(0.02, 0.15))
    return None


async def client(n: int, s: aiohttp.ClientSession, urls: list[str], h: History,
                 stop: asyncio.Event) -> None:
    rng = random.Random(SEED + n)
    cid = f"c{n}" if n % 2 == 0 else None  # half use Client-Id, half the anonymous scope
    done: list[Sent] = []  # answered requests, for replays and reuse
    i = 0
    while not stop.is_set():
        i += 1
        tag = f"{n}-{i}"
        roll = rng.random()
        if done and roll < 0.12:  # a replay of an answered request: the first answer again
            old = rng.choice(done)
            again = Sent(old.rid, old.client_id, old.method, old.path, old.body)
            got = await send(s, urls, again, rng)
            if got is not None:
                old.answers.append(got)
                h.replays.append(old)
            continue
        if done and roll < 0.22:  # an old id for a different request: refused
            old = rng.choice(done)
            if rng.random() < 0.5:
                req = Sent(old.rid, old.client_id, "PUT", f"/v1/kv/rid/x-{tag}",
                           {"value": tag})
                what = f"rid/x-{tag}"
            else:
                req = Sent(old.rid, old.client_id, "POST", f"/v1/queues/{QUEUE}/messages",
                           {"body": f"x-{tag}"})
                what = f"x-{tag}"
            got = await send(s, urls, req, rng)
            if got is not None:
                req.answers.append(got)
            h.mismatches.append((req, what))
            continue
        rid = f"r-{uuid.UUID(int=rng.getrandbits(128))}"
        if roll < 0.55:
            key = f"rid/k-{tag}"
            req = Sent(rid, cid, "PUT", f"/v1/kv/{key}", {"value": tag})
            h.puts.append((req, key))
        elif roll < 0.85:
            req = Sent(rid, cid, "POST", f"/v1/queues/{QUEUE}/messages", {"body": tag})
            h.enqueues.append((req, tag))
        else:
            deq = Sent(rid, cid, "POST", f"/v1/queues/{QUEUE}/dequeue",
                       {"consumer": f"w{n}", "max": 1, "visibility_ms": 120_000})
            got = await send(s, urls, deq, rng)
            if got is None or got[0] != 200 or not got[1]["messages"]:
                continue
            msg = got[1]["messages"][0]
            rid = f"r-{uuid.UUID(int=rng.getrandbits(128))}"
            req = Sent(rid, cid, "POST", f"/v1/queues/{QUEUE}/ack", {"receipt": msg["receipt"]})
            h.acks.append((req, msg["body"]))
        got = await send(s, urls, req, rng)
        if got is not None:
            req.answers.append(got)
            done.append(req)
            if req.path.endswith("/ack") and got[0] == 404:
                h.ack_404.append((req, got))


async def test_request_ids_exactly_once_through_leader_kills() -> None:
    print(f"seed {SEED} (DISTSYNC_RID_PROP_SEED), {SECONDS} s")
    with LocalCluster(3) as lc:
        leader = await asyncio.to_thread(ready, lc)
        urls = [nd.url for nd in lc.nodes.values()]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async with s.put(f"{lc.nodes[leader].url}/v1/queues/{QUEUE}", json={}) as r:
                assert r.status == 200
            h = History()
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(client(n, s, urls, h, stop)) for n in range(CLIENTS)]
            kills = 0
            t_end = time.monotonic() + SECONDS
            while time.monotonic() < t_end:
                await asyncio.sleep(min(4.0, max(0.0, t_end - time.monotonic())))
                if time.monotonic() >= t_end:
                    break
                old = await asyncio.to_thread(agreed_leader, lc, 20.0)
                await asyncio.to_thread(lc.kill, old)
                kills += 1
                others = [n for n in lc.nodes if n != old]
                await asyncio.to_thread(agreed_leader, lc, 20.0, others)
                await asyncio.to_thread(lc.start_node, old)
            stop.set()
            await asyncio.gather(*tasks)
            await asyncio.to_thread(ready, lc)
            await check(lc, s, h, kills)


async def check(lc: LocalCluster, s: aiohttp.ClientSession, h: History, kills: int) -> None:
    leader = agreed_leader(lc)
    base = lc.nodes[leader].url

    async def get(path: str) -> tuple[int, Any]:
        async with s.get(base + path) as r:
            return r.status, await r.json()

    acked_puts = [(q, k) for q, k in h.puts if q.final() and q.final()[0] == 200]
    assert acked_puts and h.mismatches and h.replays, diag(lc, "the run did too little")
    for req, key in h.puts:
        code, body = await get(f"/v1/kv/{key}")
        if req.final() is not None and req.final()[0] == 200:
            want = req.final()[1]["revision"]
            assert code == 200 and body["revision"] == want, (req, code, body)
            assert all(a == req.final() for a in req.answers), req.answers
        else:  # outcome unknown: applied at most once, so any revision is one apply
            assert code in (200, 404), (req, code, body)
    for req, what in h.mismatches:
        if req.final() is not None:
            assert req.final()[0] == 422, (req, req.final())
            assert req.final()[1]["error"] == "request_id_mismatch"
        if what.startswith("rid/"):
            assert (await get(f"/v1/kv/{what}"))[0] == 404, (req, what)
    for req in h.replays:
        assert all(a == req.answers[0] for a in req.answers), req.answers
    assert not h.ack_404, h.ack_404
    # The workers leave (their leased messages go back), then one consumer drains it all.
    for n in range(CLIENTS):
        async with s.delete(base + f"/v1/queues/{QUEUE}/consumers/w{n}") as r:
            assert r.status in (200, 404), await r.text()
    info = (await get(f"/v1/queues/{QUEUE}"))[1]
    bodies: Counter[str] = Counter()
    while True:
        async with s.post(base + f"/v1/queues/{QUEUE}/dequeue",
                          json={"consumer": "drain", "max": 1000}) as r:
            got = await r.json()
        if not got["messages"]:
            break
        for m in got["messages"]:
            bodies[m["body"]] += 1
    acked = [body for q, body in h.acks if q.final() and q.final()[0] == 200]
    assert info["stats"]["acked"] == len(acked), (info["stats"], len(acked))
    assert info["messages"] == sum(bodies.values()), (info, sum(bodies.values()))
    bodies.update(acked)  # every message: still queued, or acked by a client
    acked_enq = {tag for q, tag in h.enqueues if q.final() and q.final()[0] == 200}
    unknown = {tag for q, tag in h.enqueues if q.final() is None}
    assert all(n == 1 for n in bodies.values()), [b for b, n in bodies.items() if n > 1]
    assert not [b for b in bodies if b.startswith("x-")], "a mismatched enqueue applied"
    assert acked_enq <= set(bodies), acked_enq - set(bodies)
    assert set(bodies) <= acked_enq | unknown, set(bodies) - acked_enq - unknown
    print(f"{kills} leader kills; {len(acked_puts)} puts, {len(acked_enq)} enqueues, "
          f"{len(acked)} acks acknowledged; {len(h.replays)} replays, "
          f"{len(h.mismatches)} mismatches refused")
