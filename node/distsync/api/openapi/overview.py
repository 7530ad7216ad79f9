"""OpenAPI fragment for api/overview.py: the console's views of the whole cluster."""

from __future__ import annotations

from .common import BOOL, INT, OBJECT, STR, array, nullable, obj, ok, ref

OPENAPI = {
    "/v1/auth/whoami": {"get": {
        "summary": "The role of the presented bearer token (null: missing or unknown). Open: "
                   "answers without a token; `auth: false` when client auth is off",
        "tags": ["meta"],
        "security": [],
        "responses": {"200": ok(obj(["auth", "role"], auth=BOOL, role=nullable(
            {"type": "string", "enum": ["read", "write", "admin"]})))},
    }},
    "/v1/cluster/nodes": {"get": {
        "summary": "Every member's own status and cache statistics, fetched by this node "
                   "with the caller's token (1 s per member); unreachable members carry "
                   "`error` and `last_seen_ms`",
        "tags": ["cluster"],
        "responses": {"200": ok(obj(
            ["via", "leader", "term", "nodes"], via=STR, leader=nullable(STR), term=INT,
            now_ms=INT, nodes=array(obj(
                ["id", "addr", "voter", "reachable"], id=STR, addr=STR, voter=BOOL,
                reachable=BOOL, status=ref("Status"), cache=OBJECT, error=STR,
                last_seen_ms=nullable(INT),
            )),
        ))},
    }},
}
