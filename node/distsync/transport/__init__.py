"""Peer transport: Raft messages between nodes over WebSockets on the API server."""

from .peer import (
    CLUSTER_HEADER,
    NODE_HEADER,
    STREAM_PATH,
    TARGET_HEADER,
    Authenticator,
    Transport,
)

__all__ = [
    "CLUSTER_HEADER",
    "NODE_HEADER",
    "STREAM_PATH",
    "TARGET_HEADER",
    "Authenticator",
    "Transport",
]
