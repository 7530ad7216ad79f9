"""Peer authentication for the Raft stream: an HMAC handshake over the cluster secret.

Every node of a cluster holds the same secret (``DISTSYNC_CLUSTER_SECRET`` or a file named by
``DISTSYNC_CLUSTER_SECRET_FILE``; in Kubernetes a Secret mounted into every pod). When a node
dials a peer's ``/v1/raft/stream`` it sends one header::

    X-Distsync-Auth: v1 ts=<unix seconds> nonce=<32 hex> mac=<hex HMAC-SHA256>

The MAC covers a protocol label, the cluster name, the dialling node's id, the id of the node
it means to reach, the timestamp and the nonce. The receiver recomputes it with its own id as
the target and accepts only if the MAC matches (constant-time compare), the timestamp is
within ``max_skew`` (60 s) of its own clock, and the nonce has not been accepted before
within that window. So a stranger without the secret cannot open a stream (HTTP 403, counted
in ``distsync_peer_auth_rejected_total{reason}``), and a handshake captured off the wire can
be neither replayed nor redirected to another node.

Why a one-shot signed header rather than a two-message challenge: the WebSocket upgrade is a
single request/response, so the receiver's challenge would cost a second round trip on every
connect. A timestamp plus a nonce remembered for the skew window gives the same replay
resistance. What the handshake does not give is confidentiality or integrity of the stream
after it (nor proof to the dialler that the receiver holds the secret): on a network you do
not trust, turn on TLS, where peers also verify each other's certificates against the CA
(``require_peer_cert``).

With neither a secret nor a TLS CA configured the cluster is open (local development only),
and the node says so loudly at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from ..transport.peer import NODE_HEADER

__all__ = [
    "AUTH_HEADER",
    "MAX_SKEW",
    "PeerAuthenticator",
    "from_config",
    "read_secret",
]

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Distsync-Auth"
MAX_SKEW = 60.0
MIN_SECRET_BYTES = 16
_LABEL = "distsync-peer-v1"
_HEADER_RE = re.compile(r"^v1 ts=(\d{1,12}) nonce=([0-9a-f]{32}) mac=([0-9a-f]{64})$")
_MAX_REMEMBERED = 200_000  # nonces; only holders of the secret can add to it
REASONS = ("missing", "malformed", "clock_skew", "bad_mac", "replay", "busy", "no_client_cert")


def read_secret(value: str | None, path: str | None, what: str) -> str:
    """A secret given inline (flag/env) or in a file (``*_FILE``: a mounted Kubernetes
    Secret); surrounding whitespace such as a trailing newline is dropped. Empty means unset.
    Raises ValueError when both are given or the file cannot be read."""
    value = (value or "").strip()
    if path:
        if value:
            raise ValueError(f"{what}: give the value or a file, not both")
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as e:
            raise ValueError(f"{what}: cannot read {path}: {e.strerror or e}") from None
        if not value:
            raise ValueError(f"{what}: file {path} is empty")
    return value


class PeerAuthenticator:
    """The transport's ``Authenticator``: signs outbound handshakes and checks inbound ones.

    ``secret`` None: no HMAC (then ``require_peer_cert`` must be set, or use no authenticator
    at all). ``require_peer_cert``: the inbound stream must come over TLS with a client
    certificate that the server verified against its CA (mutual TLS between peers).
    ``on_reject(reason)`` is called once per refused handshake (a metric)."""

    def __init__(
        self,
        self_id: str,
        cluster: str,
        secret: str | bytes | None,
        *,
        require_peer_cert: bool = False,
        max_skew: float = MAX_SKEW,
        clock: Callable[[], float] = time.time,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        if secret is not None:
            raw = secret.encode() if isinstance(secret, str) else secret
            if len(raw) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes "
                    "(for example: python -c 'import secrets; print(secrets.token_hex(32))')"
                )
            # A key used for nothing but this handshake, whatever else the secret is for.
            self._key: bytes | None = hmac.new(raw, b"distsync peer auth", "sha256").digest()
        else:
            self._key = None
        if self._key is None and not require_peer_cert:
            raise ValueError("an authenticator needs a secret or require_peer_cert")
        self.self_id = self_id
        self.cluster = cluster
        self.require_peer_cert = require_peer_cert
        self.max_skew = max_skew
        self._clock = clock
        self._on_reject = on_reject
        # nonce -> when it may be forgotten (by then its timestamp fails the skew check)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._warned: set[tuple[Any, ...]] = set()
        self._proven: weakref.WeakSet[Any] = weakref.WeakSet()  # connections (verify_http)
        self.rejected: dict[str, int] = {}

    # -- the dialling side ------------------------------------------------------------

    def client_headers(self, peer_id: str) -> Mapping[str, str]:
        if self._key is None:
            return {}
        ts = str(int(self._clock()))
        nonce = secrets.token_hex(16)
        mac = self._mac(self.self_id, peer_id, ts, nonce)
        return {AUTH_HEADER: f"v1 ts={ts} nonce={nonce} mac={mac}"}

    def request_headers(self, peer_id: str) -> dict[str, str]:
        """Headers for a node-to-node HTTP call to ``peer_id`` outside the Raft stream (the
        ``/v1/internal/`` routes, checked by ``verify_http``): the handshake plus who we are."""
        return {NODE_HEADER: self.self_id, **self.client_headers(peer_id)}

    def _mac(self, sender: str, target: str, ts: str, nonce: str) -> str:
        assert self._key is not None
        msg = "\n".join((_LABEL, self.cluster, sender, target, ts, nonce)).encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    # -- the receiving side -----------------------------------------------------------

    async def verify(self, request: web.Request) -> bool:
        """The Raft stream's handshake (the transport's ``Authenticator.verify``)."""
        return self._verify(request, remember=True)

    async def verify_http(self, request: web.Request) -> bool:
        """A node-to-node HTTP request (``request_headers``). Every request carries a fresh
        handshake, but its nonce is remembered only for the first request on a connection:
        later ones on a connection that already proved itself cannot be a replay from
        elsewhere (a replay needs a connection of its own), and frequent internal calls would
        otherwise fill the replay memory."""
        # The transport stands for the connection, or where it cannot be weakly referenced
        # (uvloop's SSL transports: a TypeError here was a 500 on every signed call over TLS)
        # its protocol object; failing both, every call is checked as a first one.
        conn, known = None, False
        for cand in (request.transport, request.protocol):
            try:
                weakref.ref(cand)
            except TypeError:
                continue
            conn, known = cand, cand in self._proven
            break
        ok = self._verify(request, remember=not known)
        if ok and conn is not None and not known:
            try:
                self._proven.add(conn)
            except TypeError:
                pass
        return ok

    def _verify(self, request: web.Request, remember: bool) -> bool:
        has_cert = False
        if self.require_peer_cert and request.transport is not None:
            # With CERT_OPTIONAL, a certificate is only ever present here once verified.
            has_cert = bool(request.transport.get_extra_info("peercert"))
        reason = self.check(
            request.headers.get(NODE_HEADER), request.headers.get(AUTH_HEADER), has_cert,
            remember=remember,
        )
        if reason is None:
            return True
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._on_reject is not None:
            self._on_reject(reason)
        key = (request.remote, request.headers.get(NODE_HEADER), reason)
        lvl = logging.DEBUG if key in self._warned else logging.WARNING
        if len(self._warned) < 1024:
            self._warned.add(key)
        log.log(lvl, "%s: refused peer stream from %s (claims node %r): %s", self.self_id,
                request.remote, request.headers.get(NODE_HEADER), reason)
        return False

    def check(
        self, sender: str | None, header: str | None, has_cert: bool = False,
        remember: bool = True,
    ) -> str | None:
        """None if the handshake is good, else the reason it is not (a metric label).
        ``remember`` False skips the replay memory (see ``verify_http``)."""
        if self.require_peer_cert and not has_cert:
            return "no_client_cert"
        if self._key is None:
            return None
        if not header:
            return "missing"
        m = _HEADER_RE.match(header)
        if m is None or not sender:
            return "malformed"
        ts, nonce, mac = m.groups()
        now = self._clock()
        if abs(now - int(ts)) > self.max_skew:
            return "clock_skew"
        if not hmac.compare_digest(mac, self._mac(sender, self.self_id, ts, nonce)):
            return "bad_mac"
        if not remember:
            return None
        self._forget(now)
        if nonce in self._seen:
            return "replay"
        if len(self._seen) >= _MAX_REMEMBERED:
            return "busy"  # fail closed rather than forget nonces that are still replayable
        self._seen[nonce] = now + 2 * self.max_skew
        return None

    def _forget(self, now: float) -> None:
        seen = self._seen
        while seen:
            nonce, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[nonce]


def from_config(cfg: Any, registry: Any = None) -> PeerAuthenticator | None:
    """The authenticator a node's config asks for, or None for an open cluster (logged
    loudly). ``cfg`` is a NodeConfig; ``registry`` a prometheus registry for the counter
    ``distsync_peer_auth_rejected_total{reason}``."""
    secret = cfg.cluster_secret or None
    mtls = bool(cfg.tls_cert and cfg.tls_ca)
    if secret is None and not mtls:
        log.warning(
            "PEER AUTHENTICATION IS OFF: no cluster secret (DISTSYNC_CLUSTER_SECRET or "
            "DISTSYNC_CLUSTER_SECRET_FILE) and no TLS CA; any host that can reach %s can "
            "speak the Raft protocol to this node. Use this only for local development.",
            cfg.listen,
        )
        return None
    on_reject: Callable[[str], None] | None = None
    if registry is not None:
        from prometheus_client import Counter

        counter = Counter(
            "distsync_peer_auth_rejected",
            "Inbound peer connections refused by authentication, by reason",
            ["reason"], registry=registry,
        )
        for reason in REASONS:  # every series exists from the start, at 0
            counter.labels(reason)

        def on_reject(reason: str) -> None:
            counter.labels(reason).inc()

    log.info("peer authentication: %s", " + ".join(
        p for p, on in (("HMAC cluster secret", secret), ("mutual TLS", mtls)) if on
    ))
    return PeerAuthenticator(
        cfg.node_id, cfg.cluster, secret, require_peer_cert=mtls, on_reject=on_reject
    )
