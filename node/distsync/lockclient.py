"""Client side of the lock service: sessions with a background keepalive, and locks as
context managers, in asyncio and blocking forms.

```python
async with Client(addrs) as c:
    async with c.lock("resource-1", mode="exclusive", ttl=10) as grant:
        storage.write(data, fencing_token=grant.token)

    async with c.session(ttl=10) as s:           # one session, many locks
        a = await s.acquire("a", wait=5.0)        # LockTimeout after 5 s
        async with s.lock("b", mode="shared"):
            ...
        await s.release("a")

with BlockingClient(addrs) as c:
    with c.lock("resource-1") as grant:
        ...
```

A session's lease is renewed every `ttl / 3` by a background task. The client counts the
lease from the moment it *sent* the last acknowledged keepalive, so `Session.alive` never
overestimates it; once it is past (or the cluster answers that the session is gone) the
session is `lost`, and every lock it held must be assumed released. Protected resources must
therefore check the fencing token (`grant.token`), not trust `alive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .client import DistSyncError

if TYPE_CHECKING:
    from .client import BlockingClient, Client

MAX_WAIT_MS = 3_600_000


class LockError(DistSyncError):
    """A lock request the cluster refused (409/404 from the lock API)."""


class Deadlock(LockError):
    """Waiting would have closed a cycle; nothing changed. `cycle` lists the sessions,
    `locks` what each waits on for the next one."""

    @property
    def cycle(self) -> list[str]:
        return list(self.body.get("cycle", []))

    @property
    def locks(self) -> list[str]:
        return list(self.body.get("locks", []))


class LockTimeout(LockError):
    """Not granted within the wait (or at once, for a try-lock)."""


class SessionLost(LockError):
    """The session expired or was closed: every lock it held is released."""


class NotHeld(LockError):
    """Release of a lock the session neither holds nor waits for."""


_CODES: dict[str, type[LockError]] = {
    "deadlock": Deadlock, "timeout": LockTimeout, "session_not_found": SessionLost,
    "not_held": NotHeld, "mode_conflict": LockError, "already_waiting": LockError,
    "cancelled": LockError,
}


def _convert(e: DistSyncError) -> DistSyncError:
    cls = _CODES.get(e.code)
    return cls(e.status, e.code, e.message, e.body) if cls else e


@dataclass
class Grant:
    lock: str
    session_id: str
    mode: str
    token: int  # fencing token: pass it to every protected resource
    reentrant: bool = False
    session: Session | None = field(default=None, repr=False, compare=False)

    @property
    def alive(self) -> bool:
        """False once the session's lease may have run out: assume the lock is gone."""
        return self.session is not None and self.session.alive


class Session:
    """One lease; holds any number of locks. Open with `await s.open()` or `async with`."""

    def __init__(self, client: Client, ttl: float = 10.0, name: str = "",
                 keepalive_every: float | None = None):
        self.client = client
        self.ttl_ms = int(ttl * 1000)
        self.name = name
        self.every = keepalive_every or ttl / 3
        self.id: str | None = None
        self.valid_until = 0.0  # monotonic
        self.lost = False
        self.held: dict[str, Grant] = {}
        self.on_lost: list[Callable[[Session], Any]] = []
        self._task: asyncio.Task | None = None
        self._bg: set[asyncio.Future] = set()

    @property
    def alive(self) -> bool:
        return self.id is not None and not self.lost and time.monotonic() < self.valid_until

    async def open(self) -> Session:
        sent = time.monotonic()
        res = await self.client.request_or_raise(
            "POST", "/v1/sessions", {"ttl_ms": self.ttl_ms, "name": self.name}, mutating=True
        )
        self.id = res["session"]
        self.valid_until = sent + self.ttl_ms / 1000
        self._task = asyncio.create_task(self._keepalive_loop(), name=f"keepalive-{self.id}")
        return self

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def keepalive(self) -> None:
        """One renewal now (the background task does this every `ttl / 3`)."""
        sent = time.monotonic()
        try:
            await self.client.request_or_raise(
                "POST", f"/v1/sessions/{quote(self._sid())}/keepalive",
                timeout=max(0.5, self.valid_until - sent),
            )
        except DistSyncError as e:
            err = _convert(e)
            if isinstance(err, SessionLost) or time.monotonic() >= self.valid_until:
                self._mark_lost()
            raise err from None
        self.valid_until = max(self.valid_until, sent + self.ttl_ms / 1000)

    async def _keepalive_loop(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.every)
            with contextlib.suppress(DistSyncError):
                await self.keepalive()

    def _mark_lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        self.held.clear()
        for cb in self.on_lost:
            cb(self)

    def _sid(self) -> str:
        if self.id is None:
            raise RuntimeError("session is not open")
        return self.id

    async def acquire(
        self, name: str, mode: str = "exclusive", wait: float | None = None,
        upgrade: bool = False,
    ) -> Grant:
        """Acquire `name`. `wait` seconds (None: up to an hour; 0: try-lock). Raises
        LockTimeout, Deadlock, SessionLost or LockError."""
        wait_ms = MAX_WAIT_MS if wait is None else max(0, min(MAX_WAIT_MS, int(wait * 1000)))
        body = {"session": self._sid(), "mode": mode, "wait_ms": wait_ms, "upgrade": upgrade}
        path = f"/v1/locks/{quote(name)}"
        had = name in self.held
        try:
            res = await self.client.request_or_raise(
                "POST", f"{path}/acquire", body, mutating=True, request_id=str(uuid.uuid4())
            )
            while res.get("waiting"):
                res = await self.client.request_or_raise("GET", f"{path}/waits/{res['wait_id']}")
        except DistSyncError as e:
            err = _convert(e)
            if isinstance(err, SessionLost):
                self._mark_lost()
            raise err from None
        except asyncio.CancelledError:
            if not had:  # we may be queued, or even granted: give it back
                t = asyncio.ensure_future(self._release_quietly(name))
                self._bg.add(t)
                t.add_done_callback(self._bg.discard)
            raise
        grant = Grant(name, self._sid(), res["mode"], res["token"], res.get("reentrant", False),
                      self)
        self.held[name] = grant
        return grant

    async def release(self, name: str | Grant) -> dict[str, Any]:
        lock = name.lock if isinstance(name, Grant) else name
        self.held.pop(lock, None)
        try:
            return await self.client.request_or_raise(
                "POST", f"/v1/locks/{quote(lock)}/release", {"session": self._sid()},
                mutating=True,
            )
        except DistSyncError as e:
            raise _convert(e) from None

    async def _release_quietly(self, name: str) -> None:
        with contextlib.suppress(DistSyncError):
            await self.release(name)

    def lock(self, name: str, mode: str = "exclusive", wait: float | None = None) -> _Held:
        """`async with session.lock(name) as grant:` acquire on entry, release on exit."""
        return _Held(self, name, mode, wait)

    async def close(self) -> None:
        """Stop renewing and close the session (releases everything it holds)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.id is not None and not self.lost:
            with contextlib.suppress(DistSyncError):
                await self.client.request_or_raise(
                    "DELETE", f"/v1/sessions/{quote(self.id)}", mutating=True
                )
        self.lost = True
        self.held.clear()


class _Held:
    def __init__(self, session: Session, name: str, mode: str, wait: float | None):
        self.session, self.name, self.mode, self.wait = session, name, mode, wait

    async def __aenter__(self) -> Grant:
        return await self.session.acquire(self.name, self.mode, self.wait)

    async def __aexit__(self, *exc: object) -> None:
        if not self.session.lost:
            with contextlib.suppress(SessionLost, NotHeld):
                await self.session.release(self.name)


class LockContext:
    """`async with client.lock(name, mode=..., ttl=...) as grant:` a session of its own,
    kept alive in the background, one lock; both released on exit."""

    def __init__(self, client: Client, name: str, mode: str = "exclusive", ttl: float = 10.0,
                 wait: float | None = None):
        self.session = Session(client, ttl=ttl)
        self.name, self.mode, self.wait = name, mode, wait

    async def __aenter__(self) -> Grant:
        await self.session.open()
        try:
            return await self.session.acquire(self.name, self.mode, self.wait)
        except BaseException:
            await self.session.close()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()  # closing releases the lock in the same command


# -- blocking forms ------------------------------------------------------------------------


class BlockingSession:
    """`Session` for ordinary threads; its keepalive runs on the BlockingClient's loop."""

    def __init__(self, bc: BlockingClient, ttl: float = 10.0, name: str = ""):
        self._bc = bc
        self._s = Session(bc._client, ttl=ttl, name=name)

    @property
    def id(self) -> str | None:
        return self._s.id

    @property
    def alive(self) -> bool:
        return self._s.alive

    def open(self) -> BlockingSession:
        self._bc._run(self._s.open())
        return self

    def acquire(self, name: str, mode: str = "exclusive", wait: float | None = None,
                upgrade: bool = False) -> Grant:
        return self._bc._run(self._s.acquire(name, mode, wait, upgrade))

    def release(self, name: str | Grant) -> dict[str, Any]:
        return self._bc._run(self._s.release(name))

    @contextlib.contextmanager
    def lock(self, name: str, mode: str = "exclusive", wait: float | None = None) -> Any:
        held = self._s.lock(name, mode, wait)
        grant = self._bc._run(held.__aenter__())
        try:
            yield grant
        finally:
            self._bc._run(held.__aexit__(None, None, None))

    def close(self) -> None:
        self._bc._run(self._s.close())

    def __enter__(self) -> BlockingSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingLock:
    def __init__(self, bc: BlockingClient, name: str, **kw: Any):
        self._bc = bc
        self._ctx = LockContext(bc._client, name, **kw)

    def __enter__(self) -> Grant:
        return self._bc._run(self._ctx.__aenter__())

    def __exit__(self, *exc: object) -> None:
        self._bc._run(self._ctx.__aexit__(None, None, None))
