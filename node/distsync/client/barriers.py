"""Client side of barriers and double barriers (ZooKeeper's Barrier and DoubleBarrier
recipes, kept by the cluster):

```python
async with Client(addrs) as c:
    # a coordinator holds everybody until setup is done
    async with c.barrier("deploy"):          # raised on entry, removed on exit
        await setup()
    # ... while workers wait for it to come down
    await c.barrier("deploy").wait(timeout=60)

    # n participants start together and finish together
    async with c.double_barrier("step", n=3):   # enter: until 3 entered
        await compute()                           # leave (on exit): until all 3 left
```

A double-barrier participant is a lock session, opened at `enter` (lease `ttl`, kept alive
in the background) and closed once `leave` returns: if the process dies, its session
expires and the cluster counts that as its leave, so the others are not stuck. A timeout on
`enter` withdraws the participant (nothing is left behind) and raises BarrierTimeout.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import DistSyncError, InvalidArgument
from .locks import LOCK_NAME_RE, LockError, Session, SessionLost, check_seconds

if TYPE_CHECKING:
    from .core import BlockingClient, Client

MAX_PARTICIPANTS = 10_000
POLL_MS = 4_000  # one long poll's length: under the client's per-attempt timeout (6 s)


class BarrierTimeout(LockError, TimeoutError):
    """The barrier did not open within the timeout."""


class NConflict(LockError):
    """The double barrier has participants for another `n`; `n` is the cluster's."""

    @property
    def n(self) -> int:
        return int(self.body.get("n", 0))


class NotEntered(LockError):
    """The session is not (or no longer) a participant of the double barrier."""


_CODES: dict[str, type[LockError]] = {
    "n_conflict": NConflict, "not_entered": NotEntered, "session_not_found": SessionLost,
}


def _convert(e: DistSyncError) -> DistSyncError:
    cls = _CODES.get(e.code)
    return cls(e.status, e.code, e.message, e.body) if cls else e


def check_barrier_name(name: str) -> str:
    if not isinstance(name, str) or not LOCK_NAME_RE.fullmatch(name):
        raise InvalidArgument("invalid_barrier_name", "barrier names are 1-256 characters "
                              f"of A-Z a-z 0-9 . _ - : @, not {name!r}")
    return name


def _left_ms(deadline: float | None) -> int:
    if deadline is None:
        return POLL_MS
    return max(0, min(POLL_MS, int((deadline - time.monotonic()) * 1000)))


def _deadline(timeout: float | None) -> float | None:
    check_seconds("timeout", timeout)
    return None if timeout is None else time.monotonic() + timeout


class _Waiting:
    """What `Barrier.wait()` returns: await it, or `async with` it (entered once the
    barrier is down)."""

    def __init__(self, b: Barrier, timeout: float | None):
        self._b, self._timeout = b, timeout

    def __await__(self) -> Generator[Any, None, None]:
        return self._b._wait(self._timeout).__await__()

    async def __aenter__(self) -> None:
        await self._b._wait(self._timeout)

    async def __aexit__(self, *exc: object) -> None:
        return None


class Barrier:
    """A barrier: `set()` raises it, `remove()` lowers it, `wait()` returns once it is down
    (at once if it is not raised). `async with barrier:` raises it for the block."""

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = check_barrier_name(name)
        self._path = f"/v1/barriers/{quote(self.name, safe='')}"

    async def set(self, session: Session | None = None) -> dict[str, Any]:
        """Raise it; with `session`, the cluster removes it when that session ends."""
        body = {"session": session._sid()} if session is not None else {}
        try:
            return await self.client.request_or_raise("PUT", self._path, body, mutating=True)
        except DistSyncError as e:
            raise _convert(e) from None

    async def remove(self) -> bool:
        """Lower it; True if it was raised."""
        res = await self.client.request_or_raise("DELETE", self._path, mutating=True)
        return bool(res.get("removed"))

    async def raised(self) -> bool:
        return bool((await self.client.request_or_raise("GET", self._path)).get("raised"))

    def wait(self, timeout: float | None = None) -> _Waiting:
        """Block until the barrier is removed; BarrierTimeout after `timeout` seconds."""
        check_seconds("timeout", timeout)
        return _Waiting(self, timeout)

    async def _wait(self, timeout: float | None) -> None:
        deadline = _deadline(timeout)
        params: dict[str, str] = {}
        while True:
            params["wait_ms"] = str(_left_ms(deadline))
            res = await self.client.request_or_raise("GET", f"{self._path}/wait",
                                                     params=params)
            if res.get("released"):
                return
            params["generation"] = str(res["generation"])
            if deadline is not None and time.monotonic() >= deadline:
                raise BarrierTimeout(409, "timeout", f"barrier {self.name!r} was not removed "
                                                     f"within {timeout} s")

    async def __aenter__(self) -> Barrier:
        await self.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remove()


class DoubleBarrier:
    """A double barrier for `n` participants; this object is one participant.
    `async with db:` enters (until n entered) and leaves on exit (until all left)."""

    def __init__(self, client: Client, name: str, n: int, *, ttl: float = 10.0,
                 session: Session | None = None):
        self.client = client
        self.name = check_barrier_name(name)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_PARTICIPANTS:
            raise InvalidArgument("invalid_argument", f"n must be an integer in [1, "
                                                      f"{MAX_PARTICIPANTS}], not {n!r}")
        self.n = n
        check_seconds("ttl", ttl)
        self.ttl = float(ttl)
        self._fixed = session
        self.session: Session | None = None
        self.round: int | None = None
        self._path = f"/v1/double-barriers/{quote(self.name, safe='')}"

    async def enter(self, timeout: float | None = None) -> dict[str, Any]:
        """Enter and wait until `n` participants have; returns the state (`round`, ...).
        On timeout, withdraws and raises BarrierTimeout."""
        deadline = _deadline(timeout)
        if self.session is not None:
            raise LockError(409, "already_entered", f"this participant already entered "
                                                    f"{self.name!r}; leave first")
        session = self._fixed or await Session(self.client, ttl=self.ttl,
                                               name=f"barrier:{self.name}").open()
        self.session = session
        try:
            res = await self.client.request_or_raise(
                "POST", f"{self._path}/enter",
                {"session": session._sid(), "n": self.n, "wait_ms": _left_ms(deadline)},
                mutating=True, request_id=str(uuid.uuid4()))
            while not res.get("ready"):
                if deadline is not None and time.monotonic() >= deadline:
                    raise BarrierTimeout(409, "timeout", f"double barrier {self.name!r}: "
                                         f"fewer than {self.n} entered within {timeout} s")
                res = await self.client.request_or_raise(
                    "GET", f"{self._path}/enter",
                    params={"session": session._sid(), "wait_ms": str(_left_ms(deadline))})
        except BaseException as e:
            await self._withdraw()
            raise (_convert(e) if isinstance(e, DistSyncError) else e) from None
        self.round = res["round"]
        return res

    async def _withdraw(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        with contextlib.suppress(DistSyncError):
            if self._fixed is None:
                await session.close()  # a session's end withdraws it
            else:
                await self.client.request_or_raise(
                    "POST", f"{self._path}/leave", {"session": session._sid()},
                    mutating=True)

    async def leave(self, timeout: float | None = None) -> dict[str, Any]:
        """Leave and wait until every participant of the round has; BarrierTimeout after
        `timeout` seconds (this participant has left all the same)."""
        deadline = _deadline(timeout)
        session = self.session
        if session is None:
            raise LockError(409, "not_entered", f"this participant has not entered "
                                                f"{self.name!r}")
        try:
            res = await self.client.request_or_raise(
                "POST", f"{self._path}/leave",
                {"session": session._sid(), "wait_ms": _left_ms(deadline)},
                mutating=True, request_id=str(uuid.uuid4()))
            while not res.get("done"):
                if deadline is not None and time.monotonic() >= deadline:
                    raise BarrierTimeout(409, "timeout", f"double barrier {self.name!r}: not "
                                         f"everyone left within {timeout} s")
                res = await self.client.request_or_raise(
                    "GET", f"{self._path}/leave",
                    params={"round": str(res["round"]), "wait_ms": str(_left_ms(deadline))})
        except DistSyncError as e:
            raise _convert(e) from None
        finally:
            self.session = None
            if self._fixed is None:
                with contextlib.suppress(DistSyncError):
                    await session.close()
        return res

    async def info(self) -> dict[str, Any]:
        return await self.client.request_or_raise("GET", self._path)

    async def __aenter__(self) -> DoubleBarrier:
        await self.enter()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.leave()


# -- blocking forms ------------------------------------------------------------------------


class BlockingBarrier:
    def __init__(self, bc: BlockingClient, b: Barrier):
        self._bc, self._b = bc, b

    @property
    def name(self) -> str:
        return self._b.name

    def set(self, session: Any = None) -> dict[str, Any]:
        s = getattr(session, "session", session)  # a BlockingSession wraps its Session
        return self._bc._run(self._b.set(s))

    def remove(self) -> bool:
        return self._bc._run(self._b.remove())

    def raised(self) -> bool:
        return self._bc._run(self._b.raised())

    def wait(self, timeout: float | None = None) -> None:
        check_seconds("timeout", timeout)
        self._bc._run(self._b._wait(timeout))

    def __enter__(self) -> BlockingBarrier:
        self.set()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class BlockingDoubleBarrier:
    def __init__(self, bc: BlockingClient, db: DoubleBarrier):
        self._bc, self._d = bc, db

    @property
    def name(self) -> str:
        return self._d.name

    @property
    def n(self) -> int:
        return self._d.n

    @property
    def round(self) -> int | None:
        return self._d.round

    def enter(self, timeout: float | None = None) -> dict[str, Any]:
        return self._bc._run(self._d.enter(timeout))

    def leave(self, timeout: float | None = None) -> dict[str, Any]:
        return self._bc._run(self._d.leave(timeout))

    def info(self) -> dict[str, Any]:
        return self._bc._run(self._d.info())

    def __enter__(self) -> BlockingDoubleBarrier:
        self.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()
