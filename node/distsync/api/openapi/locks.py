"""OpenAPI fragment for api/locks.py: sessions with leases, and locks (acquire, release,
waits, deadlock report). Request bodies come from the handlers' pydantic models."""

from __future__ import annotations

from ..locks import LOCK_RE, SESSION_RE, LockAcquire, LockRelease, SessionOpen
from .common import (
    CONSISTENCY,
    INT,
    OBJECT,
    REQUEST_ID,
    STR,
    array,
    body,
    errors,
    limit_param,
    nullable,
    obj,
    ok,
    path_param,
    query_param,
    ref,
    wait_continuation,
)

_MODE = {"type": "string", "enum": ["exclusive", "shared"]}
# "deadlocks" is reserved: GET /v1/locks/deadlocks is the deadlock report.
LOCK = path_param("name", f"^(?!deadlocks$){LOCK_RE.pattern[1:]}",
                  "1-256 characters of A-Z a-z 0-9 . _ - : @, not `deadlocks`")
SESSION = path_param("id", SESSION_RE, "A session id as returned by POST /v1/sessions")

OPENAPI_SCHEMAS = {
    "Session": obj(["session", "ttl_ms"], session=STR, ttl_ms=INT),
    "Grant": obj(
        ["granted", "lock", "session"],
        granted={"type": "boolean", "description": "false: the request waits (`waiting`)"},
        waiting={"type": "boolean"}, lock=STR, session=STR, mode=_MODE,
        token={**INT, "description": "Fencing token, strictly increasing per lock"},
        wait_id=INT, deadline_ms=INT, position=INT,
    ),
    "LockInfo": obj(["lock", "holders", "waiters"], lock=STR, mode=nullable(_MODE),
                    token=nullable(INT), holders=array(OBJECT), waiters=array(OBJECT)),
}

_READ_ERRORS = errors(400, 503)
_WRITE_ERRORS = errors(404, 409, 503)

OPENAPI = {
    "/v1/sessions": {
        "post": {
            "summary": "Open a session with a lease of `ttl_ms`; keep it alive with keepalives",
            "tags": ["locks"],
            "parameters": [REQUEST_ID],
            "requestBody": body(SessionOpen, required=False),
            "responses": {"200": ok(ref("Session")), **errors(429, 503)},
        },
        "get": {
            "summary": "List open sessions by id, with the locks each holds and waits for and "
                       "the leader's view of its lease (forwarded to the leader)",
            "tags": ["locks"],
            "parameters": [query_param("after", STR, "Page after this session id"),
                           limit_param(1000, 100)],
            "responses": {"200": ok(obj(
                ["sessions", "next"], next=nullable(STR), sessions=array(obj(
                    ["session", "ttl_ms", "holds", "waits", "lease_remaining_ms"],
                    session=STR, name=STR, ttl_ms=INT, holds=array(STR), waits=array(STR),
                    lease_remaining_ms=nullable(INT))),
            )), **_READ_ERRORS},
        },
    },
    "/v1/sessions/{id}": {
        "get": {
            "summary": "A session: its holds, waits and remaining lease",
            "tags": ["locks"],
            "parameters": [SESSION],
            "responses": {
                "200": ok(obj(["session", "ttl_ms", "holds", "waits"], session=STR,
                              ttl_ms=INT, name=STR, created=INT,
                              holds=array(OBJECT), waits=array(OBJECT),
                              lease_remaining_ms=nullable(INT))),
                **errors(400, 404, 503),
            },
        },
        "delete": {
            "summary": "Close a session: releases its locks and drops its waits",
            "tags": ["locks"],
            "parameters": [SESSION, REQUEST_ID],
            "responses": {"200": ok(obj(["session"], session=STR)), **errors(400),
                          **_WRITE_ERRORS},
        },
    },
    "/v1/sessions/{id}/keepalive": {"post": {
        "summary": "Renew the session's lease (no log write)",
        "tags": ["locks"],
        "parameters": [SESSION, REQUEST_ID],
        "responses": {"200": ok(ref("Session")), **errors(400), **_WRITE_ERRORS},
    }},
    "/v1/locks": {"get": {
        "summary": "List locks by name",
        "tags": ["locks"],
        "parameters": [
            query_param("prefix", STR), query_param("after", STR, "Page after this name"),
            limit_param(1000, 100),
            CONSISTENCY,
        ],
        "responses": {"200": ok(obj(["locks", "next"],
                                    locks=array(OBJECT), next=nullable(STR))),
                      **_READ_ERRORS},
    }},
    "/v1/locks/deadlocks": {"get": {
        "summary": "Cycles in the wait-for graph (normally none: acquires that would close "
                   "one are refused) and the last 16 refused acquires (`recent`: the cycle "
                   "each would have closed, as its 409 `deadlock` named it)",
        "tags": ["locks"],
        "parameters": [CONSISTENCY],
        "responses": {"200": ok(obj(
            ["cycles", "recent"], cycles=array(),
            recent=array(obj(["index", "session", "lock", "cycle", "locks"], index=INT,
                             session=STR, lock=STR, cycle=array(STR), locks=array(STR),
                             at_ms=INT)),
        )), **_READ_ERRORS},
    }},
    "/v1/locks/{name}": {"get": {
        "summary": "A lock's holders and queue",
        "tags": ["locks"],
        "parameters": [LOCK, CONSISTENCY],
        "responses": {"200": ok(ref("LockInfo")), **_READ_ERRORS},
    }},
    "/v1/locks/{name}/acquire": {"post": {
        "summary": "Acquire for a session (try-lock with `wait_ms` 0; else long-poll). 409 "
                   "`deadlock` if waiting would close a cycle",
        "tags": ["locks"],
        "parameters": [LOCK, REQUEST_ID],
        "requestBody": body(LockAcquire),
        "responses": {"200": ok(ref("Grant")), **_WRITE_ERRORS},
    }},
    "/v1/locks/{name}/waits/{wait_id}": wait_continuation("locks", LOCK, "Grant", _WRITE_ERRORS),
    "/v1/locks/{name}/release": {"post": {
        "summary": "Release the session's hold or cancel its wait (409 `not_held` if neither)",
        "tags": ["locks"],
        "parameters": [LOCK, REQUEST_ID],
        "requestBody": body(LockRelease),
        "responses": {"200": ok(obj(["lock", "session"], lock=STR, session=STR)),
                      **_WRITE_ERRORS},
    }},
}
