"""Building blocks for the OpenAPI fragments: request bodies from pydantic models, the shared
error responses, parameters. A fragment that uses `body(Model)` registers the model, so the
aggregator puts exactly the schemas that the validation code uses into the spec."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Request models referenced by fragments, by name; filled as fragments are imported.
MODELS: dict[str, type[BaseModel]] = {}

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(model: type[BaseModel], required: bool = True, description: str = "") -> dict[str, Any]:
    """A JSON request body validated by `model` (its JSON Schema is generated from it)."""
    MODELS[model.__name__] = model
    out: dict[str, Any] = {"required": required, "content": {JSON: {"schema": ref(model.__name__)}}}
    if description:
        out["description"] = description
    return out


def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def obj(required: list[str] | tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    """An object schema; the answer may carry more fields than listed (forward compatible)."""
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJECT: dict[str, Any] = {"type": "object"}  # any object: its fields are not described
ANY: dict[str, Any] = {}


def array(items: dict[str, Any] | None = None) -> dict[str, Any]:
    """An array schema, of `items` if given."""
    return {"type": "array"} if items is None else {"type": "array", "items": items}


# Error responses, referenced as "#/components/responses/<name>".
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid JSON, body, path, query or header (`invalid_*` codes)"),
    401: ("Unauthorized", "Missing or invalid bearer token (`unauthorized`); the answer has "
          "`WWW-Authenticate: Bearer`"),
    403: ("Forbidden", "The token's role is too low for this route (`forbidden`)"),
    404: ("NotFound", "No such resource, or no such route (`not_found`)"),
    409: ("Conflict", "The request conflicts with the current state (a failed compare, a "
          "membership change in progress, a lock not held, ...)"),
    410: ("Compacted", "A watch's `start_revision` is older than the node's history "
          "(`compacted`, with `compact_revision` and `oldest_revision`: re-read, then watch "
          "from `oldest_revision` or later)"),
    413: ("TooLarge", "Body, value or message over its limit (`body_too_large`, "
          "`value_too_large`, `message_too_large`)"),
    429: ("TooMany", "Over a quota (`quota_exceeded`, with `limit` naming it), a queue's "
          "size (`queue_full`) or a node's watchers, in all or per client (`too_many_watchers`, "
          "with `limit` naming it)"),
    422: ("RequestIdMismatch", "The Request-Id was first used for a different request "
          "(`request_id_mismatch`); nothing was applied"),
    507: ("NoSpace", "The state has reached max_state_bytes (`quota_exceeded`, NOSPACE alarm): "
          "writes that add state are refused until space is freed"),
    503: ("Unavailable", "Retryable: `no_leader`, `not_leader`, `leader_unreachable`, "
          "`unavailable`, `not_ready`, or a backend that cannot be reached; retry with the "
          "same Request-Id"),
}


def errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/{ERROR_RESPONSES[c][0]}"} for c in codes}


def error_components() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schemas, responses) for the shared error shape."""
    schemas = {
        "Error": {
            "type": "object",
            "description": "Every error: `error` is the machine-readable code, `message` "
                           "says what to do; some codes carry more fields (e.g. `leader`).",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "examples": ["invalid_request"]},
                "message": {"type": "string"},
                "details": array(obj(field=STR, problem=STR)),
            },
        }
    }
    responses = {}
    for code, (name, text) in ERROR_RESPONSES.items():
        resp: dict[str, Any] = {"description": text, "content": {JSON: {"schema": ref("Error")}}}
        if code == 401:
            resp["headers"] = {"WWW-Authenticate": {"schema": STR, "required": True}}
        responses[name] = resp
    return schemas, responses


REQUEST_ID = {
    "name": "Request-Id",
    "in": "header",
    "required": False,
    "description": "Makes a mutation idempotent: a retry with the same id and the same "
                   "request returns the first result and changes nothing; the same id with "
                   "another request (method, path, query, canonical body) gets 422 "
                   "`request_id_mismatch`. Scoped to the bearer token and `Client-Id`. "
                   "1-128 printable characters.",
    "schema": {"type": "string", "pattern": "^[!-~]([ -~]{0,126}[!-~])?$"},
}

CONSISTENCY = {
    "name": "consistency",
    "in": "query",
    "required": False,
    "description": "`linearizable` (default: ReadIndex on the leader) or `stale` (this "
                   "node's own state, at once).",
    "schema": {"type": "string", "enum": ["linearizable", "stale"]},
}


def path_param(name: str, pattern: str, description: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name, "in": "path", "required": True,
        "schema": {"type": "string", "pattern": pattern},
    }
    if description:
        p["description"] = description
    return p


def query_param(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        p["description"] = description
    return p


def limit_param(maximum: int, default: int) -> dict[str, Any]:
    """The `limit` query parameter of a listing: 1 to `maximum` entries, `default` if absent."""
    return query_param("limit", {"type": "integer", "minimum": 1, "maximum": maximum,
                                 "default": default})


def wait_continuation(tag: str, name: dict[str, Any], grant: str,
                      write_errors: dict[str, Any]) -> dict[str, Any]:
    """`GET .../{name}/waits/{wait_id}` (api/longpoll.py) for a service whose acquire
    answers `grant` (a schema name) or `waiting`."""
    return {"get": {
        "summary": "Continue the long poll of an acquire that answered `waiting`",
        "tags": [tag],
        "parameters": [name, path_param("wait_id", "^[0-9]{1,18}$")],
        "responses": {"200": ok(ref(grant)), **errors(400), **write_errors},
    }}
