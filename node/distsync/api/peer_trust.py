"""Which forwarding headers to believe (README "Security", "Forwarding headers").

A follower that forwards a request to the leader marks it `X-Distsync-Forwarded-By: <its id>`
and names the original client in `X-Distsync-Client-Addr`; the leader counts per-client
limits by that address, and answers a marked request it cannot serve with 503 instead of
forwarding it again. A client could send those headers itself, to choose the address it is
counted as. So they are honoured only from a peer:

* with peer authentication on (a cluster secret, or mutual TLS), the forwarding node signs
  the request like a `/v1/internal/` call (`peer_auth.request_headers`), and only a request
  whose signature checks out is believed;
* with peer authentication off (a dev cluster), only a request whose TCP source address is
  the address of a member (host names resolved, kept for a minute) is believed: anyone who
  can connect from a member's address can also speak Raft to it, so this trusts nothing new.

Any other request's forwarding headers are ignored, as if stripped: it is the request of the
client that sent it, counted by its own address, and forwarded normally. This module's
middleware decides once per request; `forwarded_by` and `client_addr` read its decision.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import Any

from aiohttp import web

from .appkeys import NODE
from .http_server import REFUSALS

FORWARDED_HEADER = "X-Distsync-Forwarded-By"
CLIENT_HEADER = "X-Distsync-Client-Addr"
RESOLVE_TTL_S = 60.0

_BY, _ADDR = "forwarded_by", "client_addr"


def forwarded_by(request: web.Request) -> str | None:
    """The id of the peer that forwarded this request, if a trusted peer did."""
    return request.get(_BY)


def client_addr(request: web.Request) -> str:
    """The original client's address: the trusted forwarder's word, else the TCP peer."""
    return request.get(_ADDR) or request.remote or "unknown"


@web.middleware
async def peer_trust_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    by = request.headers.get(FORWARDED_HEADER)
    if by:
        if await _from_peer(request):
            request[_BY] = by
            request[_ADDR] = request.headers.get(CLIENT_HEADER) or request.remote
        else:
            REFUSALS.log(logging.INFO, "ignored forwarding headers from %s: not an "
                         "authenticated peer", request.remote)
    return await handler(request)


async def _from_peer(request: web.Request) -> bool:
    node = request.app[NODE]
    if node.peer_auth is not None:
        return bool(await node.peer_auth.verify_http(request))
    remote = request.remote
    return remote is not None and _norm(remote) in await _member_ips(request.app, node)


def _norm(ip: str) -> str:
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


MEMBER_IPS = web.AppKey("member_ip_cache", dict)  # host -> (resolved at, its addresses)


async def _member_ips(app: web.Application, node: Any) -> set[str]:
    addrs = {node.cfg.address, *node.cfg.peers.values(), *node.conf.addr_map().values()}
    cache: dict[str, tuple[float, set[str]]] = app[MEMBER_IPS]
    out: set[str] = set()
    now = time.monotonic()
    for addr in addrs:
        host = addr.rsplit(":", 1)[0].strip("[]")
        try:
            out.add(_norm(str(ipaddress.ip_address(host))))
            continue
        except ValueError:
            pass
        hit = cache.get(host)
        if hit is None or now - hit[0] > RESOLVE_TTL_S:
            try:
                infos = await _resolve(host)
            except OSError:
                infos = set()
            hit = (now, infos)
            cache[host] = hit
        out |= hit[1]
    return out


async def _resolve(host: str) -> set[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return {_norm(str(info[4][0])) for info in infos}
