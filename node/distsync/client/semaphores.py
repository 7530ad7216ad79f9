"""Client side of counting semaphores, in the shape of `client/locks.py`:

```python
async with Client(addrs) as c:
    async with c.semaphore("pool", permits=3).acquire() as permit:   # waits FIFO
        db.query(..., fencing_token=permit.token)

    sem = c.semaphore("pool", permits=3, count=2)
    permit = await sem.acquire(timeout=5)     # LockTimeout (a TimeoutError) after 5 s
    await permit.release()
    if (p := await sem.try_acquire()) is not None: ...
```

A permit belongs to a lock session: when the session ends (closed, or its lease ran out
because this process died or stalled), the cluster releases the permit. By default each
acquire opens a session of its own (lease `ttl`, kept alive in the background) and closes
it with the release, because the cluster counts one grant per session: two tasks of one
process holding permits of the same semaphore must be two sessions. Pass `session=` (a
`c.session()` of yours) to put permits of *different* semaphores on one lease.

If the lease is lost while a permit is held, `permit.lost` turns True, `permit.lost_event`
is set, and its release (or the `async with` exit) raises `PermitLost`: someone else may
have had the permit since. Check `permit.token` where it matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Generator
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import DistSyncError, InvalidArgument
from .locks import (
    LOCK_NAME_RE,
    Deadlock,
    LockError,
    LockTimeout,
    NotHeld,
    Session,
    SessionLost,
    _wait_ms,
    check_seconds,
)

if TYPE_CHECKING:
    from .core import BlockingClient, Client

MAX_PERMITS = 1_000_000
_BACKGROUND: set[asyncio.Future[Any]] = set()


class PermitsConflict(LockError):
    """The semaphore exists with another permit count; `permits` is the cluster's."""

    @property
    def permits(self) -> int:
        return int(self.body.get("permits", 0))


class PermitLost(SessionLost):
    """A held permit's session was lost while it was held."""


_CODES: dict[str, type[LockError]] = {
    "deadlock": Deadlock, "timeout": LockTimeout, "session_not_found": SessionLost,
    "not_held": NotHeld, "permits_conflict": PermitsConflict, "count_conflict": LockError,
    "already_waiting": LockError, "cancelled": LockError,
}


def _convert(e: DistSyncError) -> DistSyncError:
    cls = _CODES.get(e.code)
    return cls(e.status, e.code, e.message, e.body) if cls else e


def check_semaphore_name(name: str) -> str:
    if not isinstance(name, str) or not LOCK_NAME_RE.fullmatch(name):
        raise InvalidArgument("invalid_semaphore_name", "semaphore names are 1-256 "
                              f"characters of A-Z a-z 0-9 . _ - : @, not {name!r}")
    return name


def _check_count(what: str, v: Any, hi: int = MAX_PERMITS) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
        raise InvalidArgument("invalid_argument", f"{what} must be an integer in [1, {hi}], "
                                                  f"not {v!r}")
    return v


class Permit:
    """`count` permits of a semaphore, held by one session; `token` is the fencing token."""

    def __init__(self, sem: Semaphore, session: Session, own: bool, res: dict[str, Any]):
        self.semaphore = sem.name
        self.count: int = res["count"]
        self.token: int = res["token"]
        self.session = session
        self.session_id = session.id
        self.lost = False
        self.lost_event = asyncio.Event()
        self._client = sem.client
        self._own = own
        self._released = False
        session.on_lost.append(self._session_lost)

    def _session_lost(self, _: Session) -> None:
        if not self._released and not self.lost:
            self.lost = True
            self.lost_event.set()

    @property
    def alive(self) -> bool:
        """False once the lease may have run out: assume the permit is gone."""
        return not self._released and not self.lost and self.session.alive

    async def release(self) -> None:
        """Give the permits back (closing the permit's own session, if it has one).
        PermitLost if the lease was lost while held; NotHeld if released already."""
        if self._released:
            raise NotHeld(409, "not_held", f"this permit of {self.semaphore!r} was released")
        self._released = True
        with contextlib.suppress(ValueError):
            self.session.on_lost.remove(self._session_lost)
        lost = self.lost or self.session.lost
        if not lost:
            try:
                if self._own:
                    await self.session.close()
                else:
                    await self._client.request_or_raise(
                        "POST", f"/v1/semaphores/{quote(self.semaphore, safe='')}/release",
                        {"session": self.session.id}, mutating=True)
            except DistSyncError as e:
                err = _convert(e)
                if not isinstance(err, SessionLost | NotHeld):
                    raise err from None
                lost = True
        elif self._own:
            await self.session.close()
        if lost:
            self.lost = True
            self.lost_event.set()
            raise PermitLost(409, "permit_lost", f"a permit of {self.semaphore!r} was lost "
                                                 "while held (its session's lease ran out)")

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.release()
        except PermitLost:
            if ev is None:
                raise

    def __repr__(self) -> str:
        return (f"Permit({self.semaphore!r}, count={self.count}, token={self.token}, "
                f"lost={self.lost})")


class _Acquiring:
    """What `Semaphore.acquire()` returns: await it for a Permit, or `async with` it to hold
    the permit for the block. An awaitable, not a coroutine: run it in the background with
    `asyncio.ensure_future` (not `create_task`)."""

    def __init__(self, sem: Semaphore, timeout: float | None | EllipsisType):
        self._sem = sem
        self._timeout = timeout
        self._permit: Permit | None = None

    def __await__(self) -> Generator[Any, None, Permit]:
        return self._sem._acquire(self._timeout).__await__()

    async def __aenter__(self) -> Permit:
        self._permit = await self._sem._acquire(self._timeout)
        return self._permit

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._permit is not None
        await self._permit.__aexit__(et, ev, tb)


class Semaphore:
    """A counting semaphore of `permits` (N) on the cluster; each acquire takes `count`.
    Made by `Client.semaphore`."""

    def __init__(self, client: Client, name: str, permits: int, *, count: int = 1,
                 ttl: float = 10.0, wait: float | None = None, session: Session | None = None):
        self.client = client
        self.name = check_semaphore_name(name)
        self.permits = _check_count("permits", permits)
        self.count = _check_count("count", count, self.permits)
        check_seconds("ttl", ttl)
        self.ttl = float(ttl)
        self.wait = check_seconds("wait", wait)
        self._session = session
        self._held: list[Permit] = []

    def acquire(self, timeout: float | None | EllipsisType = ...) -> _Acquiring:
        """Wait up to `timeout` seconds (default: the Semaphore's `wait`; None: no limit;
        0: try once) for the permits. Raises LockTimeout, Deadlock, PermitsConflict."""
        if not isinstance(timeout, EllipsisType):
            check_seconds("timeout", timeout)
        return _Acquiring(self, timeout)

    async def try_acquire(self) -> Permit | None:
        """One try: a Permit, or None if not enough permits are free (or others wait)."""
        try:
            return await self._acquire(0.0)
        except LockTimeout:
            return None

    async def _acquire(self, timeout: float | None | EllipsisType) -> Permit:
        if isinstance(timeout, EllipsisType):
            timeout = self.wait
        own = self._session is None
        session = self._session or await Session(self.client, ttl=self.ttl,
                                                 name=f"semaphore:{self.name}").open()
        body = {"session": session._sid(), "permits": self.permits, "count": self.count,
                "wait_ms": _wait_ms(timeout)}
        path = f"/v1/semaphores/{quote(self.name, safe='')}"
        try:
            res = await self.client.request_or_raise(
                "POST", f"{path}/acquire", body, mutating=True, request_id=str(uuid.uuid4()))
            while res.get("waiting"):
                res = await self.client.request_or_raise("GET", f"{path}/waits/{res['wait_id']}")
        except BaseException as e:
            t: asyncio.Future[Any] | None = None
            if own:  # closing the session drops its wait (and any permit it got)
                t = asyncio.ensure_future(session.close())
                if not isinstance(e, asyncio.CancelledError):
                    await t
            elif isinstance(e, asyncio.CancelledError):
                t = asyncio.ensure_future(self._cancel(session))
            if t is not None and isinstance(e, asyncio.CancelledError):
                _BACKGROUND.add(t)  # keep the clean-up alive past our cancellation
                t.add_done_callback(_BACKGROUND.discard)
            raise (_convert(e) if isinstance(e, DistSyncError) else e) from None
        return Permit(self, session, own, res)

    async def _cancel(self, session: Session) -> None:
        with contextlib.suppress(DistSyncError):
            await self.client.request_or_raise(
                "POST", f"/v1/semaphores/{quote(self.name, safe='')}/release",
                {"session": session._sid()}, mutating=True)

    async def info(self) -> dict[str, Any]:
        """Permits, free count, holders (with tokens) and waiters (a linearizable read)."""
        return await self.client.request_or_raise(
            "GET", f"/v1/semaphores/{quote(self.name, safe='')}")

    async def __aenter__(self) -> Permit:
        """`async with sem as permit:`, the same as `async with sem.acquire() as permit:`."""
        permit = await self._acquire(...)
        self._held.append(permit)
        return permit

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._held.pop().__aexit__(et, ev, tb)


# -- blocking forms ------------------------------------------------------------------------


class BlockingPermit:
    """`Permit` for ordinary threads; `with sem.acquire() as permit:`."""

    def __init__(self, bc: BlockingClient, permit: Permit):
        self._bc = bc
        self._p = permit

    @property
    def token(self) -> int:
        return self._p.token

    @property
    def count(self) -> int:
        return self._p.count

    @property
    def semaphore(self) -> str:
        return self._p.semaphore

    @property
    def session_id(self) -> str | None:
        return self._p.session_id

    @property
    def lost(self) -> bool:
        return self._p.lost

    @property
    def alive(self) -> bool:
        return self._p.alive

    def release(self) -> None:
        self._bc._run(self._p.release())

    def __enter__(self) -> BlockingPermit:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bc._run(self._p.__aexit__(et, ev, tb))

    def __repr__(self) -> str:
        return repr(self._p).replace("Permit(", "BlockingPermit(", 1)


class BlockingSemaphore:
    """`Semaphore` for ordinary threads: `acquire()` blocks and returns a BlockingPermit
    (a context manager)."""

    def __init__(self, bc: BlockingClient, sem: Semaphore):
        self._bc = bc
        self._s = sem

    @property
    def name(self) -> str:
        return self._s.name

    @property
    def permits(self) -> int:
        return self._s.permits

    def acquire(self, timeout: float | None | EllipsisType = ...) -> BlockingPermit:
        return BlockingPermit(self._bc, self._bc._run(self._s._acquire(timeout)))

    def try_acquire(self) -> BlockingPermit | None:
        p = self._bc._run(self._s.try_acquire())
        return None if p is None else BlockingPermit(self._bc, p)

    def info(self) -> dict[str, Any]:
        return self._bc._run(self._s.info())
