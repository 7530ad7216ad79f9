"""The API package only parses, calls and maps (DESIGN "Layout": `api/`: "no service
construction"; issue 16: one composition root).

Checked statically, with `ast`, over every module under node/distsync/api/, so that a
shortcut cannot come back unnoticed:

* no read of a node's Raft core (`node.core.*`): the node's read-only view (`leader_id`,
  `term`, `conf`, `conf_index`) is the API's way in;
* no `os.environ` / `os.getenv`: configuration is read in cli.py only, into `NodeConfig`;
* no attribute assigned on a node or a service, and no `getattr(node, ...)` guess: services
  are wired where the composition root (server.py) builds them;
* no service, cache backend or cache peer built here;
* no private attribute of a node or a service (`svc._call`): what the API needs is public.
"""

from __future__ import annotations

import ast
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "node" / "distsync" / "api"

# Names that denote a node or a service wherever they appear, and calls that build one.
_HANDLE_NAMES = {"node", "svc", "service"}
_BUILDERS = {"make_backend", "HttpPeers", "NodeView", "Registry", "KVStore"}


def _is_handle_source(expr: ast.expr) -> bool:
    """`request.app[NODE]`, `app[CACHE]`, `node.service("locks")`, `_svc(request)`."""
    if isinstance(expr, ast.Subscript):
        base = expr.value
        return (isinstance(base, ast.Name) and base.id == "app") or (
            isinstance(base, ast.Attribute) and base.attr == "app")
    if isinstance(expr, ast.Call):
        f = expr.func
        return (isinstance(f, ast.Attribute) and f.attr == "service") or (
            isinstance(f, ast.Name) and f.id == "_svc")
    return False


def _is_handle(expr: ast.expr, handles: set[str]) -> bool:
    """Whether `expr` is a node or a service, or reached from one (`node.cfg`, `svc.lease`)."""
    while True:
        if _is_handle_source(expr):
            return True
        if isinstance(expr, ast.Name):
            return expr.id in handles
        if not isinstance(expr, (ast.Attribute, ast.Subscript, ast.Call)):
            return False
        expr = expr.func if isinstance(expr, ast.Call) else expr.value


def violations(source: str, where: str) -> list[str]:
    tree = ast.parse(source, where)
    handles = set(_HANDLE_NAMES)
    for node in ast.walk(tree):  # names bound to a node or a service anywhere in the module
        if isinstance(node, ast.Assign) and _is_handle_source(node.value):
            handles |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and node.value is not None and \
                _is_handle_source(node.value) and isinstance(node.target, ast.Name):
            handles.add(node.target.id)
    out: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        out.append(f"{where}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "core" and \
                isinstance(node.ctx, ast.Load):
            flag(node, f"reads the Raft core: {ast.unparse(node)}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__") and _is_handle(node.value, handles):
            flag(node, f"reaches a private attribute: {ast.unparse(node)}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id == "os" and node.attr in ("environ", "getenv", "putenv"):
            flag(node, f"reads the environment: os.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                {a.name for a in node.names} & {"environ", "getenv", "putenv"}:
            flag(node, "imports from os the environment")
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and _is_handle(t.value, handles):
                flag(node, f"assigns on a node or service: {ast.unparse(t)}")
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "getattr" and node.args and \
                    _is_handle(node.args[0], handles):
                flag(node, f"guesses an attribute: {ast.unparse(node)}")
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else ""
            if name in _BUILDERS or name.endswith("Service"):
                flag(node, f"builds a service or its parts: {ast.unparse(f)}(...)")
    return out


def test_the_checker_sees_each_kind_of_shortcut() -> None:
    """Each rule on a line of the kind this test exists to keep out."""
    bad = '''
import os
def setup(app):
    node = app[NODE]
    svc = node.service("locks")
    svc.term_source = lambda: node.core.term
    url = os.environ.get("X") or getattr(node, "cache_url", None)
    app[CACHE] = CacheService(NodeView(node), make_backend(url))
async def handler(request):
    s = _svc(request)
    s.obs = None
    auth = getattr(request.app[NODE], "peer_auth", None)
    await s._call("n2", "state", {})
    return request.app[NODE].core.leader
'''
    found = violations(bad, "bad.py")
    kinds = sorted((int(v.split(":")[1]), v.split(": ")[1]) for v in found)
    assert kinds == [
        (6, "assigns on a node or service"), (6, "reads the Raft core"),
        (7, "guesses an attribute"), (7, "reads the environment"),
        (8, "builds a service or its parts"), (8, "builds a service or its parts"),
        (8, "builds a service or its parts"),
        (11, "assigns on a node or service"), (12, "guesses an attribute"),
        (13, "reaches a private attribute"), (14, "reads the Raft core"),
    ], found
    good = '''
def handler(request):
    node = request.app[NODE]
    resp = make_response(node.leader_id, node.term, node.conf.members())
    resp.content_type = "x"
    return resp
'''
    assert violations(good, "good.py") == []


def test_the_api_only_parses_calls_and_maps() -> None:
    found: list[str] = []
    for path in sorted(API.rglob("*.py")):
        found += violations(path.read_text(), str(path.relative_to(API.parents[1])))
    assert not found, "the api package wires or reaches past the node's view:\n" + \
        "\n".join(found)
