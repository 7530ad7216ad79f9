"""OpenAPI fragment for api/barriers.py: barriers (set, wait, remove) and double barriers
(enter, leave)."""

from __future__ import annotations

from ..barriers import BarrierSet, DoubleEnter, DoubleLeave
from ..locks import LOCK_RE, SESSION_RE
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
)

NAME = path_param("name", LOCK_RE.pattern, "1-256 characters of A-Z a-z 0-9 . _ - : @")
WAIT_MS = query_param("wait_ms", {"type": "integer", "minimum": 0, "maximum": 3_600_000},
                      "How long this poll may take (default 4000)")
_BARRIER = obj(["barrier", "raised", "generation"], barrier=STR, raised=BOOL,
               generation=nullable(INT), session=nullable(STR))
_DOUBLE = obj(["barrier", "n", "round", "entered", "left", "next"], barrier=STR,
              n=nullable(INT), round=nullable(INT), entered=array(STR), left=array(STR),
              full=nullable(INT), next=array(STR))
_ENTER = obj(["barrier", "entered", "ready"], barrier=STR, entered=BOOL, ready=BOOL,
             round=nullable(INT), count=INT, n=INT, full=nullable(INT), next_round=BOOL,
             position=INT)
_LEAVE = obj(["barrier", "left", "done"], barrier=STR, left=BOOL, done=BOOL,
             round=nullable(INT), withdrawn=BOOL, remaining=INT, n=INT)
_LIST = [query_param("prefix", STR), query_param("after", STR, "Page after this name"),
         limit_param(1000, 100), CONSISTENCY]
_READ_ERRORS = errors(400, 503)
_WRITE_ERRORS = errors(400, 404, 409, 503)

OPENAPI = {
    "/v1/barriers": {"get": {
        "summary": "List raised barriers by name",
        "tags": ["barriers"],
        "parameters": _LIST,
        "responses": {"200": ok(obj(["barriers", "next"], barriers=array(_BARRIER),
                                    next=nullable(STR))), **_READ_ERRORS},
    }},
    "/v1/barriers/{name}": {
        "get": {
            "summary": "Whether the barrier is raised, and its generation",
            "tags": ["barriers"],
            "parameters": [NAME, CONSISTENCY],
            "responses": {"200": ok(_BARRIER), **_READ_ERRORS},
        },
        "put": {
            "summary": "Raise the barrier (optionally bound to a session: removed when it "
                       "ends); `created: false` if it was raised already",
            "tags": ["barriers"],
            "parameters": [NAME, REQUEST_ID],
            "requestBody": body(BarrierSet, required=False),
            "responses": {"200": ok(obj(["barrier", "created", "generation"], barrier=STR,
                                        created=BOOL, generation=INT,
                                        session=nullable(STR))), **_WRITE_ERRORS},
        },
        "delete": {
            "summary": "Remove the barrier: its waiters are released",
            "tags": ["barriers"],
            "parameters": [NAME, REQUEST_ID],
            "responses": {"200": ok(obj(["barrier", "removed"], barrier=STR, removed=BOOL,
                                        generation=INT)), **_WRITE_ERRORS},
        },
    },
    "/v1/barriers/{name}/wait": {"get": {
        "summary": "Long-poll until the barrier is removed (at once if it is not raised); "
                   "`released: false` when the poll ends first: ask again with the "
                   "`generation` it names",
        "tags": ["barriers"],
        "parameters": [NAME, query_param("generation", INT, "From an earlier poll"), WAIT_MS],
        "responses": {"200": ok(obj(["barrier", "released", "generation"], barrier=STR,
                                    released=BOOL, generation=nullable(INT))),
                      **_READ_ERRORS},
    }},
    "/v1/double-barriers": {"get": {
        "summary": "List double barriers with participants, by name",
        "tags": ["barriers"],
        "parameters": _LIST,
        "responses": {"200": ok(obj(["barriers", "next"], barriers=array(OBJECT),
                                    next=nullable(STR))), **_READ_ERRORS},
    }},
    "/v1/double-barriers/{name}": {"get": {
        "summary": "A double barrier's round: n, who entered, who left, the next round",
        "tags": ["barriers"],
        "parameters": [NAME, CONSISTENCY],
        "responses": {"200": ok(_DOUBLE), **_READ_ERRORS},
    }},
    "/v1/double-barriers/{name}/enter": {
        "post": {
            "summary": "Enter for a session; `ready` once `n` have entered (long-polls up "
                       "to `wait_ms`). 409 `n_conflict`; 404 `session_not_found`",
            "tags": ["barriers"],
            "parameters": [NAME, REQUEST_ID],
            "requestBody": body(DoubleEnter),
            "responses": {"200": ok(_ENTER), **_WRITE_ERRORS},
        },
        "get": {
            "summary": "Continue waiting for a session's enter",
            "tags": ["barriers"],
            "parameters": [NAME, {"name": "session", "in": "query", "required": True,
                                  "schema": {"type": "string", "pattern": SESSION_RE}},
                           WAIT_MS],
            "responses": {"200": ok(_ENTER), **errors(400, 409, 503)},
        },
    },
    "/v1/double-barriers/{name}/leave": {
        "post": {
            "summary": "Leave for a session; `done` once every participant of the round "
                       "left (long-polls up to `wait_ms`). Before the round is full this "
                       "withdraws the enter. 409 `not_entered`",
            "tags": ["barriers"],
            "parameters": [NAME, REQUEST_ID],
            "requestBody": body(DoubleLeave),
            "responses": {"200": ok(_LEAVE), **_WRITE_ERRORS},
        },
        "get": {
            "summary": "Continue waiting for a round to be done",
            "tags": ["barriers"],
            "parameters": [NAME, {"name": "round", "in": "query", "required": True,
                                  "schema": INT}, WAIT_MS],
            "responses": {"200": ok(_LEAVE), **_READ_ERRORS},
        },
    },
}
