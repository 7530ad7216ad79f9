"""OpenAPI fragment for api/watch.py: watches on kv keys and prefixes."""

from __future__ import annotations

from ..schemas import KEY_RE
from ..watch import NDJSON, PREFIX_RE
from .common import ANY, INT, STR, errors, obj, query_param

EVENT = {
    "oneOf": [
        obj(["type", "key", "revision", "prev_revision"],
            type={"enum": ["put", "delete"]}, key=STR, value=ANY, revision=INT,
            prev_revision=INT),
        obj(["type", "revision"], type={"const": "progress"}, revision=INT),
        obj(["type", "reason", "revision"], type={"const": "canceled"},
            reason={"enum": ["slow_consumer", "compacted", "shutdown"]}, revision=INT),
    ],
}

OPENAPI = {
    "/v1/watch": {"get": {
        "summary": "Watch a key or a prefix: newline-delimited JSON events in revision order "
                   "from `start_revision`, then live, with progress lines while nothing "
                   "matches (any node, from its applied state)",
        "description": "Give exactly one of `key` and `prefix`. Lines: `put` and `delete` "
                       "events (`revision` is the kv revision), `progress` (every matching "
                       "event up to `revision` was sent; the first line is "
                       "`start_revision - 1`), and a last `canceled` line with a `reason` "
                       "(`slow_consumer`, `compacted`, `shutdown`) if the node ends the "
                       "stream. Several events may share a revision (a session's end "
                       "deletes all its ephemeral keys at once): resume from the last "
                       "revision seen and skip the keys already seen at it (or from the last "
                       "`progress` revision + 1). 410 `compacted` (with "
                       "`oldest_revision`) when `start_revision` is older than this node's "
                       "history; 429 `too_many_watchers` (with `limit`: `max_watchers` or "
                       "`max_watchers_per_client`) when the node serves its maximum, in all or "
                       "for this client (its bearer token and `Client-Id`, else its address).",
        "tags": ["watch"],
        "parameters": [
            query_param("key", {"type": "string", "pattern": KEY_RE.pattern},
                        "Watch exactly this key"),
            query_param("prefix", {"type": "string", "pattern": PREFIX_RE.pattern},
                        "Watch every key starting with this (\"\": all keys)"),
            query_param("start_revision", {"type": "integer", "minimum": 1,
                                           "maximum": (1 << 63) - 1},
                        "First revision to send (inclusive); default: the next change"),
            query_param("progress_ms", {"type": "integer", "minimum": 10,
                                        "maximum": 3_600_000, "default": 5000},
                        "Progress line interval while nothing matches"),
            query_param("linearizable", {"type": "string",
                                         "enum": ["true", "false", "1", "0"]},
                        "Pass a ReadIndex barrier before starting (the default start is then "
                        "after every write committed before the request)"),
            query_param("timeout_ms", {"type": "integer", "minimum": 1,
                                       "maximum": 86_400_000},
                        "End the stream (cleanly, after a whole line) after this long"),
        ],
        "responses": {
            "200": {"description": "The stream (chunked)",
                    "content": {NDJSON: {"schema": EVENT}}},
            **errors(400, 410, 429, 503),
        },
    }},
}
