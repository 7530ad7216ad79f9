"""Shared by every Blocking* wrapper of the client (kv, locks, queues, cache)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def blocking_attr(target: Any, name: str, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> Any:
    """`target.name`, with a coroutine method turned into a blocking call through `run`: how
    every Blocking* wrapper mirrors its asyncio twin without restating its methods."""
    attr = getattr(target, name)
    if not asyncio.iscoroutinefunction(attr):
        return attr

    def call(*a: Any, **kw: Any) -> Any:
        return run(attr(*a, **kw))

    call.__name__ = name
    return call
