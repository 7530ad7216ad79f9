"""The queue client as aio-pika users expect it (issue 20): blocking acks of message
objects, `message.process()`, batched acks, heartbeats inside the consumer TTL, and a hung
handler that does not keep its partitions."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from cluster_helpers import proposals

from distsync.client import BlockingClient, Client
from distsync.client.queues import AckResult, LeaseExpired
from distsync.local import LocalCluster


def _qname(tag: str) -> str:
    return f"c20-{tag}-{uuid.uuid4().hex[:6]}"


def test_blocking_client_acks_message_objects(shared_cluster: LocalCluster) -> None:
    """Bug 1: BlockingClient's `ack(*msgs)`, `ack_many(msgs)` and `get(..., ack=msgs)` raised
    `TypeError: Object of type BlockingMessage is not JSON serializable`."""
    with BlockingClient(shared_cluster.addrs) as c:
        q = c.queue(_qname("bl"))
        q.create(partitions=1)
        q.put_many([{"body": i} for i in range(8)])
        a = q.get("w", max=2)
        assert q.ack(*a) == AckResult(acked=2)
        b = q.get("w", max=2)
        res = q.ack_many(b)
        assert res.acked == 2 and res.unknown == []
        c2 = q.get("w", max=2)
        d = q.get("w", max=2, ack=c2)
        assert sorted(m.body for m in a + b + c2 + d) == list(range(8))
        assert q.ack(*d).acked == 2
        info = q.info()
        assert info["messages"] == 0, info


def test_ack_results_have_one_shape(shared_cluster: LocalCluster) -> None:
    with BlockingClient(shared_cluster.addrs) as c:
        q = c.queue(_qname("shape"))
        q.create(partitions=1)
        q.put_many([{"body": i} for i in range(4)])
        m1, m2, m3, m4 = q.get("w", max=4)
        r1 = q.ack(m1)
        r2 = q.ack_many([m2, m1.receipt])
        r3 = m3.ack()
        r4 = q.nack(m4)
        assert (r1.acked, r1.unknown) == (1, [])
        assert (r2.acked, r2.unknown) == (1, [m1.receipt])
        assert isinstance(r3, AckResult) and r3.acked == 1
        assert isinstance(r4, AckResult) and r4.acked == 0 and r4.nacked == 1


async def test_process_acks_on_success_and_nacks_with_the_error(
    shared_cluster: LocalCluster,
) -> None:
    async with Client(shared_cluster.addrs) as c:
        q = c.queue(_qname("proc"))
        await q.create(partitions=1, max_deliveries=1)
        await q.put("good")
        await q.put("bad")
        async with q.consume("w", wait=1.0) as msgs:
            n = 0
            async for msg in msgs:
                with pytest.raises(RuntimeError) if msg.body == "bad" else _nothing():
                    async with msg.process():
                        if msg.body == "bad":
                            raise RuntimeError("boom")
                n += 1
                if n == 2:
                    break
        info = await q.info()
        assert info["messages"] == 0, info
        dlq = c.queue(q.name + ".dlq")
        dead = await dlq.get("x", max=5, wait=5)
        assert [m.body for m in dead] == ["bad"]
        assert dead[0].dead_letter is not None and "boom" in dead[0].dead_letter["error"]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_consume_batches_its_acks(shared_cluster: LocalCluster) -> None:
    """Bug 9 (second half): `consume()` committed one ack per message. Acks inside it now
    travel with the next fetch (or after a short linger), so 60 messages cost far fewer
    log entries than 60."""
    lc = shared_cluster
    async with Client(lc.addrs) as c:
        q = c.queue(_qname("batch"))
        await q.create(partitions=2)
        await q.put_many([{"body": i} for i in range(60)])
        before = sum(proposals(lc).values())
        got = []
        async with q.consume("w", batch=20, wait=0.5) as msgs:
            async for msg in msgs:
                got.append(msg.body)
                await msg.ack()
                if len(got) == 60:
                    break
        used = sum(proposals(lc).values()) - before
        assert sorted(got) == list(range(60))
        assert used < 20, f"{used} log entries for 60 acks"
        info = await q.info()
        assert info["messages"] == 0, info


async def test_heartbeat_stays_inside_the_consumer_ttl(shared_cluster: LocalCluster) -> None:
    """Bug 6: the default heartbeat (5 s) was longer than the shortest consumer_ttl_ms (3 s):
    a 4.5 s handler lost its consumer, the message went to another consumer while still in
    progress, and the first consumer's ack failed."""
    async with Client(shared_cluster.addrs) as c:
        q = c.queue(_qname("ttl"))
        await q.create(partitions=1, consumer_ttl_ms=3000, visibility_ms=60_000)
        await q.put("slow")
        stolen: list[object] = []
        async with q.consume("w", wait=1.0) as msgs, q.consume("other", wait=0.5) as others:
            msg = await msgs.__anext__()

            async def other_worker() -> None:
                async for m in others:
                    stolen.append(m.body)
                    await m.ack()

            task = asyncio.create_task(other_worker())
            await asyncio.sleep(4.5)  # the handler's own work, longer than the TTL
            assert (await msg.ack()).deferred == 1
            res = await msgs.flush()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert stolen == []
        assert msg.deliveries == 1
        assert (res.acked, res.unknown) == (1, []) and msgs.ack_unknown == []
        assert (await q.info())["messages"] == 0


async def test_hung_handler_releases_its_partitions(shared_cluster: LocalCluster) -> None:
    """Bug 5: a consumer whose handler hung kept heartbeating, so its partitions' messages
    sat ready while another consumer was idle. Now a handler past its message's visibility
    counts as hung: the consumer stops heartbeating and leaves, the message is marked as
    expired, and the others get the partitions."""
    async with Client(shared_cluster.addrs) as c:
        q = c.queue(_qname("hung"))
        # the default consumer TTL (15 s): heartbeats alone would keep the hung one forever
        await q.create(partitions=4, visibility_ms=1000)
        await q.put("first", key="k-0")
        hung_cons = q.consume("hung", wait=1.0)
        stuck = await hung_cons.__anext__()  # and never comes back
        await q.put_many([{"body": i, "key": f"k-{i}"} for i in range(40)])
        seen: set[object] = set()
        t0 = time.monotonic()
        async with q.consume("idle", batch=50, wait=0.5) as other:
            while len(seen) < 41 and time.monotonic() - t0 < 12:
                msg = await asyncio.wait_for(other.__anext__(), 12)
                seen.add(msg.body)
                await msg.ack()
        assert seen == set(range(40)) | {"first"}, sorted(map(str, seen))
        assert stuck.expired and hung_cons.hung
        with pytest.raises(LeaseExpired):
            async with stuck.process():
                pass
        # the handler comes back: the consumer registers again and works normally
        await q.put("after", key="k-0")
        again = await asyncio.wait_for(hung_cons.__anext__(), 10)
        assert again.body == "after" and not hung_cons.hung
        await again.ack()
        await hung_cons.flush()
        assert not hung_cons.hung and hung_cons.ack_unknown == []
        await hung_cons.close()


async def test_process_cancels_a_handler_that_outlives_its_lease(
    shared_cluster: LocalCluster,
) -> None:
    async with Client(shared_cluster.addrs) as c:
        q = c.queue(_qname("cancel"))
        await q.create(partitions=1, visibility_ms=800)
        await q.put("x")
        async with q.consume("w", wait=1.0) as msgs:
            msg = await msgs.__anext__()
            started = time.monotonic()
            with pytest.raises(LeaseExpired):
                async with msg.process():
                    await asyncio.Event().wait()  # a handler that never finishes
            assert time.monotonic() - started < 5


def test_blocking_consumer_with_form_and_process(shared_cluster: LocalCluster) -> None:
    with BlockingClient(shared_cluster.addrs) as c:
        q = c.queue(_qname("bwith"))
        q.create(partitions=1, max_deliveries=1)
        q.put_many([{"body": "ok"}, {"body": "bad"}, {"body": "ok2"}])
        seen = []
        with q.consume("w", wait=1.0) as msgs:
            for msg in msgs:
                seen.append(msg.body)
                try:
                    with msg.process():
                        if msg.body == "bad":
                            raise ValueError("cannot parse")
                except ValueError:
                    pass
                if len(seen) == 3:
                    break
        assert seen == ["ok", "bad", "ok2"]
        assert q.info()["messages"] == 0
        (dead,) = c.queue(q.name + ".dlq").get("x", wait=5)
        assert dead.body == "bad" and "cannot parse" in dead.dead_letter["error"]
