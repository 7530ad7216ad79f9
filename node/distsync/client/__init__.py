"""The Python client: `Client` (asyncio) and `BlockingClient`, with locks, queues and the
cache reached from them (`distsync.client.locks`, `.queues`, `.cache`)."""

from .blocking import blocking_attr
from .core import BlockingClient, Client
from .errors import (
    Compacted,
    CompareFailed,
    DistSyncError,
    InvalidArgument,
    NotFound,
    Unavailable,
)

__all__ = [
    "BlockingClient", "Client", "Compacted", "CompareFailed", "DistSyncError", "InvalidArgument", "NotFound",
    "Unavailable", "blocking_attr",
]
