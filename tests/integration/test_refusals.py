"""Every refusal is JSON, from the first byte, and no client can hold a node's connections or
fill its log (issue 15 items 6-9), on a real 3-node cluster with short timeouts and a small
per-client connection cap. Requests are written on raw sockets so that they can be malformed
in ways an HTTP library would not allow, and come from 127.0.0.9 so that the per-client cap
counts only this test's connections (peers and other tests use 127.0.0.1).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import diag, ready, wait_until

from distsync.local import LocalCluster

HEADER_TIMEOUT, IDLE_TIMEOUT, BODY_TIMEOUT, PER_CLIENT = 1, 3, 1, 12
CLIENT_IP = "127.0.0.9"


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    args = ["--header-timeout", str(HEADER_TIMEOUT), "--idle-timeout", str(IDLE_TIMEOUT),
            "--body-timeout", str(BODY_TIMEOUT),
            "--max-connections-per-client", str(PER_CLIENT)]
    with LocalCluster(3, extra_args=args) as c:
        ready(c)
        yield c


def connect(lc: LocalCluster, nid: str = "n1", timeout: float = 10.0) -> socket.socket:
    host, port = lc.nodes[nid].addr.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((CLIENT_IP, 0))
    s.connect((host, int(port)))
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one whole response (the node closes the connection after a refusal, or sends a
    Content-Length)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    want = int(headers.get("content-length", "-1"))
    while want < 0 or len(body) < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def send_raw(lc: LocalCluster, data: bytes, nid: str = "n1") -> tuple[int, dict[str, str], Any]:
    with connect(lc, nid) as s:
        s.sendall(data)
        status, headers, body = read_response(s)
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = body
    return status, headers, parsed


def assert_json_error(got: tuple[int, dict[str, str], Any], status: int, error: str) -> None:
    code, headers, body = got
    assert code == status, got
    assert headers.get("content-type", "").startswith("application/json"), got
    assert isinstance(body, dict) and body.get("error") == error and body.get("message"), got


def log_text(lc: LocalCluster, nid: str) -> str:
    return lc.nodes[nid].log_path.read_text(errors="replace")


MALFORMED = [
    ("url too long", b"GET /v1/kv/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     414, "uri_too_long"),
    ("bad method", b"G(T /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_method"),
    ("control char in header", b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
     400, "invalid_header"),
    ("header too long", b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000
     + b"\r\n\r\n", 431, "header_too_large"),
    ("not http", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400, "invalid_method"),
]


@pytest.mark.parametrize(("name", "data", "status", "error"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_json(lc: LocalCluster, name: str, data: bytes, status: int,
                                     error: str) -> None:
    assert_json_error(send_raw(lc, data), status, error)


def test_refusals_log_at_info_and_rate_limited(lc: LocalCluster) -> None:
    """Many malformed requests: no ERROR and no traceback in the log, and at most a burst
    of INFO lines (plus the line that says how many were left out)."""
    nid = "n2"
    before = len(log_text(lc, nid).splitlines())
    for _ in range(60):
        send_raw(lc, MALFORMED[2][1], nid)
    lines = log_text(lc, nid).splitlines()[before:]
    assert not [line for line in lines if "ERROR" in line or "Traceback" in line], lines[:20]
    refusals = [line for line in lines if "refused a malformed request" in line]
    assert 1 <= len(refusals) <= 11, len(refusals)


def test_large_content_length_is_refused_from_the_header_alone(lc: LocalCluster) -> None:
    """413 at once, before any of the body is sent, and the connection is closed."""
    with connect(lc) as s:
        s.sendall(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")
        t0 = time.monotonic()
        status, headers, body = read_response(s)
        assert time.monotonic() - t0 < 5
        assert status == 413 and json.loads(body)["error"] == "body_too_large", body
        assert headers.get("connection", "").lower() == "close", headers
        assert s.recv(10) == b""


def _metric(lc: LocalCluster, nid: str, prefix: str) -> float:
    status, _, text = send_raw(lc, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close"
                               b"\r\n\r\n", nid)
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith(prefix))


def test_body_that_never_comes_is_a_timeout_not_a_500(lc: LocalCluster) -> None:
    """A client that declares a body and stalls gets 408 `body_timeout`; one that hangs up
    mid-body is no 500 and no ERROR either."""
    nid = "n3"
    fives = 'distsync_http_requests_total{route="/v1/kv/{key}",status="500"}'
    before_500 = _metric(lc, nid, fives)
    with connect(lc, nid) as s:
        s.sendall(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"value\":")
        status, _, body = read_response(s)
        assert status == 408 and json.loads(body)["error"] == "body_timeout", body
    lines_before = len(log_text(lc, nid).splitlines())
    s = connect(lc, nid)
    s.sendall(b"PUT /v1/kv/gone HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"value\":")
    s.close()
    four = 'distsync_http_requests_total{route="/v1/kv/{key}",status="400"}'
    base_400 = _metric(lc, nid, four)
    s = connect(lc, nid)
    s.sendall(b"PUT /v1/kv/gone HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"value\":")
    s.close()
    wait_until(lc, lambda: _metric(lc, nid, four) > base_400, 10,
               "the broken-off body to be counted as a 400")
    assert _metric(lc, nid, fives) == before_500
    lines = log_text(lc, nid).splitlines()[lines_before:]
    assert not [line for line in lines if "ERROR" in line or "Traceback" in line], lines


def test_slow_headers_are_cut_off(lc: LocalCluster) -> None:
    """A header block that has started must be complete within the header timeout; the node
    closes the connection (recv sees EOF) instead of holding it."""
    socks = [connect(lc) for _ in range(5)]
    try:
        t0 = time.monotonic()
        for s in socks:
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        for s in socks:
            assert s.recv(100) == b"", "the node answered instead of closing"
        took = time.monotonic() - t0
        assert HEADER_TIMEOUT * 0.8 <= took < HEADER_TIMEOUT + 8, took
    finally:
        for s in socks:
            s.close()


def test_idle_connections_are_closed(lc: LocalCluster) -> None:
    with connect(lc) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert IDLE_TIMEOUT * 0.8 <= time.monotonic() - t0 < IDLE_TIMEOUT + 8


def test_connections_per_client_are_capped(lc: LocalCluster) -> None:
    """Past the cap a connection gets 503 `too_many_connections` in JSON at once; another
    client address is not held back, and closing connections makes room again."""
    nid = "n1"
    held = []
    try:
        for _ in range(PER_CLIENT):
            s = connect(lc, nid)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200
            held.append(s)
        with connect(lc, nid) as extra:
            code, _, body = read_response(extra)
            assert code == 503 and json.loads(body)["error"] == "too_many_connections", body
        other = socket.create_connection(
            tuple(lc.nodes[nid].addr.rsplit(":", 1)), timeout=5,  # type: ignore[arg-type]
            source_address=("127.0.0.10", 0))
        with other:
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(other)[0] == 200
    finally:
        for s in held:
            s.close()

    def room() -> bool:
        with connect(lc, nid) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return read_response(s)[0] == 200

    wait_until(lc, room, 10, "room for a new connection once the others closed")


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_json_is_invalid_json(lc: LocalCluster, depth: int) -> None:
    body = b"{\"value\":" + b"[" * depth + b"]" * depth + b"}"
    for nid in lc.nodes:
        req = (b"PUT /v1/kv/deep HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
               + b"\r\n\r\n" + body)
        assert_json_error(send_raw(lc, req, nid), 400, "invalid_json")
    ok = b"{\"value\":" + b"[" * 60 + b"]" * 60 + b"}"
    req = (b"PUT /v1/kv/deep HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Connection: close\r\nContent-Length: " + str(len(ok)).encode() + b"\r\n\r\n" + ok)
    assert send_raw(lc, req, ready(lc))[0] == 200, diag(lc, "60 levels must pass")


@pytest.mark.parametrize("key", ["a%0Ab", "a%0A", "%0D", "a%09b", "a%00b"])
def test_keys_with_control_characters_are_invalid_key(lc: LocalCluster, key: str) -> None:
    for method in (b"PUT", b"GET", b"DELETE"):
        req = (method + b" /v1/kv/" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: 11"
               b"\r\n\r\n{\"value\":1}")
        assert_json_error(send_raw(lc, req), 400, "invalid_key")
