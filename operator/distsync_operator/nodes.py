"""Talk to the distsync nodes: observe each pod's `/v1/status`, perform membership steps.

The operator reaches a pod at `podIP:<containerPort "http">`, asks the node who it is (its id
and the address it advertises), and sends membership changes to the leader's pod (any node
would forward them). Each call is one attempt with a bounded timeout; a failed step is
reported in the status and tried again on the next pass.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp

from distsync.client import Client

from .reconcile import Action, AddLearner, NodeView, PodView, Promote, RemoveMember
from .resources import ordinal_in

PROMOTE_TIMEOUT = 90.0  # the leader waits for the learner to catch up before promoting


class NodeApi(Protocol):
    async def status(self, endpoint: str) -> dict[str, Any] | None: ...

    async def perform(self, action: Action, seeds: list[str]) -> dict[str, Any]: ...


def pod_endpoint(pod: dict[str, Any]) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    for c in pod.get("spec", {}).get("containers", []):
        for p in c.get("ports") or []:
            if p.get("name") == "http":
                return f"{ip}:{p['containerPort']}"
    return None


async def observe_pods(name: str, pods: list[dict[str, Any]], api: NodeApi
                       ) -> dict[int, PodView]:
    """Pods of the StatefulSet `name` by ordinal, each with what its node says (if anything)."""
    found: list[tuple[int, dict[str, Any], str | None]] = []
    for pod in pods:
        ordinal = ordinal_in(name, pod["metadata"]["name"])
        if ordinal is not None:
            found.append((ordinal, pod, pod_endpoint(pod)))

    async def one(ep: str | None) -> dict[str, Any] | None:
        return await api.status(ep) if ep else None

    statuses = await asyncio.gather(*(one(ep) for _, _, ep in found))
    out: dict[int, PodView] = {}
    for (ordinal, pod, ep), st in zip(found, statuses, strict=True):
        node = None
        if st and "id" in st:
            try:
                node = NodeView.from_status(st)
            except (KeyError, TypeError, ValueError):
                node = None
        out[ordinal] = PodView(
            ordinal=ordinal, name=pod["metadata"]["name"],
            phase=(pod.get("status") or {}).get("phase", "Unknown"),
            deleting=bool(pod["metadata"].get("deletionTimestamp")), endpoint=ep, node=node,
        )
    return out


class HttpNodeApi:
    """The real thing: HTTP to the pods (distsync's own client for the membership calls)."""

    def __init__(self, status_timeout: float = 2.0):
        self.status_timeout = status_timeout
        self._session: aiohttp.ClientSession | None = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.status_timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def status(self, endpoint: str) -> dict[str, Any] | None:
        try:
            async with self._sess().get(f"http://{endpoint}/v1/status") as r:
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None

    async def perform(self, action: Action, seeds: list[str]) -> dict[str, Any]:
        timeout = PROMOTE_TIMEOUT if isinstance(action, Promote) else 20.0
        async with Client(seeds, timeout=timeout, request_timeout=timeout) as c:
            if isinstance(action, AddLearner):
                return await c.request_or_raise(
                    "POST", "/v1/cluster/members",
                    {"id": action.id, "addr": action.addr, "learner": True},
                    mutating=True, timeout=timeout)
            if isinstance(action, Promote):
                return await c.request_or_raise(
                    "POST", "/v1/cluster/members",
                    {"id": action.id, "addr": action.addr, "learner": False},
                    mutating=True, timeout=timeout)
            if isinstance(action, RemoveMember):
                return await c.remove_member(action.id)
        raise TypeError(f"unknown action {action!r}")
