"""Client side of the lock service: `Lock` objects in the shape redis-py and kazoo users know,
on sessions kept alive in the background, in asyncio and blocking forms.

```python
async with Client(addrs) as c:
    async with c.lock("resource-1", ttl=10) as lock:      # LockLost on exit if the lease went
        storage.write(data, fencing_token=lock.token)

    lock = c.lock("resource-2")
    if await lock.acquire(timeout=5):                   # LockTimeout (a TimeoutError) after 5 s
        try: ...
        finally: await lock.release()

    async with c.session(ttl=10) as s:                  # a session of your own, many locks
        async with s.lock("b", mode="shared"): ...
```

Sessions. A client keeps ONE session per lease TTL, opened on first use, renewed every
`ttl / 3` and closed with the client; every `c.lock()` uses it (an open and a close per use
cost more than the lock itself). The client counts the lease from the moment it *sent* the
last acknowledged keepalive, so it never overestimates it. Once it is past, or the cluster
answers that the session is gone, the session is `lost`: each Lock held on it sets `lost`,
sets `lost_event`, calls its `on_lost` callback, and raises `LockLost` when its `with` block
ends. The next lock opens a fresh session. Protected resources must still check the fencing
token (`lock.token`): a paused holder learns of the loss only when it runs again.

Ownership. The cluster sees sessions, and a session's second acquire of a lock it holds is
granted at once (reentrant). A `Lock` object is one holder: two Lock objects on the same
session (two tasks, or two threads of a BlockingClient) wait for each other exactly as two
processes would. Holders that *want* to share a hold ask with `reentrant=True`.
`Session.acquire` / `Session.release` stay the raw, session-level calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import quote

from .errors import DistSyncError, InvalidArgument

if TYPE_CHECKING:
    from .core import BlockingClient, Client

MAX_WAIT_MS = 3_600_000
LOCK_NAME_RE = re.compile(r"^[A-Za-z0-9._\-:@]{1,256}$")  # as the API checks (api/locks.py)
SESSION_RE = re.compile(r"^[A-Za-z0-9._\-:]{1,64}$")  # as the API checks (api/schemas.py)
RESERVED_NAMES = frozenset({"deadlocks"})
Mode = Literal["exclusive", "shared"]


class LockError(DistSyncError):
    """A lock request the cluster refused (409/404 from the lock API)."""


class InvalidLockName(InvalidArgument):
    """A lock name the API would refuse (raised before any request)."""


class Deadlock(LockError):
    """Waiting would have closed a cycle; nothing changed. `cycle` lists the sessions,
    `locks` what each waits on for the next one."""

    @property
    def cycle(self) -> list[str]:
        return list(self.body.get("cycle", []))

    @property
    def locks(self) -> list[str]:
        return list(self.body.get("locks", []))


class LockTimeout(LockError, TimeoutError):
    """Not granted within the wait (or at once, for a try-lock)."""


class SessionLost(LockError):
    """The session expired or was closed: every lock it held is released."""


class LockLost(SessionLost):
    """A held lock's session was lost while it was held: someone else may have had it since."""


class NotHeld(LockError):
    """Release of a lock the session (or Lock object) neither holds nor waits for."""


_CODES: dict[str, type[LockError]] = {
    "deadlock": Deadlock, "timeout": LockTimeout, "session_not_found": SessionLost,
    "not_held": NotHeld, "mode_conflict": LockError, "already_waiting": LockError,
    "cancelled": LockError,
}


def _convert(e: DistSyncError) -> DistSyncError:
    cls = _CODES.get(e.code)
    return cls(e.status, e.code, e.message, e.body) if cls else e


def check_lock_name(name: str) -> str:
    if not isinstance(name, str) or not LOCK_NAME_RE.fullmatch(name) or name in RESERVED_NAMES:
        raise InvalidLockName(
            "invalid_lock_name",
            f"lock names are 1-256 characters of A-Z a-z 0-9 . _ - : @ ('deadlocks' is "
            f"reserved), not {name!r}")
    return name


def check_mode(mode: str) -> Mode:
    if mode not in ("exclusive", "shared"):
        raise InvalidArgument("invalid_mode", f"mode must be 'exclusive' or 'shared', not "
                                              f"{mode!r}")
    return mode  # type: ignore[return-value]


def check_seconds(what: str, value: float | None) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value) or value < 0):
        raise InvalidArgument("invalid_argument",
                              f"{what} must be a number of seconds >= 0, not {value!r}")
    return value


def _wait_ms(wait: float | None) -> int:
    return MAX_WAIT_MS if wait is None else max(0, min(MAX_WAIT_MS, int(wait * 1000)))


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
        check_seconds("ttl", ttl)
        self.client = client
        self.ttl = float(ttl)
        self.ttl_ms = int(ttl * 1000)
        self.name = name
        self.every = keepalive_every or ttl / 3
        self.id: str | None = None
        self.valid_until = 0.0  # monotonic
        self.lost = False
        self.held: dict[str, Grant] = {}
        self.on_lost: list[Callable[[Session], Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Future[Any]] = set()
        self._gates: dict[str, _Gate] = {}

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

    async def keepalive(self) -> float:
        """One renewal now (the background task does this every `ttl / 3`); returns the
        seconds of lease the client may now count on."""
        sent = time.monotonic()
        try:
            await self.client.request_or_raise(
                "POST", f"/v1/sessions/{quote(self._sid(), safe='')}/keepalive",
                timeout=max(0.5, self.valid_until - sent),
            )
        except DistSyncError as e:
            err = _convert(e)
            if isinstance(err, SessionLost) or time.monotonic() >= self.valid_until:
                self._mark_lost()
            raise err from None
        self.valid_until = max(self.valid_until, sent + self.ttl_ms / 1000)
        return max(0.0, self.valid_until - time.monotonic())

    async def _keepalive_loop(self) -> None:
        while not self.lost:
            # Wake for the next renewal, or at the lease's end, whichever is first: a loop
            # that was paused (SIGSTOP, a blocked event loop) notices at once on waking.
            now = time.monotonic()
            await asyncio.sleep(max(0.0, min(self.every, self.valid_until - now)))
            if time.monotonic() >= self.valid_until:
                with contextlib.suppress(DistSyncError):
                    await self.keepalive()  # may still be alive at the leader; ask
                if time.monotonic() >= self.valid_until:
                    self._mark_lost()
                continue
            with contextlib.suppress(DistSyncError):
                await self.keepalive()

    def _mark_lost(self) -> None:
        if self.lost:
            return
        self.lost = True
        self.held.clear()
        for cb in list(self.on_lost):
            cb(self)

    def _sid(self) -> str:
        if self.id is None:
            raise RuntimeError("session is not open")
        return self.id

    async def acquire(
        self, name: str, mode: str = "exclusive", wait: float | None = None,
        upgrade: bool = False,
    ) -> Grant:
        """Acquire `name` for the session (session-level: a second acquire of a held lock is
        granted at once). `wait` seconds (None: up to an hour; 0: try-lock). Raises
        LockTimeout, Deadlock, SessionLost or LockError."""
        check_lock_name(name)
        check_mode(mode)
        check_seconds("wait", wait)
        body = {"session": self._sid(), "mode": mode, "wait_ms": _wait_ms(wait),
                "upgrade": upgrade}
        path = f"/v1/locks/{quote(name, safe='')}"
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
        lock = name.lock if isinstance(name, Grant) else check_lock_name(name)
        self.held.pop(lock, None)
        try:
            return await self.client.request_or_raise(
                "POST", f"/v1/locks/{quote(lock, safe='')}/release", {"session": self._sid()},
                mutating=True,
            )
        except DistSyncError as e:
            err = _convert(e)
            if isinstance(err, SessionLost):
                self._mark_lost()
            raise err from None

    async def _release_quietly(self, name: str) -> None:
        with contextlib.suppress(DistSyncError):
            await self.release(name)

    def lock(self, name: str, mode: str = "exclusive", wait: float | None = None, *,
             reentrant: bool = False, on_lost: Callable[[Lock], Any] | None = None) -> Lock:
        """A Lock object on this session: `async with session.lock(name) as lock:`."""
        return Lock(self.client, name, mode, wait=wait, session=self, reentrant=reentrant,
                    on_lost=on_lost)

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
                    "DELETE", f"/v1/sessions/{quote(self.id, safe='')}", mutating=True
                )
        self.lost = True
        self.held.clear()


class _Gate:
    """Who holds one lock name through one session, on the client side: one exclusive Lock
    object, or any number of shared ones, or reentrant holders that asked to share."""

    def __init__(self) -> None:
        self.cond = asyncio.Condition()
        self.holders: set[Lock] = set()
        self.mode: str | None = None
        self.reentrant = False
        self.grant: Grant | None = None
        self.busy = False  # the first holder's acquire is on its way to the cluster

    def admits(self, lk: Lock) -> bool:
        if not self.holders:
            return True
        if self.mode == "shared" and lk.mode == "shared":
            return True
        return self.reentrant and lk.reentrant and self.mode == lk.mode


class Lock:
    """A distributed lock, one holder per object. `acquire(timeout=)` / `release()`,
    `async with`, `owned()` / `locked()`, `extend()` / `refresh()`; `token` is the fencing
    token of the current hold. Made by `Client.lock` (on the client's shared session) or
    `Session.lock`."""

    def __init__(
        self, client: Client, name: str, mode: str = "exclusive", *, ttl: float = 10.0,
        wait: float | None = None, session: Session | None = None, reentrant: bool = False,
        on_lost: Callable[[Lock], Any] | None = None,
    ):
        self.name = check_lock_name(name)
        self.mode: Mode = check_mode(mode)
        check_seconds("ttl", ttl)
        self.wait = check_seconds("wait", wait)
        self.ttl = float(ttl)
        self.client = client
        self.reentrant = reentrant
        self.on_lost = on_lost
        self.lost = False
        self.lost_event = asyncio.Event()
        self._fixed_session = session
        self._session: Session | None = None
        self.grant: Grant | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def token(self) -> int | None:
        """The fencing token of the current (or last) hold."""
        return self.grant.token if self.grant else None

    @property
    def session_id(self) -> str | None:
        return self.grant.session_id if self.grant else None

    def owned(self) -> bool:
        """True while this object holds the lock and its lease has not run out (client's
        count, conservative)."""
        return not self.lost and self._session is not None and self._session.alive

    @property
    def alive(self) -> bool:
        """`owned()`, under the name a `Grant` used."""
        return self.owned()

    async def locked(self) -> bool:
        """Whether anyone (any session) holds the lock now (a linearizable read)."""
        info = await self.client.request_or_raise(
            "GET", f"/v1/locks/{quote(self.name, safe='')}")
        return bool(info.get("holders"))

    # -- acquire / release ------------------------------------------------------------------

    async def acquire(self, timeout: float | None | EllipsisType = ..., *,
                      blocking: bool = True) -> bool:
        """Wait up to `timeout` seconds (default: the Lock's `wait`; None: no limit) and
        return True, or raise LockTimeout. `blocking=False`: one try, False if it is held."""
        if isinstance(timeout, EllipsisType):
            timeout = self.wait
        check_seconds("timeout", timeout)
        if self._session is not None:
            raise LockError(409, "already_held", f"this Lock object already holds "
                                                 f"{self.name!r}; make one Lock per holder")
        if not blocking:
            timeout = 0.0
        session = self._fixed_session or await self.client.lock_session(self.ttl)
        gate = session._gates.setdefault(self.name, _Gate())
        deadline = None if timeout is None else time.monotonic() + timeout
        first = False
        try:
            async with asyncio.timeout(None if timeout is None else max(timeout, 0.001)):
                async with gate.cond:
                    await gate.cond.wait_for(lambda: not gate.busy and gate.admits(self))
                    first = not gate.holders
                    if first:
                        gate.busy = True
                    else:
                        gate.holders.add(self)
        except TimeoutError:
            if not blocking:
                return False
            raise LockTimeout(409, "timeout", f"lock {self.name!r} was not granted within "
                                              f"{timeout} s") from None
        if first and session.lost and self._fixed_session is None:
            # the shared session was lost while we waited at its gate: start again on the
            # client's new one
            async with gate.cond:
                gate.busy = False
                gate.cond.notify_all()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await self.acquire(left, blocking=blocking)
        if first:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                grant = await session.acquire(self.name, self.mode, left)
            except BaseException as e:
                async with gate.cond:
                    gate.busy = False
                    gate.cond.notify_all()
                if isinstance(e, LockTimeout) and not blocking:
                    return False
                raise
            async with gate.cond:
                gate.busy = False
                gate.grant, gate.mode, gate.reentrant = grant, self.mode, self.reentrant
                gate.holders.add(self)
                gate.cond.notify_all()
        assert gate.grant is not None
        self._session, self.grant = session, gate.grant
        self.lost = False
        self.lost_event.clear()
        session.on_lost.append(self._session_lost)
        return True

    def _session_lost(self, session: Session) -> None:
        if session is not self._session or self.lost:
            return
        self.lost = True
        self.lost_event.set()
        if self.on_lost is not None:
            self.on_lost(self)

    async def release(self) -> None:
        """Give the lock back. NotHeld if this object does not hold it; LockLost if the lease
        was lost while it was held (someone else may have had it since)."""
        session = self._session
        if session is None:
            raise NotHeld(409, "not_held", f"this Lock object does not hold {self.name!r}")
        self._session = None
        with contextlib.suppress(ValueError):
            session.on_lost.remove(self._session_lost)
        lost = self.lost or session.lost
        gate = session._gates.get(self.name)
        if gate is not None:
            async with gate.cond:
                gate.holders.discard(self)
                if not gate.holders:
                    gate.grant, gate.mode = None, None
                    if not lost:
                        try:
                            await session.release(self.name)
                        except (SessionLost, NotHeld):
                            lost = True
                gate.cond.notify_all()
        if lost:
            if not self.lost:
                self._session_lost_now()
            raise LockLost(409, "lock_lost", f"lock {self.name!r} was lost while held (its "
                                             f"session's lease ran out)")

    def _session_lost_now(self) -> None:
        self.lost = True
        self.lost_event.set()
        if self.on_lost is not None:
            self.on_lost(self)

    async def extend(self) -> float:
        """Renew the lease now; returns the seconds left. Every lock on the session shares
        the lease, which the background keepalive renews anyway: call this before a long
        step to be sure of the time. LockLost if it is gone."""
        if not self.owned() or self._session is None:
            raise LockLost(409, "lock_lost", f"lock {self.name!r} is not held")
        try:
            return await self._session.keepalive()
        except SessionLost:
            raise LockLost(409, "lock_lost", f"lock {self.name!r} was lost") from None

    refresh = extend

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.release()
        except LockLost:
            if ev is None:
                raise
            # the body's own exception goes on; the loss is in `lost`, `lost_event`

    def __repr__(self) -> str:
        return (f"Lock({self.name!r}, mode={self.mode!r}, token={self.token}, "
                f"owned={self.owned()}, lost={self.lost})")


# -- blocking forms ------------------------------------------------------------------------


class BlockingLock:
    """`Lock` for ordinary threads, on the BlockingClient's event loop."""

    def __init__(self, bc: BlockingClient, lock: Lock):
        self._bc = bc
        self._lock = lock

    @property
    def name(self) -> str:
        return self._lock.name

    @property
    def mode(self) -> str:
        return self._lock.mode

    @property
    def token(self) -> int | None:
        return self._lock.token

    @property
    def session_id(self) -> str | None:
        return self._lock.session_id

    @property
    def lost(self) -> bool:
        return self._lock.lost

    @property
    def grant(self) -> Grant | None:
        return self._lock.grant

    def owned(self) -> bool:
        return self._lock.owned()

    @property
    def alive(self) -> bool:
        return self._lock.owned()

    @property
    def lost_event(self) -> asyncio.Event:
        return self._lock.lost_event

    def locked(self) -> bool:
        return self._bc._run(self._lock.locked())

    def acquire(self, timeout: float | None | EllipsisType = ..., *,
                blocking: bool = True) -> bool:
        return self._bc._run(self._lock.acquire(timeout, blocking=blocking))

    def release(self) -> None:
        self._bc._run(self._lock.release())

    def extend(self) -> float:
        return self._bc._run(self._lock.extend())

    refresh = extend

    def __enter__(self) -> BlockingLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bc._run(self._lock.__aexit__(et, ev, tb))

    def __repr__(self) -> str:
        return repr(self._lock).replace("Lock(", "BlockingLock(", 1)


class BlockingSession:
    """`Session` for ordinary threads; its keepalive runs on the BlockingClient's loop."""

    def __init__(self, bc: BlockingClient, ttl: float = 10.0, name: str = ""):
        self._bc = bc
        self._s = Session(bc._client, ttl=ttl, name=name)

    @property
    def id(self) -> str | None:
        return self._s.id

    @property
    def session(self) -> Session:
        """The asyncio Session this wraps (to put semaphore permits on it)."""
        return self._s

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

    def keepalive(self) -> float:
        return self._bc._run(self._s.keepalive())

    def lock(self, name: str, mode: str = "exclusive", wait: float | None = None, *,
             reentrant: bool = False, on_lost: Callable[[Lock], Any] | None = None,
             ) -> BlockingLock:
        return BlockingLock(self._bc, self._s.lock(name, mode, wait, reentrant=reentrant,
                                                   on_lost=on_lost))

    def close(self) -> None:
        self._bc._run(self._s.close())

    def __enter__(self) -> BlockingSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# What names a session where a call binds something to one (an ephemeral key's put).
SessionRef: TypeAlias = Session | BlockingSession | str


def session_ref(session: SessionRef) -> tuple[str, Session | None]:
    """The id of `session` (a Session, a BlockingSession or an id) and the Session object
    to mark lost if the cluster answers that it is gone. Raises InvalidArgument for a
    session never opened, or not a session, and SessionLost for one known lost."""
    if isinstance(session, BlockingSession):
        session = session._s
    if isinstance(session, Session):
        if session.id is None:
            raise InvalidArgument("invalid_argument", "the session is not open: open it first")
        if session.lost:
            raise SessionLost(404, "session_not_found",
                              f"session {session.id} was lost (expired or closed)",
                              {"session": session.id})
        return session.id, session
    if isinstance(session, str) and SESSION_RE.fullmatch(session):
        return session, None
    raise InvalidArgument("invalid_argument", f"session must be a Session or a session id "
                                              f"(1-64 of A-Z a-z 0-9 . _ - :), not {session!r}")
