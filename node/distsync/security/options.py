"""`distsync node` options for security (the cluster secret, API tokens per role, TLS) and for
the request limits that go with them.

Each secret may be given inline (flag or `DISTSYNC_*` variable) or, better, as a file
(`--*-file` / `DISTSYNC_*_FILE`, e.g. a mounted Kubernetes Secret), which keeps it out of the
process list and the environment. See README "Security".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .peer_auth import read_secret

# (NodeConfig field, flag stem, env stem, help)
_SECRETS = (
    ("cluster_secret", "cluster-secret", "CLUSTER_SECRET",
     "Shared secret peers prove with an HMAC handshake (unset: open cluster, dev only)."),
    ("read_token", "read-token", "READ_TOKEN", "Bearer token(s) for the read role."),
    ("write_token", "write-token", "WRITE_TOKEN", "Bearer token(s) for the write role."),
    ("admin_token", "admin-token", "ADMIN_TOKEN", "Bearer token(s) for the admin role."),
)
_TLS = (
    ("tls_cert", "tls-cert", "TLS_CERT", "PEM certificate (chain): serve HTTPS/WSS."),
    ("tls_key", "tls-key", "TLS_KEY", "PEM private key of --tls-cert."),
    ("tls_ca", "tls-ca", "TLS_CA",
     "PEM CA bundle that peers' certificates must chain to (mutual TLS between peers)."),
)

# (NodeConfig field, flag, env stem, default, help)
_LIMITS = (
    ("max_value_bytes", "max-value-bytes", "MAX_VALUE_BYTES", 256 << 10,
     "Largest kv value, as compact JSON (413 value_too_large)."),
    ("max_sessions_per_client", "max-sessions-per-client", "MAX_SESSIONS_PER_CLIENT", 1000,
     "Quota: open lock sessions per client address (429 quota_exceeded)."),
    ("max_sessions", "max-sessions", "MAX_SESSIONS", 100_000,
     "Quota: open lock sessions in the cluster (429 quota_exceeded)."),
    ("max_queues", "max-queues", "MAX_QUEUES", 1_000,
     "Quota: queues created by PUT (each may also get its dead-letter queue) (429 "
     "quota_exceeded)."),
    ("max_locks", "max-locks", "MAX_LOCKS", 100_000,
     "Quota: locks held or waited for (429 quota_exceeded)."),
    ("max_waiters", "max-waiters", "MAX_WAITERS", 100_000,
     "Quota: waiting lock requests (429 quota_exceeded)."),
    ("max_kv_keys", "max-kv-keys", "MAX_KV_KEYS", 1_000_000,
     "Quota: kv keys (429 quota_exceeded)."),
    ("max_state_bytes", "quota-bytes", "QUOTA_BYTES", 512 << 20,
     "Quota: bytes of replicated state; past it the NOSPACE alarm refuses writes that add "
     "state (507 quota_exceeded) until space is freed."),
    ("header_timeout_s", "header-timeout", "HEADER_TIMEOUT", 10,
     "Seconds a request's header block may take to arrive once it has started."),
    ("body_timeout_s", "body-timeout", "BODY_TIMEOUT", 30,
     "Seconds a request body may take to arrive (408 body_timeout)."),
    ("idle_timeout_s", "idle-timeout", "IDLE_TIMEOUT", 75,
     "Seconds an open connection may wait for its next request before it is closed."),
    ("max_connections", "max-connections", "MAX_CONNECTIONS", 4096,
     "Open connections per node (503 too_many_connections past it)."),
    ("max_connections_per_client", "max-connections-per-client",
     "MAX_CONNECTIONS_PER_CLIENT", 512,
     "Open connections per client address (503 too_many_connections past it)."),
)


def node_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the security options to a click command; its callback gets them as keyword
    arguments named after the NodeConfig fields (plus `*_file`); pass those kwargs through
    `node_config_kwargs`."""
    opts = []
    for name, flag, env, text in _SECRETS:
        opts.append(click.option(f"--{flag}", name, envvar=f"DISTSYNC_{env}", default="",
                                 show_envvar=True, help=text))
        opts.append(click.option(f"--{flag}-file", f"{name}_file",
                                 envvar=f"DISTSYNC_{env}_FILE", default="", show_envvar=True,
                                 help=f"File holding --{flag}."))
    for name, flag, env, text in _TLS:
        opts.append(click.option(f"--{flag}", name, envvar=f"DISTSYNC_{env}", default="",
                                 show_envvar=True, help=text))
    for name, flag, env, default, text in _LIMITS:
        opts.append(click.option(f"--{flag}", name, envvar=f"DISTSYNC_{env}", default=default,
                                 type=click.IntRange(1), show_default=True, show_envvar=True,
                                 help=text))
    for opt in reversed(opts):
        f = opt(f)
    return f


def node_config_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """NodeConfig fields from what `node_options` parsed; reads the secret files."""
    out: dict[str, Any] = {}
    try:
        for name, flag, _, _ in _SECRETS:
            out[name] = read_secret(opts.get(name), opts.get(f"{name}_file"), f"--{flag}")
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for name, _, _, _ in _TLS:
        out[name] = opts.get(name) or ""
    for name, _, _, default, _ in _LIMITS:
        out[name] = opts.get(name) or default
    return out
