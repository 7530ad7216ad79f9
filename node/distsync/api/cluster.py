"""Cluster routes: status, membership, leadership transfer, health and metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .appkeys import NODE
from .errors import ApiError
from .forward import forward, leader_only
from .jsonio import json_response
from .schemas import NODE_ID_RE, MemberAdd, TransferLeader, parse_body

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: the process and its event loop answer."""
    return json_response({"ok": True, "id": request.app[NODE].id})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: a leader is known, this node is a member, and it has applied all it knows
    to be committed. A Kubernetes Service sends traffic only to ready pods."""
    node = request.app[NODE]
    if node.is_ready():
        return json_response({"ready": True, "leader": node.leader_id})
    raise ApiError(503, "not_ready", "no leader yet, not a member, or still catching up")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    resp = web.Response(body=node.metrics.render())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


@routes.get("/v1/status")
async def status(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[NODE].status())


@routes.get("/v1/cluster/members")
@leader_only
async def members(request: web.Request) -> web.StreamResponse:
    """The membership as the leader knows it. A removed node may never hear that it was
    removed, so its own view is not authoritative; `/v1/status` shows each node's view."""
    node = request.app[NODE]
    st = node.status()
    return json_response({"leader": st["leader"], "members": st["members"]})


@routes.post("/v1/cluster/members")
@leader_only
async def add_member(request: web.Request) -> web.StreamResponse:
    """Add a node: first as a learner; once its log has caught up, promote it to voter
    (unless `learner: true`). One change at a time; a concurrent change gets 409."""
    body = await parse_body(request, MemberAdd)
    node = request.app[NODE]
    await node.add_member(body.id, body.addr, learner=body.learner)
    st = node.status()
    return json_response({"leader": st["leader"], "members": st["members"]})


@routes.delete("/v1/cluster/members/{id}")
@leader_only
async def remove_member(request: web.Request) -> web.StreamResponse:
    """Remove a member. Removing the leader itself first hands leadership to another voter,
    then the new leader performs the removal."""
    import re

    target = request.match_info["id"]
    if not re.fullmatch(NODE_ID_RE, target):
        raise ApiError(400, "invalid_request", "bad node id")
    node = request.app[NODE]
    if target not in node.conf.members():
        raise ApiError(404, "not_found", f"{target} is not a member")
    if target == node.id:
        await node.transfer_leader(None)
        return await forward(request)
    await node.remove_member(target)
    st = node.status()
    return json_response({"leader": st["leader"], "members": st["members"]})


@routes.post("/v1/cluster/transfer-leader")
@leader_only
async def transfer_leader(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, TransferLeader, optional=True)
    node = request.app[NODE]
    if body.to is not None and body.to not in node.conf.voters:
        raise ApiError(400, "invalid_request", f"{body.to} is not a voter")
    try:
        leader = await node.transfer_leader(body.to)
    except ValueError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return json_response({"leader": leader})
