"""TLS on real processes: a throwaway CA (made with `cryptography`), one certificate per node,
and a 3-node cluster serving HTTPS and dialling its peers over WSS with mutual TLS.

The cluster elects a leader, serves writes through the Python client (verifying the nodes
against the CA) and through a follower (which forwards over HTTPS), survives a SIGKILL of the
leader (a new election over TLS), and refuses what it should: plain HTTP, a client that does
not trust the CA, a peer stream without a client certificate, and a certificate from another
CA. The cluster also has a secret and a write token: everything on at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cluster_helpers import diag, ready, wait_until

from distsync.client import Client, DistSyncError
from distsync.local import LocalCluster, http_json
from distsync.security.peer_auth import PeerAuthenticator
from distsync.transport import CLUSTER_HEADER, NODE_HEADER

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

SECRET = "tls-cluster-secret-" + "k" * 24
TOKEN = "tls-write-token-" + "t" * 24


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))


def make_ca(d: Path, cn: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    path = d / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_leaf(
    d: Path, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    """A node certificate valid for 127.0.0.1 and localhost, as server and as client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        ), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


class Pki:
    def __init__(self, d: Path):
        self.dir = d
        self.ca, ca_cert, ca_key = make_ca(d, "distsync-test-ca")
        self.nodes = {f"n{i}": make_leaf(d, f"n{i}", ca_cert, ca_key) for i in (1, 2, 3)}
        self.client = make_leaf(d, "client", ca_cert, ca_key)
        self.other_ca, other_cert, other_key = make_ca(d, "other-ca")
        self.foreign = make_leaf(d, "foreign", other_cert, other_key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def lc(pki: Pki) -> Iterator[LocalCluster]:
    node_env = {
        nid: {"DISTSYNC_TLS_CERT": str(c), "DISTSYNC_TLS_KEY": str(k)}
        for nid, (c, k) in pki.nodes.items()
    }
    env = {"DISTSYNC_TLS_CA": str(pki.ca), "DISTSYNC_CLUSTER_SECRET": SECRET,
           "DISTSYNC_WRITE_TOKEN": TOKEN}
    with LocalCluster(3, env=env, node_env=node_env, ca=pki.ca, token=TOKEN) as c:
        ready(c, 60)
        yield c


async def test_writes_reads_and_an_election_over_tls(lc: LocalCluster, pki: Pki) -> None:
    leader = ready(lc)
    async with Client(lc.addrs, ca=str(pki.ca), token=TOKEN, timeout=30) as c:
        revs = {f"tls/{i}": (await c.put(f"tls/{i}", i))["revision"] for i in range(10)}
        assert (await c.get("tls/3"))["value"] == 3
        lc.kill(leader)
        new = lc.leader(timeout=60, among=[n for n in lc.nodes if n != leader])
        assert new != leader
        revs["tls/after"] = (await c.put("tls/after", "x"))["revision"]
        for key, rev in revs.items():
            assert (await c.get(key))["revision"] == rev
    lc.start_node(leader)
    ready(lc, 60)


def test_follower_forwards_over_https(lc: LocalCluster) -> None:
    leader = ready(lc)
    follower = next(n for n in lc.nodes if n != leader)
    code, body = http_json("PUT", f"{lc.nodes[follower].url}/v1/kv/tls/fwd", {"value": 1},
                           context=lc.ssl_context, headers=lc.headers, timeout=10)
    assert code == 200, diag(lc, f"forwarded write: {code} {body}")
    assert lc.nodes[follower].url.startswith("https://")


def test_plain_http_and_untrusting_clients_fail(lc: LocalCluster) -> None:
    addr = lc.nodes["n1"].addr
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{addr}/healthz", timeout=5)
    with pytest.raises(urllib.error.URLError) as e:
        urllib.request.urlopen(f"https://{addr}/healthz", timeout=5,
                               context=ssl.create_default_context())
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)


async def test_peer_stream_needs_a_client_certificate_from_the_ca(
    lc: LocalCluster, pki: Pki
) -> None:
    url = f"wss://{lc.nodes['n1'].addr}/v1/raft/stream"
    headers = {CLUSTER_HEADER: "distsync", NODE_HEADER: "intruder"}
    no_cert = ssl.create_default_context(cafile=str(pki.ca))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(url, headers=headers, ssl=no_cert)
        assert e.value.status == 403
        foreign = ssl.create_default_context(cafile=str(pki.ca))
        foreign.load_cert_chain(*pki.foreign)
        with pytest.raises(aiohttp.ClientError):
            await s.ws_connect(url, headers=headers, ssl=foreign)
        # A certificate from the cluster's CA passes TLS, but the stream still needs the
        # cluster secret's handshake; with both it is accepted.
        member = ssl.create_default_context(cafile=str(pki.ca))
        member.load_cert_chain(*pki.client)
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(url, headers=headers, ssl=member)
        assert e.value.status == 403
        signed = PeerAuthenticator("intruder", "distsync", SECRET).client_headers("n1")
        ws = await s.ws_connect(url, headers={**headers, **signed}, ssl=member)
        await ws.close()


async def test_client_without_ca_cannot_talk(lc: LocalCluster) -> None:
    async with Client(lc.addrs[0], ssl=True, timeout=2) as c:
        with pytest.raises(DistSyncError):
            await c.status(lc.addrs[0])
    wait_until(lc, lambda: lc.status("n1") is not None, 10, "n1 still answers")
