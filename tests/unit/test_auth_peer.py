"""The peer handshake (security/peer_auth.py) as a pure check: good handshakes pass; a wrong
secret, another cluster, a forged sender, a handshake aimed at another node, clock skew and
replays are refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from distsync.security.peer_auth import AUTH_HEADER, REASONS, PeerAuthenticator, read_secret

SECRET = "s" * 32


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def pair(
    secret_a: str = SECRET, secret_b: str = SECRET, clock_a: Clock | None = None,
    clock_b: Clock | None = None, cluster_b: str = "c",
) -> tuple[PeerAuthenticator, PeerAuthenticator]:
    a = PeerAuthenticator("a", "c", secret_a, clock=clock_a or Clock())
    b = PeerAuthenticator("b", cluster_b, secret_b, clock=clock_b or Clock())
    return a, b


def test_good_handshake_is_accepted_once() -> None:
    a, b = pair()
    h = a.client_headers("b")[AUTH_HEADER]
    assert b.check("a", h) is None
    assert b.check("a", h) == "replay"


def test_each_handshake_is_fresh() -> None:
    a, b = pair()
    h1, h2 = a.client_headers("b")[AUTH_HEADER], a.client_headers("b")[AUTH_HEADER]
    assert h1 != h2
    assert b.check("a", h1) is None and b.check("a", h2) is None


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong secret", "bad_mac"),
        ("other cluster", "bad_mac"),
        ("forged sender", "bad_mac"),
        ("meant for another node", "bad_mac"),
        ("missing", "missing"),
        ("garbage", "malformed"),
        ("mac tampered", "bad_mac"),
        ("no sender", "malformed"),
    ],
)
def test_refusals(case: str, reason: str) -> None:
    a, b = pair(
        secret_a="w" * 32 if case == "wrong secret" else SECRET,
        cluster_b="other" if case == "other cluster" else "c",
    )
    target = "z" if case == "meant for another node" else "b"
    h: str | None = a.client_headers(target)[AUTH_HEADER]
    sender: str | None = "x" if case == "forged sender" else "a"
    if case == "missing":
        h = None
    elif case == "garbage":
        h = "v1 hello"
    elif case == "mac tampered":
        assert h is not None
        h = h[:-1] + ("0" if h[-1] != "0" else "1")
    elif case == "no sender":
        sender = None
    assert b.check(sender, h) == reason
    assert reason in REASONS  # a metric label that exists from the start


@pytest.mark.parametrize(("offset", "ok"), [(-61, False), (-59, True), (59, True), (61, False)])
def test_clock_skew_window(offset: float, ok: bool) -> None:
    ca, cb = Clock(), Clock()
    a, b = pair(clock_a=ca, clock_b=cb)
    ca.t += offset
    assert b.check("a", a.client_headers("b")[AUTH_HEADER]) == (None if ok else "clock_skew")


def test_replay_refused_until_the_timestamp_is_stale_and_memory_is_bounded() -> None:
    ca, cb = Clock(), Clock()
    a, b = pair(clock_a=ca, clock_b=cb)
    h = a.client_headers("b")[AUTH_HEADER]
    assert b.check("a", h) is None
    for step in (30, 30, 0.5):
        cb.t += step
        assert b.check("a", h) in ("replay", "clock_skew")
    assert b.check("a", h) == "clock_skew"
    # Remembered nonces are forgotten once their timestamps could no longer pass.
    cb.t += 200
    ca.t = cb.t
    assert b.check("a", a.client_headers("b")[AUTH_HEADER]) is None
    assert len(b._seen) == 1


def test_require_peer_cert() -> None:
    a = PeerAuthenticator("a", "c", SECRET)
    b = PeerAuthenticator("b", "c", SECRET, require_peer_cert=True)
    h = a.client_headers("b")[AUTH_HEADER]
    assert b.check("a", h, has_cert=False) == "no_client_cert"
    assert b.check("a", h, has_cert=True) is None
    tls_only = PeerAuthenticator("b", "c", None, require_peer_cert=True)
    assert tls_only.client_headers("a") == {}
    assert tls_only.check("a", None, has_cert=True) is None
    assert tls_only.check("a", None, has_cert=False) == "no_client_cert"


def test_weak_or_missing_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        PeerAuthenticator("a", "c", "short")
    with pytest.raises(ValueError):
        PeerAuthenticator("a", "c", None)


def test_read_secret(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("  from-a-file\n")
    assert read_secret(None, str(f), "x") == "from-a-file"
    assert read_secret(" inline ", None, "x") == "inline"
    assert read_secret("", "", "x") == ""
    with pytest.raises(ValueError, match="not both"):
        read_secret("inline", str(f), "x")
    with pytest.raises(ValueError, match="cannot read"):
        read_secret(None, str(tmp_path / "nope"), "x")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_secret(None, str(tmp_path / "empty"), "x")


async def test_internal_http_routes_need_the_peer_handshake(tmp_path: Path) -> None:
    """Node-to-node HTTP under /v1/internal/ is checked by the peer authenticator: refused
    without the handshake; accepted with it; a handshake replayed on a new connection is
    refused, while later calls on a connection that proved itself need no fresh nonce."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from distsync.api.app import create_app
    from distsync.node import NodeConfig
    from distsync.server import build_cache, build_node

    node = build_node(NodeConfig(node_id="b", data_dir=str(tmp_path), cluster_secret=SECRET))
    app = create_app(node, build_cache(node))

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_post("/v1/internal/test/echo", echo)
    a = PeerAuthenticator("a", "distsync", SECRET)
    try:
        async with TestServer(app) as server:
            url = str(server.make_url("/v1/internal/test/echo"))
            signed = a.request_headers("b")
            async with aiohttp.ClientSession() as s:
                async with s.post(url) as r:
                    assert r.status == 403 and (await r.json())["error"] == "forbidden"
                for _ in range(3):  # same connection: the same headers pass again
                    async with s.post(url, headers=signed) as r:
                        assert r.status == 200
            async with aiohttp.ClientSession() as s:  # a new connection: a replay
                async with s.post(url, headers=signed) as r:
                    assert r.status == 403
                async with s.post(url, headers=a.request_headers("b")) as r:
                    assert r.status == 200
                stranger = PeerAuthenticator("a", "distsync", "w" * 32)
                async with s.post(url, headers=stranger.request_headers("b")) as r:
                    assert r.status == 403
    finally:
        node._io.close()
        node.storage.close()
