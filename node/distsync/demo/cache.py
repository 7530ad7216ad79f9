"""`distsync demo cache`: coherent near caches on a local cluster over a real Redis (or the
embedded store when redis-server is not installed).

SET user:1001..1003 through one node, GET them through every node (misses, then hits served
from each node's memory), update user:1001 through another node and see the new value
everywhere at once, with the MESI state of the line on every node after each step, then each
node's statistics and the measured hit and miss latencies.
"""

from __future__ import annotations

import json
import statistics
import time

import click

from ..cache.redis_proc import local_backend
from ..client import Client
from ..client.cache import CacheClient
from ..local import LocalCluster
from .run import run_scenario

USERS = {
    "user:1001": {"name": "Alice", "plan": "pro"},
    "user:1002": {"name": "Bob", "plan": "free"},
    "user:1003": {"name": "Carol", "plan": "team"},
}


async def _states(cc: CacheClient, key: str) -> str:
    st = await cc.state(key, "all")
    nodes = " ".join(f"{n}={s['state']}" for n, s in sorted(st["nodes"].items()))
    d = st.get("directory") or {}
    owner = d.get("owner") or "-"
    return (f"{key}: {nodes}   (home {st['home']}: owner {owner}, "
            f"sharers {','.join(d.get('sharers', [])) or '-'})")


async def _timed_get(cc: CacheClient, key: str, addr: str, lat: dict[str, list[float]]) -> str:
    t0 = time.perf_counter()
    item = await cc.get_item(key, node=addr)
    ms = (time.perf_counter() - t0) * 1000
    assert item is not None
    kind = "hit" if item.hit else "miss"
    lat[kind].append(ms)
    return f"{kind:4s} v{item.version} state {item.state} {ms:6.2f} ms  {item.value.decode()}"


async def _demo(lc: LocalCluster) -> int:
    ids = list(lc.nodes)
    addr = {n: lc.nodes[n].addr for n in ids}
    lat: dict[str, list[float]] = {"hit": [], "miss": []}
    ok = True
    async with Client(lc.addrs) as c:
        cc = c.cache
        first, second, third = ids[0], ids[1 % len(ids)], ids[2 % len(ids)]
        click.echo(f"SET through {first}:")
        for key, val in USERS.items():
            v = await cc.set(key, json.dumps(val), ttl=600, node=addr[first])
            click.echo(f"  SET {key} -> v{v}   " + await _states(cc, key))
        click.echo("\nGET every user through every node (first a miss, then a hit):")
        for key in USERS:
            for n in ids:
                for _ in range(2):
                    click.echo(f"  {n} GET {key}: " + await _timed_get(cc, key, addr[n], lat))
        click.echo("\n  " + await _states(cc, "user:1001"))
        click.echo(f"\nUPDATE user:1001 through {third} (the home invalidates every other "
                   "copy before the PUT is acknowledged):")
        new = {"name": "Alice", "plan": "enterprise"}
        v = await cc.set("user:1001", json.dumps(new), ttl=600, node=addr[third])
        click.echo(f"  SET user:1001 -> v{v}   " + await _states(cc, "user:1001"))
        before = (await cc.stats(node=addr[third]))["silent_upgrades"]
        click.echo(f"A second update through {third}, which now holds the line exclusively "
                   "(E): no message to the home (silent E->M, written through, then E):")
        new["seats"] = 50
        v = await cc.set("user:1001", json.dumps(new), ttl=600, node=addr[third])
        silent = (await cc.stats(node=addr[third]))["silent_upgrades"] - before
        click.echo(f"  SET user:1001 -> v{v}   " + await _states(cc, "user:1001")
                   + f"   silent upgrades: {silent}")
        for n in (second, third, first):
            line = await _timed_get(cc, "user:1001", addr[n], lat)
            click.echo(f"  {n} GET user:1001: {line}")
            if '"seats": 50' not in line:
                ok = False
        click.echo("  " + await _states(cc, "user:1001"))
        for _ in range(200):  # enough hits for a latency figure
            await cc.get_item("user:1002", node=addr[second])
        t0 = time.perf_counter()
        for _ in range(200):
            await cc.get_item("user:1002", node=addr[second])
        lat["hit"].append((time.perf_counter() - t0) * 1000 / 200)

        click.echo("\nStatistics per node:")
        for n in ids:
            st = await cc.stats(node=addr[n])
            mu = st["mean_latency_us"]
            click.echo(
                f"  {n}: hits {st['hits']} misses {st['misses']} hit ratio "
                f"{st['hit_ratio']:.2f}  lines {st['lines']} {st['states']}  invalidations "
                f"sent {st['invalidations_sent']} received {st['invalidations_received']}  "
                f"in-node latency: hit {mu['hit']} us, miss {mu['miss']} us, put {mu['put']} us"
            )
        h, m = statistics.median(lat["hit"]), statistics.median(lat["miss"])
        click.echo(f"\nmeasured by this client over HTTP: hit median {h:.2f} ms, miss median "
                   f"{m:.2f} ms (miss/hit {m / h:.1f}x)")
        if not lat["hit"] or not lat["miss"]:
            ok = False
    return 0 if ok else 1


def run_cache_demo(nodes: int = 3, **_: object) -> int:
    with local_backend(click.echo) as args:
        return run_scenario(nodes, _demo, "every node saw the update at once",
                            extra_args=args, show_table=False)
