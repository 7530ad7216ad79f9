"""OpenAPI fragment for api/cache.py: the coherent cache (values are raw bytes)."""

from __future__ import annotations

from ..cache import CACHE_KEY_RE, MAX_TTL_S, FillBody
from .common import BOOL, INT, OBJECT, STR, body, errors, obj, ok, path_param, query_param

# Every key is readable: the statistics route is GET /v1/cache, which no key can shadow.
KEY = path_param("key", CACHE_KEY_RE.pattern,
                 "1-512 characters of A-Z a-z 0-9 . _ - : @")
_BYTES = {"type": "string", "format": "binary"}

OPENAPI = {
    "/v1/cache": {"get": {
        "summary": "This node's cache statistics (hits, misses, lines by state, bytes)",
        "tags": ["cache"],
        "responses": {"200": ok(OBJECT), **errors(503)},
    }},
    "/v1/cache/{key}": {
        "get": {
            "summary": "Read a value (raw bytes); `X-Cache-Version`, `X-Cache` (hit/miss) and "
                       "`X-Cache-State` (M/E/S) describe it",
            "tags": ["cache"],
            "parameters": [KEY],
            "responses": {
                "200": {"description": "The value",
                        "content": {"application/octet-stream": {"schema": _BYTES}}},
                **errors(400, 404, 503),
            },
        },
        "put": {
            "summary": "Write a value; acknowledged once every other copy is invalidated and "
                       "the value is in the backend",
            "tags": ["cache"],
            "parameters": [KEY, query_param(
                "ttl", {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_S},
                "Seconds to live"),
                query_param("nx", {"type": "string", "enum": ["1", "true"]},
                            "Write only if the key is absent (409 condition_failed if not)"),
                query_param("if_version", {"type": "integer", "minimum": 0},
                            "Write only if the key's version is this (0: absent)")],
            "requestBody": {"required": True,
                            "content": {"application/octet-stream": {"schema": _BYTES}}},
            "responses": {"200": ok(obj(["key", "version", "state"], key=STR, version=INT,
                                        state=STR)),
                          **errors(400, 409, 503)},
        },
        "delete": {
            "summary": "Delete a value everywhere",
            "tags": ["cache"],
            "parameters": [KEY],
            "responses": {"200": ok(obj(["key", "deleted"], key=STR, deleted=BOOL,
                                        version=INT)),
                          **errors(400, 503)},
        },
    },
    "/v1/cache/{key}/fill": {"post": {
        "summary": "Single flight of a miss (get_or_set), decided at the key's home: the value "
                   "if the backend has it, else a fill lease to one caller (it loads and PUTs) "
                   "and `wait` to the others while that lease lasts; `cancel` gives it back",
        "tags": ["cache"],
        "parameters": [KEY],
        "requestBody": body(FillBody, required=False),
        "responses": {
            "200": {"description": "The value (raw bytes), or the fill decision",
                    "content": {
                        "application/octet-stream": {"schema": _BYTES},
                        "application/json": {"schema": obj(
                            ["key", "fill"], key=STR, fill=STR, token=STR, lease_ms=INT,
                            retry_ms=INT)}}},
            **errors(400, 503),
        },
    }},
    "/v1/cache/{key}/state": {"get": {
        "summary": "Coherence state of a key: this node's line, another member's "
                   "(`node=<id>`), or every member's and the home directory (`node=all`)",
        "tags": ["cache"],
        "parameters": [KEY, query_param("node", STR)],
        "responses": {"200": ok(obj(["key"], key=STR)), **errors(400, 503)},
    }},
}
