"""Client side of leader election (README "Leader election"), in asyncio and blocking forms.

```python
async with Client(addrs) as c:
    election = c.election("scheduler")
    async with election.campaign("host-a:8080") as leadership:   # waits until elected
        while not leadership.lost:
            run_one_round(fencing_token=leadership.token)
            await leadership.proclaim("host-a:8080 (busy)")
    print(await election.leader())                   # {"session", "value", "token", ...}
    async for change in election.observe(): ...      # every change of leader or value
```

A campaign runs on a session of its own (opened for it, kept alive in the background,
closed at the end), so two campaigns of one process are two candidates, as two processes
would be. Leadership ends when the block ends (the leader resigns: the next candidate is
elected at once), or when the session is lost: its lease ran out (a paused or partitioned
process) or the cluster says it is gone. Then `leadership.lost` is true, `lost_event` is set,
`on_lost(leadership)` is called, and the block raises `LeadershipLost` when it ends. The
client counts the lease from the moment it sent the last acknowledged keepalive, so it never
believes it leads past the moment the cluster may elect someone else; a paused process
learns of the loss only when it runs again, so work done for a leadership should carry its
fencing token (`leadership.token`, strictly increasing per election) to whatever it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import DistSyncError, InvalidArgument
from .locks import LOCK_NAME_RE, Session, SessionLost, check_seconds
from .ndjson import follow

if TYPE_CHECKING:
    from .core import BlockingClient, Client

_BACKGROUND: set[asyncio.Future[Any]] = set()  # withdrawals of cancelled campaigns


class ElectionError(DistSyncError):
    """An election request the cluster refused (409/404 from the election API)."""


class NotLeader(ElectionError):
    """A proclaim or resign by a session that does not lead (or with another token)."""


class LeadershipLost(ElectionError):
    """The leadership ended without a resign: the session was lost (someone else may lead)."""


class ElectionTimeout(ElectionError, TimeoutError):
    """Not elected within the campaign's timeout (the candidacy was withdrawn)."""


_CODES: dict[str, type[DistSyncError]] = {
    "not_leader": NotLeader, "leadership_lost": LeadershipLost, "resigned": ElectionError,
    "not_candidate": ElectionError, "session_not_found": SessionLost,
}


def _convert(e: DistSyncError) -> DistSyncError:
    cls = _CODES.get(e.code)
    return cls(e.status, e.code, e.message, e.body) if cls else e


def check_election_name(name: str) -> str:
    if not isinstance(name, str) or not LOCK_NAME_RE.fullmatch(name):
        raise InvalidArgument("invalid_election_name",
                              "election names are 1-256 characters of A-Z a-z 0-9 . _ - : @, "
                              f"not {name!r}")
    return name


class Leadership:
    """This process leads: `token` (the fencing token), `value`, `proclaim()`, `resign()`,
    and the loss signals `lost`, `lost_event`, `on_lost`."""

    def __init__(self, election: Election, session: Session, res: dict[str, Any],
                 own_session: bool, on_lost: Callable[[Leadership], Any] | None):
        self.election = election
        self.session = session
        self.token: int = res["token"]
        self.value: Any = res.get("value")
        self.candidate: int = res["candidate"]
        self.on_lost = on_lost
        self.lost = False
        self.resigned = False
        self.lost_event = asyncio.Event()
        self._own_session = own_session
        session.on_lost.append(self._session_lost)
        if session.lost:
            self._session_lost(session)

    @property
    def name(self) -> str:
        return self.election.name

    @property
    def session_id(self) -> str | None:
        return self.session.id

    def is_leader(self) -> bool:
        """True while this leadership holds by the client's conservative lease count."""
        return not self.lost and not self.resigned and self.session.alive

    alive = property(is_leader)

    def _session_lost(self, session: Session) -> None:
        if self.lost or self.resigned:
            return
        self.lost = True
        self.lost_event.set()
        if self.on_lost is not None:
            self.on_lost(self)

    async def proclaim(self, value: Any) -> dict[str, Any]:
        """Set the leader's value (observers see it). NotLeader, and `lost` set, if this
        session no longer leads with this token."""
        try:
            res = await self.election.client.request_or_raise(
                "POST", f"{self.election.path}/proclaim",
                {"session": self.session_id, "token": self.token, "value": value},
                mutating=True)
        except DistSyncError as e:
            err = _convert(e)
            if isinstance(err, SessionLost):
                self.session._mark_lost()
            if isinstance(err, NotLeader | SessionLost):
                self._session_lost(self.session)
            raise err from None
        self.value = res.get("value", value)
        return res

    async def resign(self) -> None:
        """Step down (the next candidate is elected at once) and close the campaign's own
        session. Idempotent; LeadershipLost if the leadership was lost before."""
        if self.resigned:
            return
        lost = self.lost
        self.resigned = True
        with contextlib.suppress(ValueError):
            self.session.on_lost.remove(self._session_lost)
        if not lost and not self.session.lost:
            try:
                await self.election.client.request_or_raise(
                    "POST", f"{self.election.path}/resign",
                    {"session": self.session_id, "token": self.token}, mutating=True)
            except DistSyncError as e:
                err = _convert(e)
                if not isinstance(err, NotLeader | SessionLost | ElectionError):
                    raise err from None
                lost = True
        if self._own_session:
            if lost and self.session.id is not None:
                # Lost by the client's count may still be alive at the cluster (a slow
                # failover): end it, so the next candidate need not wait for its expiry.
                with contextlib.suppress(DistSyncError):
                    await self.election.client.request_or_raise(
                        "DELETE", f"/v1/sessions/{quote(self.session.id, safe='')}",
                        mutating=True, timeout=2.0)
            await self.session.close()
        if lost:
            if not self.lost:
                self.lost = True
                self.lost_event.set()
                if self.on_lost is not None:
                    self.on_lost(self)
            raise LeadershipLost(409, "leadership_lost",
                                 f"the leadership of {self.name!r} (token {self.token}) was "
                                 "lost before it was resigned (its session's lease ran out)")

    def __repr__(self) -> str:
        return (f"Leadership({self.name!r}, token={self.token}, value={self.value!r}, "
                f"lost={self.lost}, resigned={self.resigned})")


class Campaign:
    """`async with election.campaign(value) as leadership:` (or `await` it for a Leadership
    to `resign()` yourself)."""

    def __init__(self, election: Election, value: Any, timeout: float | None,
                 session: Session | None, on_lost: Callable[[Leadership], Any] | None):
        self.election = election
        self.value = value
        self.timeout = check_seconds("timeout", timeout)
        self.session = session
        self.on_lost = on_lost
        self.leadership: Leadership | None = None

    def __await__(self) -> Any:
        return self._run().__await__()

    async def _run(self) -> Leadership:
        client = self.election.client
        own = self.session is None
        session = self.session or Session(client, ttl=self.election.ttl,
                                          name=f"election:{self.election.name}")
        if own:
            await session.open()
        body = {"session": session._sid(), "value": self.value}
        path = self.election.path
        cid: int | None = None
        try:
            async with asyncio.timeout(self.timeout):
                res = await client.request_or_raise(
                    "POST", f"{path}/campaign", body, mutating=True,
                    request_id=str(uuid.uuid4()))
                while res.get("waiting"):
                    cid = res["candidate"]
                    res = await client.request_or_raise("GET", f"{path}/candidates/{cid}")
        except DistSyncError as e:
            err = _convert(e)
            if isinstance(err, SessionLost):
                session._mark_lost()
            if own:
                await session.close()
            raise err from None
        except (TimeoutError, asyncio.CancelledError) as e:
            # We may be queued, or even elected: withdraw (closing our own session does it).
            cleanup = asyncio.ensure_future(self._withdraw(session, own))
            if isinstance(e, asyncio.CancelledError):
                _BACKGROUND.add(cleanup)
                cleanup.add_done_callback(_BACKGROUND.discard)
                raise
            await cleanup
            raise ElectionTimeout(409, "timeout", f"not elected in {self.election.name!r} "
                                                  f"within {self.timeout} s") from None
        self.leadership = Leadership(self.election, session, res, own, self.on_lost)
        return self.leadership

    async def _withdraw(self, session: Session, own: bool) -> None:
        with contextlib.suppress(DistSyncError):
            if own:
                await session.close()
            else:
                await self.election.client.request_or_raise(
                    "POST", f"{self.election.path}/resign", {"session": session._sid()},
                    mutating=True)

    async def __aenter__(self) -> Leadership:
        return await self._run()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.leadership is None:
            return
        try:
            await self.leadership.resign()
        except LeadershipLost:
            if ev is None:
                raise
            # the body's own exception goes on; the loss is in `lost`, `lost_event`


class Election:
    """A handle on election `name`: `campaign()`, `leader()`, `observe()`."""

    def __init__(self, client: Client, name: str, ttl: float = 10.0):
        self.client = client
        self.name = check_election_name(name)
        check_seconds("ttl", ttl)
        self.ttl = float(ttl)
        self.path = f"/v1/elections/{quote(name, safe='')}"

    def campaign(self, value: Any = None, *, timeout: float | None = None,
                 session: Session | None = None,
                 on_lost: Callable[[Leadership], Any] | None = None) -> Campaign:
        """Become a candidate with `value` and wait (up to `timeout` seconds; None: no limit)
        until elected. FIFO among candidates. On a session of its own unless `session`."""
        return Campaign(self, value, timeout, session, on_lost)

    async def leader(self, *, consistency: str = "linearizable") -> dict[str, Any] | None:
        """Who leads now: {"session", "value", "token", "candidate"}, or None."""
        info = await self.client.request_or_raise(
            "GET", self.path, params={"consistency": consistency})
        return info.get("leader")

    async def info(self, *, consistency: str = "linearizable") -> dict[str, Any]:
        """The leader, the revision of the last change, and the waiting candidates."""
        return await self.client.request_or_raise(
            "GET", self.path, params={"consistency": consistency})

    def observe(self, *, after_revision: int | None = None, progress_ms: int = 2000,
                progress: bool = False) -> AsyncGenerator[dict[str, Any], None]:
        """`async for ev in election.observe()`: the leader now (unless `after_revision`),
        then every change of leader or value, each `{"type": "leader", "revision",
        "leader": {...} or None}`. Any node serves it; after a disconnect the stream resumes
        from the last revision seen, on the next node."""
        return _observe(self, after_revision, progress_ms, progress)


async def _observe(election: Election, after: int | None, progress_ms: int,
                   progress: bool) -> AsyncGenerator[dict[str, Any], None]:
    def params() -> dict[str, str]:
        p = {"progress_ms": str(progress_ms)}
        if after is not None:
            p["after_revision"] = str(after)
        return p

    async with contextlib.aclosing(follow(
            election.client, f"{election.path}/observe", params, what="observer",
            read_timeout=max(3 * progress_ms / 1000, 2.0))) as events:
        async for ev in events:
            rev = ev.get("revision")
            if ev.get("type") == "leader":
                if after is not None and rev is not None and rev <= after:
                    continue  # already seen
                if rev is not None:
                    after = rev
                yield ev
            elif ev.get("type") == "progress":
                if rev is not None and (after is None or rev > after):
                    after = rev
                if progress:
                    yield ev


# -- blocking forms ------------------------------------------------------------------------


class BlockingLeadership:
    """`Leadership` for ordinary threads."""

    def __init__(self, bc: BlockingClient, leadership: Leadership):
        self._bc = bc
        self._l = leadership

    token = property(lambda self: self._l.token)
    value = property(lambda self: self._l.value)
    lost = property(lambda self: self._l.lost)
    lost_event = property(lambda self: self._l.lost_event)
    session_id = property(lambda self: self._l.session_id)
    name = property(lambda self: self._l.name)

    def is_leader(self) -> bool:
        return self._l.is_leader()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the leadership is lost (True) or `timeout` passes (False)."""
        async def wait() -> bool:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._l.lost_event.wait()
            return self._l.lost

        return self._bc._run(wait())

    def proclaim(self, value: Any) -> dict[str, Any]:
        return self._bc._run(self._l.proclaim(value))

    def resign(self) -> None:
        self._bc._run(self._l.resign())

    def __repr__(self) -> str:
        return repr(self._l).replace("Leadership(", "BlockingLeadership(", 1)


class BlockingCampaign:
    def __init__(self, bc: BlockingClient, campaign: Campaign):
        self._bc = bc
        self._c = campaign

    def wait(self) -> BlockingLeadership:
        """Wait until elected; the caller resigns."""
        return BlockingLeadership(self._bc, self._bc._run(self._c._run()))

    def __enter__(self) -> BlockingLeadership:
        return self.wait()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bc._run(self._c.__aexit__(et, ev, tb))


class BlockingElection:
    """`Election` for ordinary threads: `with c.election(name).campaign(v) as leadership:`."""

    def __init__(self, bc: BlockingClient, election: Election):
        self._bc = bc
        self._e = election

    @property
    def name(self) -> str:
        return self._e.name

    def campaign(self, value: Any = None, *, timeout: float | None = None,
                 on_lost: Callable[[Leadership], Any] | None = None) -> BlockingCampaign:
        return BlockingCampaign(self._bc, self._e.campaign(value, timeout=timeout,
                                                           on_lost=on_lost))

    def leader(self, *, consistency: str = "linearizable") -> dict[str, Any] | None:
        return self._bc._run(self._e.leader(consistency=consistency))

    def info(self, *, consistency: str = "linearizable") -> dict[str, Any]:
        return self._bc._run(self._e.info(consistency=consistency))

    def observe(self, **kw: Any) -> Iterator[dict[str, Any]]:
        """`for ev in election.observe()`: the blocking iterator of `Election.observe`."""
        agen = self._e.observe(**kw)

        async def step() -> dict[str, Any]:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self._bc._run(step())
                except StopAsyncIteration:
                    return
        finally:
            self._bc._run(agen.aclose())
