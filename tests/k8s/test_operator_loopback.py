"""The operator's membership logic end to end against REAL distsync nodes: a 3-node
LocalCluster on loopback, scaled 3 -> 5 -> 3 through the real membership API by the real
handlers, with only the Kubernetes API faked (tests/k8s/fake_kube.py). The fake kubelet maps
pod ordinal i to LocalCluster node n{i+1}: the founders already run, new pods are
`LocalCluster.add_joiner()` processes (started empty with --join, as the StatefulSet starts
them), and a pod deleted by a shrink is a node stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import copy
import logging
import time

import kopf
import pytest
from fake_kube import FakeKubeApi, FakeKubelet, LocalClusterPods

from distsync.client import Client
from distsync.local import LocalCluster
from distsync_operator import handlers
from distsync_operator.nodes import HttpNodeApi

log = logging.getLogger("test")


@pytest.fixture
def cluster():
    with LocalCluster(3, tick_ms=20) as lc:
        lc.wait_ready(timeout=30)
        yield lc


async def test_scale_three_five_three_with_real_nodes(cluster: LocalCluster):
    kube = FakeKubeApi()
    pods = LocalClusterPods(cluster)
    FakeKubelet(kube, pods.start, pods.stop)
    nodes = HttpNodeApi()
    memo = kopf.Memo()
    memo["kube"], memo["nodes"] = kube, nodes
    await handlers.configure(settings=kopf.OperatorSettings(), memo=memo)
    kube.put({"apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
              "metadata": {"name": "demo", "namespace": "ns", "generation": 1},
              "spec": {"replicas": 3}})

    async def call(fn) -> dict:
        obj = kube.objects[("DistSyncCluster", "ns", "demo")]
        patch: dict = {}
        await fn(body=copy.deepcopy(obj), patch=patch, memo=memo, logger=log)
        obj["status"] = {**obj.get("status", {}), **patch.get("status", {})}
        return obj["status"]

    async def settle(want: int, deadline: float = 60.0) -> dict:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            st = await call(handlers.poll)  # the timer
            if st["phase"] == "Running" and st["replicas"] == want:
                return st
            await asyncio.sleep(0.2)
        raise AssertionError(f"not Running with {want} voters: {st}\n{cluster.status_table()}")

    async def leader_members(c: Client) -> list[tuple[str, bool]]:
        got = await c.members()
        return sorted((m["id"], m["voter"]) for m in got["members"])

    written: dict[str, int] = {}

    async def write(c: Client, n: int) -> None:
        for _ in range(n):
            k = f"k8s/{len(written)}"
            await c.put(k, len(written))
            written[k] = len(written)

    async with Client(cluster.addrs[:3]) as c:
        try:
            await call(handlers.reconcile_now)  # on.create: objects, founders are n1..n3
            st = await settle(3)
            assert st["leader"] in {"n1", "n2", "n3"}
            await write(c, 20)

            kube.objects[("DistSyncCluster", "ns", "demo")]["spec"]["replicas"] = 5
            await call(handlers.reconcile_now)  # on.update: StatefulSet 3 -> 5
            await write(c, 10)
            st = await settle(5)
            assert pods.joined == ["n4", "n5"]
            assert await leader_members(c) == [(f"n{i}", True) for i in range(1, 6)]
            assert [m["ready"] for m in st["members"]] == [True] * 5
            await write(c, 10)

            kube.objects[("DistSyncCluster", "ns", "demo")]["spec"]["replicas"] = 3
            await call(handlers.reconcile_now)
            st = await settle(3)
            assert await leader_members(c) == [("n1", True), ("n2", True), ("n3", True)]
            assert not cluster.nodes["n4"].alive() and not cluster.nodes["n5"].alive()
            assert kube.obj("StatefulSet", "ns", "demo")["spec"]["replicas"] == 3
            await write(c, 10)
            for k, v in written.items():  # nothing acknowledged was lost on the way
                assert (await c.get(k))["value"] == v
        finally:
            await nodes.close()
