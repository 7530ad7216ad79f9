"""`distsync demo queue`: a work queue on a local cluster.

Enqueues task_001..task_005 (each acknowledged once committed on a majority), dequeues them
in FIFO order and acks them, with the measured latency of each step; then shows a redelivery
(a message not acked comes back after its visibility timeout, which the leader proposes
through the log) and a dead letter (a message nacked max_deliveries times moves to
`demo.dlq` with its delivery count and last error). Exit status 0 when all of it held.
"""

from __future__ import annotations

import statistics
import time

import click

from ..client import Client
from ..client.queues import Message
from ..local import LocalCluster
from .run import run_scenario

QUEUE = "demo"
VISIBILITY_MS = 1000
MAX_DELIVERIES = 2


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def _fifo(c: Client) -> bool:
    q = c.queue(QUEUE)
    tasks = [f"task_{i:03d}" for i in range(1, 6)]
    put_at: dict[str, float] = {}
    put_lat = []
    for t in tasks:
        t0 = time.perf_counter()
        mid = await q.put({"task": t})
        put_lat.append(time.perf_counter() - t0)
        put_at[mid] = t0
        click.echo(f"  enqueue {t} -> id {mid:<8} {_ms(put_lat[-1])}")
    click.echo("dequeue as consumer w1 (one at a time), ack each:")
    order, get_lat, e2e = [], [], []
    for _ in tasks:
        t0 = time.perf_counter()
        (m,) = await q.get("w1", wait_ms=2000)
        get_lat.append(time.perf_counter() - t0)
        await m.ack()
        e2e.append(time.perf_counter() - put_at[m.id])
        order.append(m.body["task"])
        click.echo(f"  {m.body['task']}  partition {m.partition}  delivery {m.deliveries}  "
                   f"dequeue {_ms(get_lat[-1])}")
    fifo = order == tasks
    info = await q.info()
    click.echo(
        f"stats: enqueued {info['stats']['enqueued']}, acked {info['stats']['acked']}, "
        f"ready {info['ready']}, in flight {info['in_flight']}\n"
        f"latency (median / max): enqueue {_ms(statistics.median(put_lat))} / "
        f"{_ms(max(put_lat))}, dequeue {_ms(statistics.median(get_lat))} / "
        f"{_ms(max(get_lat))}, end-to-end enqueue->ack {_ms(statistics.median(e2e))} / "
        f"{_ms(max(e2e))}"
    )
    click.echo(f"FIFO order: {'yes' if fifo else 'NO: ' + ', '.join(order)}")
    return fifo and info["messages"] == 0


async def _redelivery(c: Client) -> bool:
    q = c.queue(QUEUE)
    await q.put({"task": "task_006"})
    (m,) = await q.get("w1", wait_ms=2000)
    click.echo(f"  w1 got task_006 (delivery {m.deliveries}) and 'crashed' without acking")
    t0 = time.perf_counter()
    got = await q.get("w1", wait_ms=10_000)
    dt = time.perf_counter() - t0
    if not got:
        click.echo("  task_006 did not come back")
        return False
    again = got[0]
    click.echo(f"  back after {dt:.2f}s: {again.body['task']} delivery {again.deliveries}, "
               f"new receipt {again.receipt} (was {m.receipt})")
    await again.ack()
    click.echo("  acked")
    return again.id == m.id and again.deliveries == 2


async def _dead_letter(c: Client) -> bool:
    q = c.queue(QUEUE)
    await q.put({"task": "task_007", "input": "malformed"}, id="task_007")
    for attempt in range(1, MAX_DELIVERIES + 1):
        (m,) = await q.get("w1", wait_ms=2000)
        res = await m.nack(error=f"cannot parse input (attempt {attempt})")
        click.echo(f"  delivery {m.deliveries}: nack -> "
                   f"{'dead-lettered' if res['dead_lettered'] else 'redelivered'}")
    got: list[Message] = await c.queue(QUEUE + ".dlq").get("ops", wait_ms=2000)
    if not got:
        click.echo("  nothing in demo.dlq")
        return False
    d = got[0]
    dl = d.dead_letter or {}
    click.echo(f"  {QUEUE}.dlq has {d.id}: from queue {dl.get('queue')!r} after "
               f"{dl.get('deliveries')} deliveries, last error {dl.get('error')!r}")
    await d.ack()
    return d.id == "task_007" and dl.get("deliveries") == MAX_DELIVERIES


async def _run(lc: LocalCluster) -> int:
    async with Client(lc.addrs) as c:
        q = c.queue(QUEUE)
        await q.create(partitions=4, visibility_ms=VISIBILITY_MS, max_deliveries=MAX_DELIVERIES)
        click.echo(f"queue {QUEUE!r}: 4 partitions, visibility {VISIBILITY_MS} ms, "
                   f"max_deliveries {MAX_DELIVERIES}, dead letters to {QUEUE}.dlq\n")
        ok = await _fifo(c)
        click.echo(f"\nredelivery (visibility timeout {VISIBILITY_MS} ms):")
        ok = await _redelivery(c) and ok
        click.echo(f"\ndead letter (max_deliveries {MAX_DELIVERIES}):")
        ok = await _dead_letter(c) and ok
        info = await q.info()
        click.echo(f"\npartitions of {QUEUE!r}: " + ", ".join(
            f"p{p['partition']}->{p['consumer']}" for p in info["partitions"]))
        click.echo(f"stats: {info['stats']}")
        await q.leave("w1")
        return 0 if ok else 1


def run_queue_demo(nodes: int = 3, **_: object) -> int:
    return run_scenario(nodes, _run, "FIFO, redelivery and dead-lettering as documented")
