"""OpenAPI fragment for api/kv.py: the linearizable key-value register."""

from __future__ import annotations

from ..schemas import KEY_RE, PREFIX_RE, KVDelete, KVPut
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
    nullable,
    obj,
    ok,
    path_param,
    query_param,
)

KEY = path_param(
    "key", KEY_RE.pattern,
    "1-512 characters of A-Z a-z 0-9 . _ - / : @ (a `/` may be sent as is or as %2F)",
)
# A key as read (GET of a key, an item of a listing).
ITEM = obj(["key", "value", "revision"], key=STR, value=ANY, revision=INT,
           session={**STR, "description": "Only for an ephemeral key: the lock session it "
                                          "is bound to (deleted when that session ends)"})

OPENAPI = {
    "/v1/kv/{key}": {
        "get": {
            "summary": "Read a key",
            "tags": ["kv"],
            "parameters": [KEY, CONSISTENCY],
            "responses": {
                "200": ok(ITEM),
                **errors(400, 404, 503),
            },
        },
        "put": {
            "summary": "Write a key; with `expect_revision` (0: absent) and/or `expect_value` "
                       "only if the current state matches (409 `compare_failed` otherwise)",
            "description": "With `session` (an open lock session's id) the key is "
                           "ephemeral: it is deleted, through the log, when that session "
                           "ends (closed, or expired when its keepalives stop), and watchers "
                           "see the delete. The binding follows the last put: a put without "
                           "`session` makes the key ordinary again. A session that is not "
                           "open is 404 `session_not_found`, and nothing is written.",
            "tags": ["kv"],
            "parameters": [KEY, REQUEST_ID],
            "requestBody": body(KVPut),
            "responses": {
                "200": ok(obj(["revision", "prev_revision"], revision=INT, prev_revision=INT)),
                **errors(400, 404, 409, 503),
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
        "summary": "List keys under a prefix, with values and revisions, a page at a time",
        "description": "Keys in key order. Linearizable by default (ReadIndex on the leader, "
                       "like a GET of a key); `consistency=stale` answers from this node's "
                       "own state. A page holds at most `limit` keys (fewer once it holds "
                       "4 MiB of keys and values); `next` is the key to pass as `after` for "
                       "the next page (null: the last page). `revision` is the index the "
                       "page was read at: a watch from `revision + 1` follows every later "
                       "change.",
        "tags": ["kv"],
        "parameters": [
            query_param("prefix", {"type": "string", "pattern": PREFIX_RE.pattern},
                        "Only keys starting with this (default \"\": all keys)"),
            query_param("after", {"type": "string", "pattern": KEY_RE.pattern},
                        "Only keys sorted after this one: the `next` of the previous page"),
            limit_param(10_000, 1000),
            CONSISTENCY,
        ],
        "responses": {
            "200": ok(obj(["keys", "next", "revision"], keys=array(ITEM),
                          next=nullable(STR), revision=INT)),
            **errors(400, 503),
        },
    }},
}
