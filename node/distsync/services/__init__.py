"""Replicated services: deterministic state machines applied from the Raft log."""

from __future__ import annotations

from .base import StateMachine


def default_services() -> list[StateMachine]:
    """Every service a node runs besides the built-in kv register. Each service adds itself
    here (one line) and its routes in api/app.py."""
    from .locks import LockService
    from .queues import QueueService

    services: list[StateMachine] = []
    services.append(QueueService())
    services.append(LockService())
    return services
