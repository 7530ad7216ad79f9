"""Fixtures for the cache suites: a real redis-server on a free port (started here, stopped
at the end) and a 3-node cluster of real processes pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cluster_helpers import ready
from needs_tools import require_tool

from distsync.cache.redis_proc import RedisServer
from distsync.local import LocalCluster

CACHE_LEASE_MS = 1500  # short, so tests that wait a lease out stay quick


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    require_tool("redis-server", "the cache suites run a real one")
    with RedisServer() as rs:
        yield rs


@pytest.fixture(scope="module")
def cache_cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    old = os.environ.get("DISTSYNC_CACHE_LEASE_MS")
    os.environ["DISTSYNC_CACHE_LEASE_MS"] = str(CACHE_LEASE_MS)  # children inherit it
    try:
        with LocalCluster(3, extra_args=["--redis-url", redis_server.url]) as lc:
            ready(lc)
            yield lc
    finally:
        if old is None:
            os.environ.pop("DISTSYNC_CACHE_LEASE_MS", None)
        else:
            os.environ["DISTSYNC_CACHE_LEASE_MS"] = old
