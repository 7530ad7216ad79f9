"""The OpenAPI description is complete and true to the code: it is a valid OpenAPI 3.1
document; its (method, path) pairs are exactly the client routes the app registers (a route
without a description fails here); request bodies are the handlers' pydantic schemas; each
operation's security and 401/403 answers follow the auth role table; and a node serves it at
/v1/openapi.json without a token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from distsync.api import openapi
from distsync.api.app import create_app
from distsync.api.auth import Role, required_role
from distsync.api.openapi.common import MODELS
from distsync.node import Node, NodeConfig
from distsync.server import build_cache, build_node

TOKEN = "openapi-test-token-" + "x" * 16


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = build_node(NodeConfig(node_id="n1", data_dir=str(tmp_path), admin_token=TOKEN))
    yield n
    n._io.close()
    n.storage.close()


@pytest.fixture
def spec() -> dict:
    return openapi.build_spec()


def test_spec_is_valid_openapi_31(spec: dict) -> None:
    from openapi_spec_validator import validate

    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_spec_covers_exactly_the_registered_routes(node: Node, spec: dict) -> None:
    app = create_app(node, build_cache(node))
    served, described = openapi.app_operations(app), openapi.spec_operations(spec)
    assert served - described == set(), "routes without an OpenAPI description (add them to " \
        "the module's OPENAPI or node/distsync/api/openapi/<module>.py)"
    assert described - served == set(), "OpenAPI describes routes the app does not serve"
    assert ("PUT", "/v1/kv/{key}") in served and ("GET", "/v1/openapi.json") in served


def test_an_undescribed_route_is_caught(node: Node, spec: dict) -> None:
    app = create_app(node, build_cache(node))

    async def h(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/v1/kv/{key:.+}/touch", h)
    missing = openapi.app_operations(app) - openapi.spec_operations(spec)
    assert missing == {("POST", "/v1/kv/{key}/touch")}


def test_request_bodies_are_the_pydantic_schemas(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    used = set()
    for item in spec["paths"].values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref")
            if ref:
                used.add(ref.rsplit("/", 1)[-1])
    assert {"KVPut", "KVDelete", "MemberAdd", "TransferLeader"} <= used
    for name in used:
        want = MODELS[name].model_json_schema(ref_template="#/components/schemas/{model}")
        want.pop("$defs", None)
        assert schemas[name] == want, name


def test_security_follows_the_role_table(spec: dict) -> None:
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "Error" in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            role = required_role(method.upper(), path.replace("{", "").replace("}", ""))
            if role == Role.OPEN:
                assert op["security"] == [], (method, path)
            else:
                assert op["x-distsync-role"] == role.name.lower(), (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= set(op["responses"]), (method, path)
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert resp["$ref"].startswith("#/components/responses/"), (method, path)


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(node, build_cache(node)))) as c:
        yield c


async def test_served_without_a_token(client: TestClient, spec: dict) -> None:
    r = await client.get("/v1/openapi.json")
    assert r.status == 200
    assert await r.json() == spec
