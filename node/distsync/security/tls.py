"""Optional TLS for the client API and for peers (stdlib ``ssl``).

One listener serves clients and peers, so one certificate serves both. With ``--tls-cert`` and
``--tls-key`` the node speaks HTTPS (and peers dial each other with ``wss://``); with
``--tls-ca`` as well:

* outbound (peer streams, forwarding to the leader) verifies the other node's certificate and
  host name against that CA, and presents this node's own certificate;
* inbound asks for a client certificate but does not insist (``CERT_OPTIONAL``: API clients
  usually have none); one that is offered must verify against the CA, and the Raft stream
  accepts only connections that presented one (see ``security.peer_auth``), so peers verify each
  other both ways.

Without a CA, outbound verification uses the system trust store and peers are authenticated by
the cluster secret alone. Certificates name each node as peers dial it: in Kubernetes
``*.<peer-service>.<namespace>.svc.cluster.local``; on loopback ``IP:127.0.0.1``.
"""

from __future__ import annotations

import ssl
from typing import Any


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """Verifies the server (chain and host name) against ``ca`` or the system store; presents
    ``cert`` when given (a node dialling a peer)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def contexts(cfg: Any) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts for a NodeConfig; (None, None) when TLS is off. Raises
    ValueError on an incomplete configuration and ssl/OS errors on unreadable files, so a
    node with broken TLS settings refuses to start rather than falling back to plaintext."""
    if not (cfg.tls_cert or cfg.tls_key or cfg.tls_ca):
        return None, None
    if not (cfg.tls_cert and cfg.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key (--tls-ca is optional)")
    return (
        server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca or None),
        client_context(cfg.tls_ca or None, cfg.tls_cert, cfg.tls_key),
    )
