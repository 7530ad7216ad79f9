"""OpenAPI fragment for api/semaphores.py: counting semaphores on lock sessions."""

from __future__ import annotations

from ..locks import LOCK_RE
from ..semaphores import SemaphoreAcquire, SemaphoreRelease
from .common import (
    BOOL,
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

NAME = path_param("name", LOCK_RE.pattern, "1-256 characters of A-Z a-z 0-9 . _ - : @")

OPENAPI_SCHEMAS = {
    "SemaphoreGrant": obj(
        ["granted", "semaphore", "session"],
        granted={"type": "boolean", "description": "false: the request waits (`waiting`)"},
        waiting=BOOL, semaphore=STR, session=STR, count=INT, permits=INT,
        token={**INT, "description": "Fencing token: the log index of the granting command, "
                                     "strictly increasing per semaphore"},
        reentrant=BOOL, wait_id=INT, deadline_ms=INT, position=INT,
    ),
    "SemaphoreInfo": obj(["semaphore", "holders", "waiters"], semaphore=STR,
                         permits=nullable(INT), free=nullable(INT), token=nullable(INT),
                         holders=array(OBJECT), waiters=array(OBJECT)),
}

_READ_ERRORS = errors(400, 503)
_WRITE_ERRORS = errors(400, 404, 409, 503)

OPENAPI = {
    "/v1/semaphores": {"get": {
        "summary": "List semaphores (those with holders or waiters) by name",
        "tags": ["semaphores"],
        "parameters": [query_param("prefix", STR), query_param("after", STR, "Page after this "
                       "name"), limit_param(1000, 100), CONSISTENCY],
        "responses": {"200": ok(obj(["semaphores", "next"], semaphores=array(OBJECT),
                                    next=nullable(STR))), **_READ_ERRORS},
    }},
    "/v1/semaphores/{name}": {"get": {
        "summary": "A semaphore's permits, holders (with tokens) and FIFO queue",
        "tags": ["semaphores"],
        "parameters": [NAME, CONSISTENCY],
        "responses": {"200": ok(ref("SemaphoreInfo")), **_READ_ERRORS},
    }},
    "/v1/semaphores/{name}/acquire": {"post": {
        "summary": "Take `count` of `permits` for a session (try with `wait_ms` 0, else queue "
                   "FIFO and long-poll). 409: `permits_conflict` (another N), "
                   "`count_conflict`, `timeout`, `deadlock`; 404 `session_not_found`",
        "tags": ["semaphores"],
        "parameters": [NAME, REQUEST_ID],
        "requestBody": body(SemaphoreAcquire),
        "responses": {"200": ok(ref("SemaphoreGrant")), **_WRITE_ERRORS},
    }},
    "/v1/semaphores/{name}/waits/{wait_id}": wait_continuation("semaphores", NAME, "SemaphoreGrant", _WRITE_ERRORS),
    "/v1/semaphores/{name}/release": {"post": {
        "summary": "Give back the session's permits, or cancel its wait (409 `not_held`)",
        "tags": ["semaphores"],
        "parameters": [NAME, REQUEST_ID],
        "requestBody": body(SemaphoreRelease),
        "responses": {"200": ok(obj(["semaphore", "session", "released"], semaphore=STR,
                                    session=STR, released=BOOL, cancelled=BOOL,
                                    granted=array(STR))), **_WRITE_ERRORS},
    }},
}
