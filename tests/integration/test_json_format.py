"""Every route answers JSON in one formatting (compact UTF-8), errors included: a client, a
log line or a `curl | diff` sees one shape whichever service answered."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from distsync.local import LocalCluster

API = Path(__file__).resolve().parents[2] / "node" / "distsync" / "api"


def _raw(method: str, url: str, body: object = None) -> tuple[int, bytes, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def _compact(raw: bytes) -> bytes:
    return json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()


def test_every_service_and_every_error_answers_compact_json(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    url = lc.nodes[lc.leader()].url
    calls = [
        ("GET", "/v1/status", None),
        ("GET", "/v1/cluster/members", None),
        ("PUT", "/v1/kv/fmt/a", {"value": {"nested": [1, "é", None]}}),
        ("GET", "/v1/kv/fmt/a", None),
        ("GET", "/v1/kv?prefix=fmt/", None),
        ("PUT", "/v1/queues/fmt-q", {}),
        ("GET", "/v1/queues", None),
        ("POST", "/v1/sessions", {"ttl_ms": 5000}),
        ("GET", "/v1/kv/fmt/none", None),          # 404 not_found
        ("GET", "/v1/no/such/route", None),        # 404 no route
        ("PUT", "/v1/kv/fmt/a", {"valu": 1}),      # 400 invalid_request
    ]
    seen = set()
    for method, path, body in calls:
        status, raw, ctype = _raw(method, url + path, body)
        assert ctype.startswith("application/json"), (path, status, ctype)
        assert raw == _compact(raw), f"{method} {path} ({status}) is not compact: {raw[:200]!r}"
        seen.add(status // 100)
    assert seen >= {2, 4}, "both answers and refusals were checked"


def test_no_api_module_encodes_json_another_way() -> None:
    """The one encoder is api/jsonio.py; a handler calling aiohttp's json_response (spaced
    separators) would bring the second formatting back."""
    offenders = [f"{p.relative_to(API)}:{i}" for p in API.rglob("*.py") if p.name != "jsonio.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "web.json_response(" in line]
    assert not offenders, offenders
