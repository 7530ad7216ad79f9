"""OpenAPI fragment for api/elections.py: leader election (campaign, proclaim, resign, leader,
observe). Request bodies come from the handlers' pydantic models."""

from __future__ import annotations

from ..elections import NAME_RE, NDJSON, Campaign, Proclaim, Resign
from .common import (
    ANY,
    CONSISTENCY,
    INT,
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
)

NAME = path_param("name", NAME_RE.pattern, "1-256 characters of A-Z a-z 0-9 . _ - : @")
_TOKEN = {**INT, "description": "Fencing token: the log index that elected this leader; "
                                "strictly increasing per election"}
_LEADER = nullable(obj(["session", "value", "token", "candidate"], session=STR, value=ANY,
                       token=_TOKEN, candidate=INT))

OPENAPI_SCHEMAS = {
    "Leadership": obj(
        ["elected", "election", "session", "candidate"],
        elected={"type": "boolean", "description": "false: the candidacy waits (`waiting`)"},
        waiting={"type": "boolean"}, election=STR, session=STR,
        candidate={**INT, "description": "The candidacy's id (the campaign's log index)"},
        token=_TOKEN, value=ANY, revision=INT, position=INT, leader=_LEADER,
    ),
    "ElectionInfo": obj(["election", "leader", "revision", "candidates"], election=STR,
                        leader=_LEADER, revision=nullable(INT), candidates=INT,
                        waiting=array(obj(["session", "candidate"], session=STR,
                                          candidate=INT, value=ANY))),
}

_WRITE_ERRORS = errors(400, 404, 409, 503)
_EVENT = {"oneOf": [
    obj(["type", "election", "revision", "leader"], type={"const": "leader"}, election=STR,
        revision=nullable(INT), leader=_LEADER, resync={"type": "boolean"}),
    obj(["type", "election", "revision"], type={"const": "progress"}, election=STR,
        revision=INT),
]}

OPENAPI = {
    "/v1/elections": {"get": {
        "summary": "List elections that have a leader, by name",
        "tags": ["elections"],
        "parameters": [query_param("prefix", STR),
                       query_param("after", STR, "Page after this name"),
                       limit_param(1000, 100), CONSISTENCY],
        "responses": {"200": ok(obj(["elections", "next"], elections=array(ref("ElectionInfo")),
                                    next=nullable(STR))), **errors(400, 503)},
    }},
    "/v1/elections/{name}": {"get": {
        "summary": "Who leads now (session, value, fencing token) and who waits",
        "tags": ["elections"],
        "parameters": [NAME, CONSISTENCY],
        "responses": {"200": ok(ref("ElectionInfo")), **errors(400, 503)},
    }},
    "/v1/elections/{name}/campaign": {"post": {
        "summary": "Join the candidates (FIFO) with a value; long-polls until elected, else "
                   "answers `waiting` with the candidacy id to go on polling",
        "tags": ["elections"],
        "parameters": [NAME, REQUEST_ID],
        "requestBody": body(Campaign),
        "responses": {"200": ok(ref("Leadership")), **_WRITE_ERRORS, **errors(413, 429)},
    }},
    "/v1/elections/{name}/candidates/{candidate}": {"get": {
        "summary": "Continue the long poll of a campaign that answered `waiting` (409 "
                   "`resigned` or `leadership_lost`, 404 `session_not_found` once it ended)",
        "tags": ["elections"],
        "parameters": [NAME, path_param("candidate", "^[0-9]{1,18}$")],
        "responses": {"200": ok(ref("Leadership")), **_WRITE_ERRORS},
    }},
    "/v1/elections/{name}/proclaim": {"post": {
        "summary": "The leader sets a new value (409 `not_leader` unless the session leads "
                   "with this token)",
        "tags": ["elections"],
        "parameters": [NAME, REQUEST_ID],
        "requestBody": body(Proclaim),
        "responses": {"200": ok(ref("Leadership")), **_WRITE_ERRORS, **errors(413)},
    }},
    "/v1/elections/{name}/resign": {"post": {
        "summary": "The leader steps down (the next candidate is elected at once), or a "
                   "waiting candidate withdraws (409 `not_candidate` if neither)",
        "tags": ["elections"],
        "parameters": [NAME, REQUEST_ID],
        "requestBody": body(Resign),
        "responses": {"200": ok(obj(["resigned", "was_leader", "election", "session"],
                                    resigned={"type": "boolean"},
                                    was_leader={"type": "boolean"}, election=STR,
                                    session=STR, token=INT, index=INT, leader=_LEADER)),
                      **_WRITE_ERRORS},
    }},
    "/v1/elections/{name}/observe": {"get": {
        "summary": "Stream the election's leader now, then every change of leader or value, "
                   "as newline-delimited JSON (any node, from its applied state)",
        "description": "Lines: `leader` (`revision` is the log index of the change; `leader` "
                       "null when nobody leads; `resync` when this node could not prove "
                       "that no change was missed before it), and `progress` (every change "
                       "up to `revision` was sent). Resume with `after_revision` set to the "
                       "last revision seen.",
        "tags": ["elections"],
        "parameters": [
            NAME,
            query_param("after_revision", {"type": "integer", "minimum": 0,
                                           "maximum": (1 << 63) - 1},
                        "Send changes after this revision (default: the leader now first)"),
            query_param("progress_ms", {"type": "integer", "minimum": 10,
                                        "maximum": 3_600_000, "default": 5000},
                        "Progress line interval while nothing changes"),
            query_param("timeout_ms", {"type": "integer", "minimum": 1,
                                       "maximum": 86_400_000},
                        "End the stream after this long"),
        ],
        "responses": {
            "200": {"description": "The stream (chunked)",
                    "content": {NDJSON: {"schema": _EVENT}}},
            **errors(400, 503),
        },
    }},
}
