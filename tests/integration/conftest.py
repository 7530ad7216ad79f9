"""Shared helpers for the real-process cluster tests.

Everything here drives real `python -m distsync.cli node` processes through LocalCluster.
Waiting is always "poll a condition until a deadline"; when a deadline passes, the failure
message carries the tail of every node's log so that a red run can be diagnosed from the
report alone.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from distsync.local import LocalCluster, http_json

# The test modules import these helpers as `cluster_helpers`, not `conftest`: pytest drops a
# directory's `conftest` from sys.modules when it loads another directory's conftest.py, so
# `from conftest import ...` could silently bind to the wrong file.
sys.modules["cluster_helpers"] = sys.modules[__name__]


def log_tails(lc: LocalCluster, lines: int = 25) -> str:
    """The last `lines` lines of every node's log, for assertion messages."""
    out = []
    for nid, nd in lc.nodes.items():
        state = "alive" if nd.alive() else "dead"
        out.append(f"--- {nid} ({state}) {nd.log_path} ---")
        out.append(nd.log_tail(lines))
    return "\n".join(out)


def diag(lc: LocalCluster, msg: str) -> str:
    """An assertion message: what went wrong, the cluster table and the log tails."""
    try:
        table = lc.status_table()
    except Exception as e:  # noqa: BLE001 - diagnostics must never raise
        table = f"<status table unavailable: {e}>"
    return f"{msg}\n\n{table}\n\n{log_tails(lc)}"


def wait_until(
    lc: LocalCluster, cond: Callable[[], Any], timeout: float, what: str,
    interval: float = 0.05,
) -> Any:
    """Poll `cond` until it returns something truthy; fail with node logs at the deadline."""
    try:
        return lc.wait_for(cond, timeout, what, interval)
    except TimeoutError as e:
        raise AssertionError(diag(lc, str(e))) from None


def agreed_leader(lc: LocalCluster, timeout: float = 15.0, among: list[str] | None = None) -> str:
    try:
        return lc.leader(timeout=timeout, among=among)
    except TimeoutError as e:
        raise AssertionError(diag(lc, str(e))) from None


def ready(lc: LocalCluster, timeout: float = 30.0) -> str:
    """Wait until every live node is ready and they agree on a leader; return the leader."""
    try:
        lc.wait_ready(timeout)
    except TimeoutError as e:
        raise AssertionError(diag(lc, str(e))) from None
    return agreed_leader(lc, timeout)


def healthz(lc: LocalCluster, node_id: str, timeout: float = 1.0) -> bool:
    try:
        code, _ = http_json("GET", f"{lc.nodes[node_id].url}/healthz", timeout=timeout)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return code == 200


def no_leader_for(lc: LocalCluster, seconds: float, why: str) -> None:
    """No live node becomes leader for `seconds` (many election timeouts at short ticks):
    what a cluster that must stay unavailable rather than lose writes shows. `why`: what a
    leader would mean, for the failure message."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for nid, st in lc.statuses().items():
            assert st is None or st["role"] != "leader", diag(lc, f"{nid} became leader: {why}")
        time.sleep(0.05)


def wait_caught_up(lc: LocalCluster, node_id: str, leader_id: str, timeout: float = 30.0) -> int:
    """Wait until `node_id` has applied everything the leader had committed when this was
    called (read once, up front); returns that commit index."""
    st = lc.status(leader_id)
    assert st is not None, diag(lc, f"leader {leader_id} did not answer /v1/status")
    target = st["commit"]

    def caught_up() -> bool:
        s = lc.status(node_id)
        return s is not None and s["applied"] >= target

    wait_until(lc, caught_up, timeout, f"{node_id} to apply up to the leader's commit {target}")
    return target


def raw_request(
    method: str, url: str, data: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 10.0,
) -> tuple[int, str, Any]:
    """Send exact bytes; returns (status, content type, parsed JSON or the raw text)."""
    import json

    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, ctype, raw = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get("Content-Type", ""), e.read()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return status, ctype, body


# -- refused requests: the documented 4xx with a JSON error body, and nothing changed --------

JSON_HEADERS = {"Content-Type": "application/json"}


def via_url(lc: LocalCluster, via: str) -> str:
    """The base URL of the agreed leader (`via="leader"`) or else of the first other node."""
    leader = agreed_leader(lc)
    nid = leader if via == "leader" else next(n for n in sorted(lc.nodes) if n != leader)
    return lc.nodes[nid].url


def refusal_problem(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
    *, status: int, error: str,
) -> str | None:
    """Send a request that must be refused. None if the answer is `status` with a JSON body
    `{"error": error, "message": <non-empty text>}`; else what was answered instead."""
    code, ctype, body = raw_request(method, url, data, headers)
    if (code == status and ctype.startswith("application/json") and isinstance(body, dict)
            and body.get("error") == error and isinstance(body.get("message"), str)
            and body["message"]):
        return None
    return f"{method} {url[:100]}: want {status} {error}, got {code} {ctype} {str(body)[:300]}"


@dataclass(frozen=True)
class ErrorCase:
    """A request the API must refuse with `status` and the JSON error code `error`."""

    name: str
    method: str
    path: str
    body: bytes | None
    status: int
    error: str
    headers: tuple[tuple[str, str], ...] = ()

    def problem(self, base_url: str) -> str | None:
        """`refusal_problem` for this request sent to `base_url` (a body goes as JSON)."""
        headers = dict(self.headers)
        if self.body is not None:
            headers = {**JSON_HEADERS, **headers}
        return refusal_problem(self.method, base_url + self.path, self.body, headers,
                               status=self.status, error=self.error)


def proposals(lc: LocalCluster) -> dict[str, float]:
    """Each node's `distsync_proposals_total`, summed over outcomes. Unlike the log indexes it
    does not move when an (unrelated) election appends the new leader's no-op entry."""
    out = {}
    for nid, nd in lc.nodes.items():
        status, _, text = raw_request("GET", f"{nd.url}/metrics")
        assert status == 200 and isinstance(text, str), (nid, status)
        out[nid] = sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("distsync_proposals_total")
        )
    return out


def log_marks(lc: LocalCluster) -> dict[str, tuple[int, int]]:
    """Each node's (commit index, last log index)."""
    out = {}
    for nid in lc.nodes:
        st = lc.status(nid)
        assert st is not None, diag(lc, f"{nid} did not answer")
        out[nid] = (st["commit"], st["last_index"])
    return out


class LeaderSampler:
    """Samples every live node's /v1/status in a background thread and records, per term,
    which nodes claimed to be leader and which leader ids nodes reported. Election safety
    says each term has at most one leader."""

    def __init__(self, lc: LocalCluster, interval: float = 0.05):
        self.lc = lc
        self.interval = interval
        self.claims: dict[int, set[str]] = defaultdict(set)  # term -> nodes in role leader
        self.reported: dict[int, set[str]] = defaultdict(set)  # term -> leader ids reported
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="leader-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            for nid, nd in list(self.lc.nodes.items()):
                if not nd.alive():
                    continue
                st = self.lc.status(nid, timeout=0.5)
                if st is None:
                    continue
                self.samples += 1
                if st["role"] == "leader":
                    self.claims[st["term"]].add(st["id"])
                if st["leader"] is not None:
                    self.reported[st["term"]].add(st["leader"])
            self._stop.wait(self.interval)

    def __enter__(self) -> LeaderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def violations(self) -> dict[int, set[str]]:
        bad = {t: s for t, s in self.claims.items() if len(s) > 1}
        bad.update({t: s for t, s in self.reported.items() if len(s) > 1})
        return bad


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[LocalCluster]:
    """A 3-node cluster for tests that leave it whole (they may move leadership)."""
    with LocalCluster(3) as lc:
        ready(lc)
        yield lc


async def async_wait_until(
    lc: LocalCluster, cond: Callable[[], Any], timeout: float, what: str,
    interval: float = 0.05,
) -> Any:
    """`wait_until` for coroutines: polls a cheap, non-blocking `cond` without stalling the
    event loop the test's own clients run on."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            msg = await asyncio.to_thread(diag, lc, f"timed out after {timeout}s waiting for {what}")
            raise AssertionError(msg)
        await asyncio.sleep(interval)


# The cache suites' fixtures (a real redis-server, a cluster pointed at it) live in their own
# module; importing them here makes them available to every test in this directory.
from cache_fixtures import cache_cluster, redis_server  # noqa: E402, F401
