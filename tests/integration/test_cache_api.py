"""The cache API against a real cluster: bad input gets the documented 4xx and changes
nothing; values are binary safe; TTLs are honoured on every node; the Python client (asyncio
and blocking); stats, state and metrics."""

from __future__ import annotations

import asyncio

import pytest
from cluster_helpers import raw_request, refusal_problem

from distsync.client import BlockingClient, Client
from distsync.local import LocalCluster

SEED = "api:seed"


def url(lc: LocalCluster, nid: str, path: str) -> str:
    return f"{lc.nodes[nid].url}{path}"


BAD = [
    # (name, method, path, body, status, error)
    ("empty key", "PUT", "/v1/cache/", b"v", 400, "invalid_key"),
    ("empty key get", "GET", "/v1/cache/", None, 400, "invalid_key"),
    ("bad key chars", "PUT", "/v1/cache/a%20b", b"v", 400, "invalid_key"),
    ("key too long", "PUT", "/v1/cache/" + "k" * 513, b"v", 400, "invalid_key"),
    ("negative ttl", "PUT", f"/v1/cache/{SEED}?ttl=-1", b"v", 400, "invalid_ttl"),
    ("zero ttl", "PUT", f"/v1/cache/{SEED}?ttl=0", b"v", 400, "invalid_ttl"),
    ("text ttl", "PUT", f"/v1/cache/{SEED}?ttl=soon", b"v", 400, "invalid_ttl"),
    ("nan ttl", "PUT", f"/v1/cache/{SEED}?ttl=nan", b"v", 400, "invalid_ttl"),
    ("huge ttl", "PUT", f"/v1/cache/{SEED}?ttl=1e12", b"v", 400, "invalid_ttl"),
    ("oversized value", "PUT", f"/v1/cache/{SEED}", b"x" * (512 * 1024 + 1), 413,
     "value_too_large"),
    ("over the body limit", "PUT", f"/v1/cache/{SEED}", b"x" * (2 << 20), 413,
     "body_too_large"),
    ("state of unknown node", "GET", f"/v1/cache/{SEED}/state?node=zz", None, 400,
     "invalid_query"),
    ("slash in key", "GET", "/v1/cache/a/b", None, 404, "not_found"),
    ("unknown internal op", "POST", "/v1/internal/cache/nope", b"\x80", 404, "not_found"),
    ("bad internal message", "POST", "/v1/internal/cache/gets", b"\xc1", 400,
     "invalid_request"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_documented_4xx_and_changes_nothing(cache_cluster: LocalCluster,
                                                           case: tuple) -> None:
    lc = cache_cluster
    status, _, _ = raw_request("PUT", url(lc, "n1", f"/v1/cache/{SEED}"), b"seed-value")
    assert status == 200
    before = raw_request("GET", url(lc, "n2", f"/v1/cache/{SEED}/state?node=all"))[2]
    _, method, path, body, want_status, want_error = case
    for nid in lc.nodes:
        problem = refusal_problem(method, url(lc, nid, path), body, status=want_status,
                                  error=want_error)
        assert problem is None, (nid, problem)
    after = raw_request("GET", url(lc, "n2", f"/v1/cache/{SEED}/state?node=all"))[2]
    assert after == before, "a refused request changed no line anywhere"
    for nid in lc.nodes:
        status, _, value = raw_request("GET", url(lc, nid, f"/v1/cache/{SEED}"))
        assert status == 200 and value == "seed-value"


def test_binary_values_and_states_through_the_http_api(cache_cluster: LocalCluster) -> None:
    lc = cache_cluster
    blob = bytes(range(256)) * 4
    status, _, res = raw_request("PUT", url(lc, "n3", "/v1/cache/bin:1"), blob)
    assert status == 200 and res["state"] == "E"
    import urllib.request

    for nid in lc.nodes:
        with urllib.request.urlopen(url(lc, nid, "/v1/cache/bin:1")) as r:
            assert r.read() == blob and int(r.headers["X-Cache-Version"]) == res["version"]
    st = raw_request("GET", url(lc, "n1", "/v1/cache/bin:1/state?node=all"))[2]
    assert {n["state"] for n in st["nodes"].values()} == {"S"}
    assert set(st["directory"]["sharers"]) == set(lc.nodes)
    one = raw_request("GET", url(lc, "n1", "/v1/cache/bin:1/state?node=n2"))[2]
    assert one["node"] == "n2" and one["state"] == "S" and one["version"] == res["version"]
    status, _, res = raw_request("DELETE", url(lc, "n1", "/v1/cache/bin:1"))
    assert status == 200 and res["deleted"] is True
    for nid in lc.nodes:
        assert raw_request("GET", url(lc, nid, "/v1/cache/bin:1"))[0] == 404
    assert raw_request("DELETE", url(lc, "n2", "/v1/cache/bin:1"))[2]["deleted"] is False


async def test_client_ttl_stats_and_metrics(cache_cluster: LocalCluster) -> None:
    lc = cache_cluster
    async with Client(lc.addrs) as c:
        v1 = await c.cache.set("cli:1", b"one")
        assert await c.cache.get("cli:1") == b"one"
        item = await c.cache.get_item("cli:1", node=lc.nodes["n2"].addr)
        assert item is not None and item.version == v1 and not item.hit
        item = await c.cache.get_item("cli:1", node=lc.nodes["n2"].addr)
        assert item.hit and item.state == "S"
        assert await c.cache.set("cli:1", "two") > v1
        assert await c.cache.get("cli:1", node=lc.nodes["n2"].addr) == b"two"
        assert await c.cache.get("cli:absent") is None
        # TTL on every node
        await c.cache.set("cli:ttl", b"short", ttl=0.6)
        for nd in lc.nodes.values():
            assert await c.cache.get("cli:ttl", node=nd.addr) == b"short"
        await asyncio.sleep(0.8)
        for nd in lc.nodes.values():
            assert await c.cache.get("cli:ttl", node=nd.addr) is None
        assert await c.cache.delete("cli:1") is True
        st = await c.cache.stats(node=lc.nodes["n2"].addr)
        assert st["hits"] >= 1 and st["misses"] >= 1 and 0 < st["hit_ratio"] < 1
        assert set(st["states"]) == {"M", "E", "S"} and st["backend"] == "redis"
    metrics = raw_request("GET", url(lc, "n2", "/metrics"))[2]
    for name in ("distsync_cache_hits_total", "distsync_cache_misses_total",
                 "distsync_cache_hit_ratio", "distsync_cache_invalidations_sent_total",
                 "distsync_cache_invalidations_received_total", 'distsync_cache_lines{state="S"}',
                 "distsync_cache_evictions_total", "distsync_cache_backend_errors_total",
                 "distsync_cache_get_seconds_bucket", "distsync_cache_put_seconds_bucket"):
        assert name in metrics, name


def test_blocking_client(cache_cluster: LocalCluster) -> None:
    with BlockingClient(cache_cluster.addrs) as c:
        v = c.cache.set("blk:1", b"b")
        assert c.cache.get("blk:1") == b"b" and v >= 1
        assert c.cache.delete("blk:1") is True and c.cache.get("blk:1") is None
