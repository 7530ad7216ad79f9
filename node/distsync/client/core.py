"""Python client: asyncio (`Client`) and blocking (`BlockingClient`) forms with the same methods.

Give it any node addresses; it finds the leader from `/v1/status` and talks to it directly
(any node would forward, but that costs a hop). When the leader changes, a node dies, or the
cluster answers 503, it retries with exponential back-off and jitter, and every mutating call
keeps ONE request id across its retries, so the server applies it at most once.
"""

from __future__ import annotations

import asyncio
import re
import ssl as ssl_mod
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from .barriers import Barrier, BlockingBarrier, BlockingDoubleBarrier, DoubleBarrier
from .blocking import blocking_attr
from .cache import BlockingCache, CacheClient
from .elections import BlockingElection, Election
from .errors import (
    DistSyncError,
    InvalidArgument,
    NotFound,
    Unavailable,
    _Retry,
    error_from_answer,
)
from .locks import (
    BlockingLock,
    BlockingSession,
    Lock,
    Session,
    SessionLost,
    SessionRef,
    session_ref,
)
from .queues import BlockingQueue, Queue
from .semaphores import BlockingSemaphore, Semaphore
from .watch import watch

T = TypeVar("T")
# Prefixes and keys as the API checks them (api/schemas.py): refused before any request.
PREFIX_RE = re.compile(r"^[A-Za-z0-9._\-/:@]{0,512}$")
KEY_RE = re.compile(r"^[A-Za-z0-9._\-/:@]{1,512}$")
MAX_PAGE = 10_000


def check_list_args(prefix: str, after: str | None, page_size: int) -> None:
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise InvalidArgument("invalid_argument", f"prefix is 0-512 characters of "
                                                  f"A-Z a-z 0-9 . _ - / : @, not {prefix!r}")
    if after is not None and (not isinstance(after, str) or not KEY_RE.fullmatch(after)):
        raise InvalidArgument("invalid_argument", f"after must be a key, not {after!r}")
    if type(page_size) is not int or not 1 <= page_size <= MAX_PAGE:
        raise InvalidArgument("invalid_argument",
                              f"page_size must be an integer in [1, {MAX_PAGE}]")


class Client:
    def __init__(
        self, addrs: list[str] | str, timeout: float = 15.0, request_timeout: float = 6.0,
        token: str | None = None, ssl: ssl_mod.SSLContext | bool | None = None,
        ca: str | None = None, connect_timeout: float = 3.0, client_id: str | None = None,
    ):
        """Times are seconds. `timeout`: how long one call may retry through leader changes
        and 503s. `request_timeout`: one HTTP attempt. `connect_timeout`: one TCP connect;
        and until some node has answered once, a call whose every attempt failed to connect
        raises Unavailable after `connect_timeout` (a wrong or dead address fails fast rather
        than after `timeout`). `token`: sent as `Authorization: Bearer`. `ssl`: talk HTTPS
        (True: verify against the system store; or an SSLContext); `ca`: a CA file to verify
        the nodes against (implies HTTPS). `client_id`: sent as `Client-Id`, the namespace of
        this client's request ids (README "Request ids"), and the client its watches count
        under (`--max-watchers-per-client`); give a stable one when you pass your own
        `request_id`s, so that they cannot meet another application's."""
        self.seeds = [addrs] if isinstance(addrs, str) else list(addrs)
        if not self.seeds:
            raise ValueError("give at least one node address")
        for what, v in (("timeout", timeout), ("request_timeout", request_timeout),
                        ("connect_timeout", connect_timeout)):
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
                raise InvalidArgument("invalid_argument",
                                      f"{what} must be a number of seconds > 0, not {v!r}")
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.answered_once = False  # some node has answered: past first contact
        self.token = token
        self.client_id = client_id
        if ca:
            ssl = ssl_mod.create_default_context(cafile=ca)
        self._ssl = ssl or None
        self.scheme = "https" if self._ssl else "http"
        self.leader_addr: str | None = None
        self._next_seed = 0
        self._session: aiohttp.ClientSession | None = None
        self._cache: CacheClient | None = None
        self._lock_sessions: dict[float, Session] = {}
        self._lock_session_guard: asyncio.Lock | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the shared lock sessions (releasing what they hold) and the connections."""
        sessions, self._lock_sessions = list(self._lock_sessions.values()), {}
        for s in sessions:
            await s.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout,
                                              sock_connect=self.connect_timeout),
                connector=aiohttp.TCPConnector(
                    use_dns_cache=False, limit=256, ssl=self._ssl or True
                ),
            )
        return self._session

    async def _target(self) -> str:
        if not self.leader_addr and len(self.seeds) > 1:
            await self._discover()
        if self.leader_addr:
            return self.leader_addr
        addr = self.seeds[self._next_seed % len(self.seeds)]
        self._next_seed += 1
        return addr

    async def _discover(self) -> None:
        """Ask every seed at once who leads (short timeout); no error if nobody knows."""
        async def probe(a: str) -> str | None:
            try:
                async with self._sess().get(
                    f"{self.scheme}://{a}/v1/status", timeout=aiohttp.ClientTimeout(total=0.5),
                    headers=self._auth_headers(),
                ) as r:
                    self.answered_once = True
                    if r.status == 200:
                        got = (await r.json()).get("leader_addr")
                        return str(got) if got else None
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                pass
            return None

        for got in await asyncio.gather(*(probe(a) for a in self.seeds)):
            if got:
                self.leader_addr = got
                return

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(
        self, method: str, path: str, body: Any = None, *, mutating: bool = False,
        request_id: str | None = None, params: dict[str, str] | None = None,
        addr: str | None = None, timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one API call, retrying through leader changes until `timeout`. A mutating call
        keeps one request id for all attempts."""
        headers: dict[str, str] = {}
        if mutating:
            # One id per call, kept across this call's retries; never used for another call.
            headers["Request-Id"] = request_id or str(uuid.uuid4())
            if self.client_id:
                headers["Client-Id"] = self.client_id
        headers.update(self._auth_headers())
        started = time.monotonic()
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(timeout or self.timeout),
            wait=wait_exponential_jitter(multiplier=0.02, max=0.5, jitter=0.02),
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        ):
            with attempt:
                try:
                    return await self._once(method, path, body, headers, params, addr)
                except _Retry as r:
                    if attempt.retry_state.attempt_number > 1000:
                        raise
                    self.check_first_contact(started, r.cause)
                    raise r
        raise AssertionError("unreachable")

    def check_first_contact(self, started: float, cause: BaseException) -> None:
        """Raise Unavailable once `connect_timeout` has passed without any node ever
        answering and the last attempt could not connect."""
        if (not self.answered_once and time.monotonic() - started >= self.connect_timeout
                and isinstance(cause, aiohttp.ClientConnectorError
                               | aiohttp.ConnectionTimeoutError | ConnectionRefusedError)):
            raise Unavailable(503, "unreachable",
                              f"no node of {self.seeds} could be reached within "
                              f"connect_timeout={self.connect_timeout} s: {cause!r}")

    async def request_or_raise(self, *a: Any, **kw: Any) -> dict[str, Any]:
        try:
            return await self.request(*a, **kw)
        except _Retry as r:
            cause = r.cause
            if isinstance(cause, DistSyncError):
                raise cause from None
            raise Unavailable(503, "unreachable", str(cause)) from None

    async def _once(
        self, method: str, path: str, body: Any, headers: dict[str, str],
        params: dict[str, str] | None, addr: str | None,
    ) -> dict[str, Any]:
        target = addr or await self._target()
        url = f"{self.scheme}://{target}{path}"
        try:
            async with self._sess().request(
                method, url, json=body, headers=headers, params=params
            ) as r:
                self.answered_once = True
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = {"error": "bad_response", "message": (await r.text())[:200]}
                if r.status < 400:
                    return data if isinstance(data, dict) else {"result": data}
                err = error_from_answer(r.status, data if isinstance(data, dict) else {})
                if r.status in (502, 503, 504) and addr is None:
                    hint = err.body.get("leader_addr")
                    self.leader_addr = hint if hint and hint != target else None
                    raise _Retry(err)
                raise err
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            if addr is None:
                self.leader_addr = None
            raise _Retry(e) from None

    # -- cluster ------------------------------------------------------------------------

    async def status(self, addr: str | None = None) -> dict[str, Any]:
        return await self.request_or_raise("GET", "/v1/status", addr=addr)

    async def find_leader(self) -> str:
        """Ask the seeds who leads, and remember the leader's address."""
        async def probe(a: str) -> dict[str, Any] | None:
            try:
                return await self.request_or_raise("GET", "/v1/status", addr=a, timeout=1.0)
            except DistSyncError:
                return None

        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self.timeout),
            wait=wait_exponential_jitter(multiplier=0.02, max=0.5, jitter=0.02),
            retry=retry_if_exception_type(LookupError), reraise=True,
        ):
            with attempt:
                for st in await asyncio.gather(*(probe(a) for a in self.seeds)):
                    if st and st.get("leader_addr"):
                        self.leader_addr = st["leader_addr"]
                        return self.leader_addr
                raise LookupError("no leader yet")
        raise AssertionError("unreachable")

    async def cluster_status(self) -> list[dict[str, Any]]:
        """Every member's own view, as listed by the first node that answers."""
        first = None
        failed: list[tuple[str, DistSyncError]] = []
        for a in self.seeds:
            try:
                first = await self.request_or_raise("GET", "/v1/status", addr=a, timeout=2.0)
                break
            except DistSyncError as e:
                failed.append((a, e))
        if first is None:
            # A refusal is the answer to report (a wrong token), not "nobody answered".
            for _, err in failed:
                if err.status in (401, 403):
                    raise err
            raise Unavailable(503, "unreachable", "; ".join(
                f"{a}: {err.message or err.code}" for a, err in failed) or "no address given")
        out = []
        for m in first["members"]:
            try:
                out.append(await self.request_or_raise(
                    "GET", "/v1/status", addr=m["addr"], timeout=2.0
                ))
            except DistSyncError as e:
                out.append({"id": m["id"], "addr": m["addr"], "role": "unreachable",
                            "error": str(e)})
        return out

    async def members(self) -> dict[str, Any]:
        return await self.request_or_raise("GET", "/v1/cluster/members")

    async def add_member(self, node_id: str, addr: str, learner: bool = False) -> dict[str, Any]:
        return await self.request_or_raise(
            "POST", "/v1/cluster/members", {"id": node_id, "addr": addr, "learner": learner},
            mutating=True, timeout=max(self.timeout, 90),
        )

    async def remove_member(self, node_id: str) -> dict[str, Any]:
        return await self.request_or_raise(
            "DELETE", f"/v1/cluster/members/{quote(node_id)}", mutating=True
        )

    async def transfer_leader(self, to: str | None = None) -> str:
        body = {"to": to} if to else {}
        res = await self.request_or_raise(
            "POST", "/v1/cluster/transfer-leader", body, mutating=True
        )
        self.leader_addr = None
        return str(res["leader"])

    # -- key-value ----------------------------------------------------------------------

    async def put(
        self, key: str, value: Any, *, expect_revision: int | None = None,
        request_id: str | None = None, session: SessionRef | None = None,
    ) -> dict[str, Any]:
        """Write `key`. `session` (a `Session`, `BlockingSession` or session id) makes it an
        ephemeral key: the cluster deletes it when that session ends (closed, or expired
        once its keepalives stop), and a later put without `session` makes it ordinary
        again. Raises `SessionLost` (and marks the Session lost) if the session is not open
        any more; nothing is written then."""
        body: dict[str, Any] = {"value": value}
        if expect_revision is not None:
            body["expect_revision"] = expect_revision
        owner = None
        if session is not None:
            body["session"], owner = session_ref(session)
        try:
            return await self.request_or_raise(
                "PUT", f"/v1/kv/{quote(key)}", body, mutating=True, request_id=request_id
            )
        except DistSyncError as e:
            if e.code != "session_not_found":
                raise
            if owner is not None:
                owner._mark_lost()
            raise SessionLost(e.status, e.code, e.message, e.body) from None

    async def get(self, key: str, *, consistency: str = "linearizable") -> dict[str, Any]:
        return await self.request_or_raise(
            "GET", f"/v1/kv/{quote(key)}", params={"consistency": consistency}
        )

    async def get_value(self, key: str, default: Any = None) -> Any:
        try:
            return (await self.get(key))["value"]
        except NotFound:
            return default

    async def delete(
        self, key: str, *, expect_revision: int | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        body = {"expect_revision": expect_revision} if expect_revision is not None else None
        return await self.request_or_raise(
            "DELETE", f"/v1/kv/{quote(key)}", body, mutating=True, request_id=request_id
        )

    async def cas(self, key: str, expect_revision: int, value: Any) -> dict[str, Any]:
        """Write `value` only if the key's revision is still `expect_revision` (0: absent)."""
        return await self.put(key, value, expect_revision=expect_revision)

    async def list(
        self, prefix: str = "", *, after: str | None = None, limit: int | None = None,
        page_size: int = 1000, consistency: str = "linearizable",
    ) -> dict[str, Any]:
        """The keys under `prefix` (after key `after`, at most `limit` of them; None: all),
        in key order: `{"keys": [{"key", "value", "revision", "session"?}], "next",
        "revision"}`, read `page_size` at a time. `next`: where a later call may go on
        (`after=next`), None when nothing is left. `revision`: the index the first page was
        read at; watch from `revision + 1` to follow every later change (a listing of
        several pages may already show some of those changes: skip an event whose revision
        is not above the key's listed one). `session` marks an ephemeral key."""
        check_list_args(prefix, after, page_size)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise InvalidArgument("invalid_argument", "limit must be an integer >= 1 or None")
        out: list[dict[str, Any]] = []
        revision: int | None = None
        nxt = after
        while limit is None or len(out) < limit:
            want = page_size if limit is None else min(page_size, limit - len(out))
            page = await self._list_page(prefix, nxt, want, consistency)
            if revision is None:
                revision = page["revision"]
            out.extend(page["keys"])
            nxt = page["next"]
            if nxt is None:
                break
        return {"keys": out, "next": nxt, "revision": revision}

    async def items(
        self, prefix: str = "", *, after: str | None = None, page_size: int = 1000,
        consistency: str = "linearizable",
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`async for kv in c.items("services/")`: `list` as an iterator, one page in memory
        at a time, for prefixes too big to hold whole. Each page is read at its own
        revision."""
        check_list_args(prefix, after, page_size)
        nxt = after
        while True:
            page = await self._list_page(prefix, nxt, page_size, consistency)
            for item in page["keys"]:
                yield item
            nxt = page["next"]
            if nxt is None:
                return

    async def _list_page(self, prefix: str, after: str | None, limit: int,
                         consistency: str) -> dict[str, Any]:
        params = {"prefix": prefix, "limit": str(limit), "consistency": consistency}
        if after:
            params["after"] = after
        return await self.request_or_raise("GET", "/v1/kv", params=params)

    def watch(
        self, *, key: str | None = None, prefix: str | None = None,
        start_revision: int | None = None, progress_ms: int = 5000,
        linearizable: bool = False, progress: bool = False, addr: str | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`async for ev in c.watch(prefix="cfg/", start_revision=r)`: every put and delete
        of the key or prefix from `start_revision` (default: the next change; with
        `linearizable`, after every write committed before the call), as
        `{"type", "key", "value", "revision", "prev_revision"}`, in revision order, without
        a gap or a duplicate: after a disconnect, a node failure or a cancellation it
        resumes on the next node (any node serves watches; `addr` picks the first) from the
        last revision seen, skipping what it already yielded (several events may share one
        revision: a session's end deletes all its ephemeral keys at once). `progress`: also yield `{"type": "progress", "revision"}`
        (all events up to it were yielded). Raises `Compacted` (with `oldest_revision`) if
        the history no longer reaches back to the start: re-read, then watch from there;
        `Unavailable` if no node served it for `timeout`."""
        return watch(self, key=key, prefix=prefix, start_revision=start_revision,
                     progress_ms=progress_ms, linearizable=linearizable, progress=progress,
                     addr=addr)

    # -- cache (see distsync.client.cache) ------------------------------------------------

    @property
    def cache(self) -> CacheClient:
        """`await c.cache.get/set/delete(...)` on the coherent near caches."""
        if self._cache is None:

            self._cache = CacheClient(self)
        return self._cache

    # -- queues -------------------------------------------------------------------------

    def queue(self, name: str) -> Queue:
        """A handle on queue `name` (see distsync.client.queues)."""

        return Queue(self, name)

    def election(self, name: str, ttl: float = 10.0) -> Election:
        """Leader election `name` (see distsync.client.elections): `async with
        c.election(name).campaign(value) as leadership:`; `ttl`: each campaign's session."""
        return Election(self, name, ttl)

    # -- locks (see distsync.client.locks) ----------------------------------------------------

    def session(self, ttl: float = 10.0, name: str = "") -> Session:
        """A lock session of your own, with a background keepalive:
        `async with c.session(ttl=10) as s`."""

        return Session(self, ttl=ttl, name=name)

    def lock(self, name: str, mode: str = "exclusive", ttl: float = 10.0,
             wait: float | None = None, *, reentrant: bool = False,
             on_lost: Callable[[Lock], Any] | None = None) -> Lock:
        """A Lock object on the client's shared session for `ttl` (seconds):
        `async with c.lock(name) as lock:` (uses `lock.token`), or `acquire(timeout=)` /
        `release()`. `wait`: the default timeout of `acquire()` and `async with` (None: no
        limit). Raises InvalidLockName (a ValueError) at once for a name the API refuses."""

        return Lock(self, name, mode, ttl=ttl, wait=wait, reentrant=reentrant,
                    on_lost=on_lost)

    # -- semaphores and barriers (see distsync.client.semaphores, .barriers) -------------

    def semaphore(self, name: str, permits: int, *, count: int = 1, ttl: float = 10.0,
                  wait: float | None = None, session: Session | None = None) -> Semaphore:
        """A counting semaphore of `permits`: `async with c.semaphore("pool", permits=3)
        .acquire() as permit:` (uses `permit.token`); each acquire takes `count`."""
        return Semaphore(self, name, permits, count=count, ttl=ttl, wait=wait, session=session)

    def barrier(self, name: str) -> Barrier:
        """A barrier: `set()` / `remove()` (or `async with` for both), `await wait()`."""
        return Barrier(self, name)

    def double_barrier(self, name: str, n: int, *, ttl: float = 10.0,
                       session: Session | None = None) -> DoubleBarrier:
        """One participant of a double barrier for `n`: `async with c.double_barrier(name,
        n=3):` enters (until n entered) and leaves on exit (until all left)."""
        return DoubleBarrier(self, name, n, ttl=ttl, session=session)

    async def lock_session(self, ttl: float = 10.0) -> Session:
        """The client's shared session for leases of `ttl` seconds: opened on first use, kept
        alive in the background, replaced by a new one once lost, closed by `close()`."""

        key = float(ttl)
        guard = self._lock_session_guard
        if guard is None:
            guard = self._lock_session_guard = asyncio.Lock()
        async with guard:
            s = self._lock_sessions.get(key)
            if s is None or s.lost:
                s = Session(self, ttl=ttl, name="shared")
                await s.open()
                self._lock_sessions[key] = s
            return s


class BlockingClient:
    """The same methods as `Client`, callable from ordinary threads. It runs a private event
    loop in a daemon thread."""

    def __init__(self, addrs: list[str] | str, **kw: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = Client(addrs, **kw)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        return blocking_attr(self._client, name, self._run)

    # The blocking twins of Client's calls, spelled out so that help() and IDEs see them.

    def request(self, method: str, path: str, body: Any = None, *, mutating: bool = False,
                request_id: str | None = None, params: dict[str, str] | None = None,
                addr: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self._client.request_or_raise(
            method, path, body, mutating=mutating, request_id=request_id, params=params,
            addr=addr, timeout=timeout))

    def status(self, addr: str | None = None) -> dict[str, Any]:
        return self._run(self._client.status(addr))

    def find_leader(self) -> str:
        return self._run(self._client.find_leader())

    def cluster_status(self) -> list[dict[str, Any]]:
        return self._run(self._client.cluster_status())

    def members(self) -> dict[str, Any]:
        return self._run(self._client.members())

    def add_member(self, node_id: str, addr: str, learner: bool = False) -> dict[str, Any]:
        return self._run(self._client.add_member(node_id, addr, learner))

    def remove_member(self, node_id: str) -> dict[str, Any]:
        return self._run(self._client.remove_member(node_id))

    def transfer_leader(self, to: str | None = None) -> str:
        return self._run(self._client.transfer_leader(to))

    def put(self, key: str, value: Any, *, expect_revision: int | None = None,
            request_id: str | None = None,
            session: SessionRef | None = None) -> dict[str, Any]:
        return self._run(self._client.put(key, value, expect_revision=expect_revision,
                                          request_id=request_id, session=session))

    def get(self, key: str, *, consistency: str = "linearizable") -> dict[str, Any]:
        return self._run(self._client.get(key, consistency=consistency))

    def get_value(self, key: str, default: Any = None) -> Any:
        return self._run(self._client.get_value(key, default))

    def delete(self, key: str, *, expect_revision: int | None = None,
               request_id: str | None = None) -> dict[str, Any]:
        return self._run(self._client.delete(key, expect_revision=expect_revision,
                                             request_id=request_id))

    def cas(self, key: str, expect_revision: int, value: Any) -> dict[str, Any]:
        return self._run(self._client.cas(key, expect_revision, value))

    def list(self, prefix: str = "", *, after: str | None = None, limit: int | None = None,
             page_size: int = 1000, consistency: str = "linearizable") -> dict[str, Any]:
        return self._run(self._client.list(prefix, after=after, limit=limit,
                                           page_size=page_size, consistency=consistency))

    def items(self, prefix: str = "", *, after: str | None = None, page_size: int = 1000,
              consistency: str = "linearizable") -> Iterator[dict[str, Any]]:
        """`for kv in c.items("services/")`: `Client.items` as a blocking iterator."""
        return self._iterate(self._client.items(prefix, after=after, page_size=page_size,
                                                consistency=consistency))


    @property
    def cache(self) -> BlockingCache:
        """Blocking `c.cache.get/set/delete(...)`."""
        if self.__dict__.get("_cache") is None:

            self.__dict__["_cache"] = BlockingCache(self)
        cache: BlockingCache = self.__dict__["_cache"]
        return cache

    def watch(self, **kw: Any) -> Iterator[dict[str, Any]]:
        """`for ev in c.watch(prefix="cfg/")`: `Client.watch` as a blocking iterator (same
        arguments); close it (or leave the loop) to end the stream."""
        return self._iterate(self._client.watch(**kw))

    def _iterate(self, agen: AsyncGenerator[dict[str, Any], None]
                 ) -> Iterator[dict[str, Any]]:
        async def step() -> dict[str, Any]:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self._run(step())
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())

    def queue(self, name: str) -> BlockingQueue:
        """A blocking handle on queue `name` (see distsync.client.queues)."""

        return BlockingQueue(self, name)

    def election(self, name: str, ttl: float = 10.0) -> BlockingElection:
        """`with c.election(name).campaign(value) as leadership:` (see Client.election)."""
        return BlockingElection(self, Election(self._client, name, ttl))

    def session(self, ttl: float = 10.0, name: str = "") -> BlockingSession:
        """A blocking lock session: `with c.session(ttl=10) as s: s.acquire(...)`."""

        return BlockingSession(self, ttl=ttl, name=name)

    def lock(self, name: str, mode: str = "exclusive", ttl: float = 10.0,
             wait: float | None = None, *, reentrant: bool = False,
             on_lost: Callable[[Lock], Any] | None = None) -> BlockingLock:
        """`with c.lock(name) as lock:` the blocking form of `Client.lock` (same arguments)."""

        return BlockingLock(self, self._client.lock(name, mode, ttl, wait, reentrant=reentrant,
                                                    on_lost=on_lost))

    def semaphore(self, name: str, permits: int, *, count: int = 1, ttl: float = 10.0,
                  wait: float | None = None,
                  session: BlockingSession | None = None) -> BlockingSemaphore:
        """`with c.semaphore("pool", permits=3).acquire() as permit:` (blocking)."""
        return BlockingSemaphore(self, self._client.semaphore(
            name, permits, count=count, ttl=ttl, wait=wait,
            session=None if session is None else session.session))

    def barrier(self, name: str) -> BlockingBarrier:
        """`c.barrier(name).wait()` blocking; `with c.barrier(name):` raises it for a block."""
        return BlockingBarrier(self, self._client.barrier(name))

    def double_barrier(self, name: str, n: int, *, ttl: float = 10.0,
                       session: BlockingSession | None = None) -> BlockingDoubleBarrier:
        """`with c.double_barrier(name, n=3):` enters, and leaves on exit (blocking)."""
        return BlockingDoubleBarrier(self, self._client.double_barrier(
            name, n, ttl=ttl, session=None if session is None else session.session))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
