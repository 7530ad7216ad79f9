"""Fuzzing the HTTP API from its own OpenAPI description (schemathesis) against a real 3-node
cluster with peer authentication and tokens on.

The spec is the one a node serves at /v1/openapi.json. Requests rotate over the three nodes,
so followers' forwarding is fuzzed too. Bounded: a few examples per operation, no shrinking,
long polls clamped to 100 ms, and at most RUN_BUDGET_S of requests per operation and mode.

1. Rejected requests change nothing: every operation without a token (401), with too low a
   role (403), and with a schema-invalid body or path parameter and a valid admin token
   (4xx, negative mode); no node's commit or last index moves.
2. Valid requests (positive mode, admin token) for every operation except adding and
   removing members, whose valid inputs would really change the membership (adding an
   unreachable member waits a minute for it to catch up); those two are driven in phase 1.
   The answers must conform to the spec: documented status codes, content types and
   response schemas, auth actually enforced.

In both: no 5xx but the documented, retryable 503s, and the cluster is healthy afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from cluster_helpers import diag, log_marks, ready

from distsync.local import LocalCluster, http_json

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NotSet  # noqa: E402

ADMIN = "fuzz-admin-token-" + "a" * 20
ENV = {
    "DISTSYNC_CLUSTER_SECRET": "fuzz-cluster-secret-" + "s" * 20,
    "DISTSYNC_READ_TOKEN": "fuzz-read-token-" + "r" * 20,
    "DISTSYNC_WRITE_TOKEN": "fuzz-write-token-" + "w" * 20,
    "DISTSYNC_ADMIN_TOKEN": ADMIN,
}
# Valid inputs would change the membership for real (see the module docstring).
MEMBERSHIP = {("POST", "/v1/cluster/members"), ("DELETE", "/v1/cluster/members/{id}")}
RETRYABLE_503 = {"no_leader", "not_leader", "leader_unreachable", "unavailable", "not_ready",
                 "backend_unavailable", "home_unavailable", "contention"}
EXAMPLES = 6
STREAMS = {"/v1/watch", "/v1/elections/{name}/observe"}  # NDJSON until their timeout_ms
RUN_BUDGET_S = 1.5  # per operation and mode: every operation gets its share of the time


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    with LocalCluster(3, env=ENV, token=ADMIN) as c:
        ready(c)
        yield c


@pytest.fixture(scope="module")
def schema(lc: LocalCluster) -> Any:
    code, spec = http_json("GET", f"{lc.nodes['n1'].url}/v1/openapi.json")
    assert code == 200
    return schemathesis.openapi.from_dict(spec)


def operations(schema: Any) -> list[Any]:
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 10
    return ops


def _clamp(case: Any) -> None:
    """Keep long polls short (the budget is time, not waiting)."""
    query = getattr(case, "query", None)
    if case.path in STREAMS and isinstance(query, dict):
        # A watch streams until its timeout_ms: keep it short (and finite).
        t = query.get("timeout_ms")
        if not isinstance(t, int) or isinstance(t, bool) or t > 100 or t < 1:
            query["timeout_ms"] = 100
    if isinstance(query, dict) and isinstance(query.get("wait_ms"), int) and \
            query["wait_ms"] > 100:  # a barrier's wait, a double barrier's poll
        query["wait_ms"] = 100
    if isinstance(case.body, dict):
        for k in ("wait_ms", "poll_ms"):
            if isinstance(case.body.get(k), int) and case.body[k] > 100:
                case.body[k] = 100


class Fuzzer:
    def __init__(self, lc: LocalCluster):
        self.urls = [nd.url for nd in lc.nodes.values()]
        self.covered: set[str] = set()
        self.calls = 0
        self.failures: list[str] = []
        self.statuses: dict[int, int] = {}
        self.unnegatable: list[str] = []

    def run(
        self, op: Any, mode: GenerationMode, headers: dict[str, str], checks: list[Any],
        want: int | None = None, examples: int = EXAMPLES,
        only: Callable[[Any], bool] | None = None,
    ) -> None:
        """Send generated cases of `op` (those passing `only`); `want`: the status class
        every answer must have (401, 403, or 400 for any 4xx)."""
        label = f"{op.method.upper()} {op.path} [{mode.value}]"
        try:
            strategy = op.as_strategy(generation_mode=mode)
        except Exception as e:  # noqa: BLE001 - e.g. nothing to negate in a parameterless op
            if mode == GenerationMode.NEGATIVE:
                return
            self.failures.append(f"{label}: no strategy: {e!r}")
            return

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def one(case: Any) -> None:
            if time.monotonic() > deadline:
                return
            _clamp(case)
            if only is not None and not only(case):
                return
            if case.headers and "Request-Id" in case.headers:
                # Unique per request, as a correct client makes them: the server answers a
                # reused id with the first request's result (at-most-once), whatever the op.
                case.headers["Request-Id"] = f"fuzz-{self.calls}-{uuid.uuid4().hex}"
            url = self.urls[self.calls % len(self.urls)]
            self.calls += 1
            self.covered.add(f"{op.method.upper()} {op.path}")
            try:
                resp = case.call(base_url=url, headers=headers, timeout=15)
            except Exception as e:  # noqa: BLE001 - a dropped connection is a finding
                self.failures.append(f"{label}: request failed: {e!r}\n{case.as_curl_command()}")
                return
            self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
            problem = self._status_problem(resp, want)
            if problem is None:
                try:
                    case.validate_response(resp, checks=checks, headers=headers)
                except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - collect all
                    problem = f"{type(e).__name__}: {e}"
            if problem:
                self.failures.append(
                    f"{label} via {url}: {problem}\n{case.as_curl_command()}\n"
                    f"-> {resp.status_code} {resp.text[:300]}"
                )

        deadline = time.monotonic() + RUN_BUDGET_S
        try:
            one()
        except Unsatisfiable:
            if mode != GenerationMode.NEGATIVE:
                raise
            self.unnegatable.append(label)  # e.g. GET /healthz: no input to get wrong

    @staticmethod
    def _status_problem(resp: Any, want: int | None) -> str | None:
        code = resp.status_code
        try:
            err = resp.json().get("error") if code >= 400 else None
        except (ValueError, AttributeError):
            return f"{code} without a JSON error body"
        if code >= 400 and not isinstance(err, str):
            return f"{code} without an `error` code"
        if code == 503:
            return None if err in RETRYABLE_503 else f"503 with undocumented error {err!r}"
        if code >= 500:
            return f"server error {code}"
        if want == 400 and not 400 <= code < 500:
            return f"expected a 4xx rejection, got {code}"
        if want in (401, 403) and code != want:
            return f"expected {want}, got {code}"
        return None


def certainly_invalid(op: Any, case: Any, spec: dict[str, Any]) -> bool:
    """Whether the case, as it will be sent, violates the spec in its JSON body or a path
    parameter, so the server must refuse it. (Negative mode also makes cases that are valid
    once sent: a negated header that the client drops, an auth header we add back, ...)"""
    from jsonschema import Draft202012Validator

    def invalid(schema: dict[str, Any], value: Any) -> bool:
        doc = {**schema, "components": spec["components"]}
        return not Draft202012Validator(doc).is_valid(value)

    raw = op.definition.raw
    for p in raw.get("parameters", []):
        value = (case.path_parameters or {}).get(p["name"]) if p["in"] == "path" else None
        # Path parameters are held percent-encoded, as they go on the wire.
        if isinstance(value, str) and value and invalid(p["schema"], unquote(value)):
            return True
    body_schema = raw.get("requestBody", {}).get("content", {}).get(
        "application/json", {}).get("schema")
    return bool(
        body_schema is not None and case.media_type == "application/json"
        and not isinstance(case.body, NotSet) and invalid(body_schema, case.body)
    )


def test_rejected_requests_change_nothing(lc: LocalCluster, schema: Any) -> None:
    """Requests the server must refuse: no token (401), a read token on a mutation (403),
    and schema-invalid bodies or path parameters with a valid token (4xx). Afterwards no
    node's log has moved."""
    ready(lc)
    before = log_marks(lc)
    spec = schema.raw_schema
    fz = Fuzzer(lc)
    read = {"Authorization": f"Bearer {ENV['DISTSYNC_READ_TOKEN']}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    negative_checks = [negative_data_rejection, status_code_conformance,
                       content_type_conformance, response_schema_conformance]
    for op in operations(schema):
        role = op.definition.raw.get("x-distsync-role")
        if role is None:
            continue  # open probes
        fz.run(op, GenerationMode.POSITIVE, {}, [status_code_conformance], want=401,
               examples=2)
        if role != "read":
            fz.run(op, GenerationMode.POSITIVE, read, [status_code_conformance], want=403,
                   examples=2)
        fz.run(op, GenerationMode.NEGATIVE, admin, negative_checks, want=400,
               only=lambda case, op=op: certainly_invalid(op, case, spec))
    print(f"rejection phase: {fz.calls} requests, statuses {sorted(fz.statuses.items())}, "
          f"nothing to negate in {len(fz.unnegatable)} operations")
    assert not fz.failures, f"{len(fz.failures)} findings:\n\n" + "\n\n".join(fz.failures[:20])
    assert fz.calls >= 50, fz.calls
    guarded = {f"{op.method.upper()} {op.path}" for op in operations(schema)
               if op.definition.raw.get("x-distsync-role")}
    assert fz.covered == guarded, guarded ^ fz.covered
    after = log_marks(lc)
    assert after == before, diag(lc, f"rejected requests changed the log: {before} -> {after}")


def test_valid_requests_conform_to_the_spec(lc: LocalCluster, schema: Any) -> None:
    """Every operation but valid membership changes, with valid input: documented status
    codes, content types and response schemas; auth enforced (each success is probed again
    without the token)."""
    ready(lc)
    fz = Fuzzer(lc)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance,
              ignored_auth]
    for op in operations(schema):
        if (op.method.upper(), op.path) not in MEMBERSHIP:
            fz.run(op, GenerationMode.POSITIVE, admin, checks)
    print(f"conformance phase: {fz.calls} requests, statuses {sorted(fz.statuses.items())}")
    assert not fz.failures, f"{len(fz.failures)} findings:\n\n" + "\n\n".join(fz.failures[:20])
    assert fz.calls >= 50, fz.calls
    assert len(fz.covered) == len(operations(schema)) - len(MEMBERSHIP), sorted(fz.covered)
    assert any(200 <= c < 300 for c in fz.statuses), fz.statuses
    ready(lc, 30)
