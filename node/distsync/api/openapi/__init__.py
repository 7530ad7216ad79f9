"""The OpenAPI 3.1 description of the HTTP API, served at `GET /v1/openapi.json`.

Built so that it cannot drift from the code:

* paths come from fragments, one per route module: the module's own `OPENAPI` dict of path
  items (and `OPENAPI_SCHEMAS` for response schemas) if it has one, else those of the module
  of the same name in this package (`openapi/kv.py` for `api/kv.py`);
  only modules in `routes.ROUTE_MODULES` are included, so the spec describes what is mounted;
* request body schemas are generated from the pydantic models the handlers validate with
  (`model_json_schema()`);
* security (bearer) and the 401/403 answers of each operation come from the auth role table
  (`api/auth.py`), and each operation names its role in `x-distsync-role`;
* every operation with a body documents 400 and 413, every one with path parameters 404,
  and the shared `Error` schema is defined once;
* a test compares the spec's (method, path) pairs with the routes the app registers.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.metadata
import re
from types import ModuleType
from typing import Any

from aiohttp import web

from ..auth import Role, required_role
from ..jsonio import json_response
from ..routes import ROUTE_MODULES
from .common import MODELS, STR, error_components, errors, obj, ok

routes = web.RouteTableDef()

OPENAPI = {
    "/v1/openapi.json": {"get": {
        "summary": "This document",
        "tags": ["meta"],
        "responses": {"200": ok(obj(["openapi", "info", "paths"], openapi=STR))},
    }},
}

METHODS = ("get", "put", "post", "delete", "patch")
# Routes that are not part of the client API: the peer protocol and node-to-node calls.
INTERNAL = re.compile(r"^/v1/(raft/|internal/)")


@routes.get("/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.StreamResponse:
    return json_response(build_spec())


def _source(module: ModuleType) -> ModuleType | None:
    """Where a route module's description lives: the module itself if it exports `OPENAPI`,
    else this package's module of the same name, else nowhere (yet)."""
    if hasattr(module, "OPENAPI"):
        return module
    try:
        return importlib.import_module(f"{__name__}.{module.__name__.rsplit('.', 1)[-1]}")
    except ModuleNotFoundError:
        return None


def _version() -> str:
    try:
        return importlib.metadata.version("distsync")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "x", path)


def _decorate(path: str, method: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    role = required_role(method.upper(), _concrete(path))
    if role == Role.OPEN:
        op["security"] = []
    else:
        op["x-distsync-role"] = role.name.lower()
        responses.update({k: v for k, v in errors(401, 403).items() if k not in responses})
    if "requestBody" in op:
        responses.update({k: v for k, v in errors(400, 413).items() if k not in responses})
    if any(p.get("name") == "Request-Id" for p in op.get("parameters", [])
           if isinstance(p, dict)):
        # Ids bound to their request (422), quotas (429, and 507 under the space alarm).
        responses.update({k: v for k, v in errors(422, 429, 507).items() if k not in responses})
    if "{" in path:  # a path parameter the route cannot match (e.g. a newline) finds no route
        responses.update({k: v for k, v in errors(404).items() if k not in responses})


def _model_schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, model in sorted(MODELS.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return out


@functools.cache
def build_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for module in [*ROUTE_MODULES, importlib.import_module(__name__)]:
        src = _source(module)
        for path, item in copy.deepcopy(getattr(src, "OPENAPI", {})).items():
            have = paths.setdefault(path, {})
            for method, op in item.items():
                if method in have:
                    raise ValueError(f"two OpenAPI fragments describe {method} {path}")
                have[method] = op
        schemas.update(getattr(src, "OPENAPI_SCHEMAS", {}))
    for path, item in paths.items():
        for method, op in item.items():
            if method in METHODS:
                _decorate(path, method, op)
    err_schemas, err_responses = error_components()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "distsync",
            "version": _version(),
            "description": "Raft-replicated locks, queues, cache and key-value register. "
                           "Errors are `{\"error\": code, \"message\": text}`. Any node "
                           "answers; followers forward leader-only requests. See README.",
        },
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A token of the role the operation's `x-distsync-role` names "
                               "(read < write < admin). Unneeded when the cluster runs "
                               "without tokens (local development only).",
            }},
            "schemas": {**err_schemas, **schemas, **_model_schemas()},
            "responses": err_responses,
        },
    }


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) pairs the spec describes."""
    return {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m in METHODS}


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) pairs the app serves to clients, in OpenAPI's notation
    (`{key:.+}` -> `{key}`): no HEAD (implied by GET), no peer or internal routes."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method in ("HEAD", "*") or INTERNAL.match(path):
            continue
        out.add((route.method, re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", path)))
    return out
