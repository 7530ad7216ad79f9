"""OpenAPI fragment for api/kv.py: the linearizable key-value register."""

from __future__ import annotations

from ..schemas import KEY_RE, KVDelete, KVPut
from .common import (
    ANY,
    BOOL,
    CONSISTENCY,
    INT,
    REQUEST_ID,
    STR,
    array,
    body,
    errors,
    limit_param,
    obj,
    ok,
    path_param,
    query_param,
)

KEY = path_param(
    "key", KEY_RE.pattern,
    "1-512 characters of A-Z a-z 0-9 . _ - / : @ (a `/` may be sent as is or as %2F)",
)

OPENAPI = {
    "/v1/kv/{key}": {
        "get": {
            "summary": "Read a key",
            "tags": ["kv"],
            "parameters": [KEY, CONSISTENCY],
            "responses": {
                "200": ok(obj(["key", "value", "revision"], key=STR, value=ANY, revision=INT)),
                **errors(400, 404, 503),
            },
        },
        "put": {
            "summary": "Write a key; with `expect_revision` (0: absent) and/or `expect_value` "
                       "only if the current state matches (409 `compare_failed` otherwise)",
            "tags": ["kv"],
            "parameters": [KEY, REQUEST_ID],
            "requestBody": body(KVPut),
            "responses": {
                "200": ok(obj(["revision", "prev_revision"], revision=INT, prev_revision=INT)),
                **errors(409, 503),
            },
        },
        "delete": {
            "summary": "Delete a key (optionally only at `expect_revision`)",
            "tags": ["kv"],
            "parameters": [KEY, REQUEST_ID],
            "requestBody": body(KVDelete, required=False),
            "responses": {
                "200": ok(obj(["deleted", "revision"], deleted=BOOL, revision=INT,
                              prev_revision=INT)),
                **errors(409, 503),
            },
        },
    },
    "/v1/kv": {"get": {
        "summary": "List keys (this node's own state)",
        "tags": ["kv"],
        "parameters": [
            query_param("prefix", STR, "Only keys starting with this"),
            limit_param(10_000, 1000),
        ],
        "responses": {
            "200": ok(obj(["keys"], keys=array(STR))),
            **errors(400),
        },
    }},
}
