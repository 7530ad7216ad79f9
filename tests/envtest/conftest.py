"""Fixtures of the envtest tier: a real kube-apiserver, etcd and kube-controller-manager on
127.0.0.1 (scripts/envtest.sh), the stand-in kubelet (kubelet.py) and the real helm and
kubectl. One API server per test session; each test works in a namespace of its own.

The tier skips, saying why, where it cannot run (under CI it fails instead): binaries not
built (`scripts/envtest.sh build`, about 5 minutes once; CI builds them), no etcd, not root
(pods run in mount namespaces), or no helm/kubectl.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import adapt  # noqa: E402
from kubelet import StandInKubelet  # noqa: E402
from tier import ADMISSION, Envtest, free_ports, skip_or_fail, skip_reason, tools_dir, wait_for  # noqa: E402


@pytest.fixture(scope="package")
def envtest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envtest]:
    reason = skip_reason()
    if reason:
        skip_or_fail(reason)
    tools = tools_dir()
    run = tmp_path_factory.mktemp("envtest")
    etcd, peer, apiserver, kcm = free_ports(4)
    env = {**os.environ, "RUN": str(run), "ETCD_PORT": str(etcd), "ETCD_PEER_PORT": str(peer),
           "APISERVER_PORT": str(apiserver), "KCM_PORT": str(kcm), "ADMISSION": ADMISSION,
           "PATH": f"{tools}:{os.environ.get('PATH', '')}"}
    env.pop("KUBECONFIG", None)
    et = Envtest(run, apiserver, env, tools)
    try:
        et.script("start")
    except RuntimeError:
        et.script("stop")
        raise
    try:
        yield et
    finally:
        et.script("stop")


@pytest.fixture(scope="package")
def kubelet(envtest: Envtest) -> Iterator[StandInKubelet]:
    k = StandInKubelet(envtest.api(), envtest.run / "kubelet", envtest.port,
                       operator_argv=adapt.operator_argv).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, envtest: Envtest,
              kubelet: StandInKubelet) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount) named after the test; its pods'
    processes are stopped at the end."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    ns = f"{base[:40].rstrip('-')}-{int(time.time() * 1000) % 100000}"
    envtest.kubectl("create", "namespace", ns)
    wait_for(f"namespace {ns}'s default ServiceAccount",
             lambda: envtest.kubectl("-n", ns, "get", "sa", "default", check=False)
             .returncode == 0, 30)
    try:
        yield ns
    finally:
        kubelet.forget(ns)


@pytest.fixture(scope="package")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adapt.chart_copy(tmp_path_factory.mktemp("chart"))
