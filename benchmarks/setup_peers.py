#!/usr/bin/env python3
"""Install the peers the side-by-side benchmark (benchmarks/run.py) compares distsync with:
etcd and Redis from Debian packages, PySyncObj and matplotlib from PyPI.

Idempotent and quick when everything is there: it checks first and only then runs
`apt-get update` (once) and installs what is missing. Prints what it installed.

    python benchmarks/setup_peers.py          # as root, or with sudo available
    python benchmarks/setup_peers.py --check  # only report; exit 1 if something is missing

The pip versions match the `bench` extra in pyproject.toml (`pip install -e '.[bench]'`).
Note: on a host running systemd, the Debian packages start their own etcd (port 2379) and
redis (6379) services; the benchmark starts its own servers on free ports and ignores them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys

# Debian package -> the binary the adapters launch.
APT_PACKAGES = {"etcd-server": "/usr/bin/etcd", "redis-server": "redis-server"}
# PyPI distribution -> requirement (same as the `bench` extra).
PIP_PACKAGES = {"pysyncobj": "pysyncobj>=0.3.14", "matplotlib": "matplotlib>=3.7"}


def missing_apt() -> list[str]:
    return [pkg for pkg, binary in APT_PACKAGES.items() if shutil.which(binary) is None]


def missing_pip() -> list[str]:
    out = []
    for dist in PIP_PACKAGES:
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out.append(dist)
    return out


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def install_apt(packages: list[str]) -> None:
    """`apt-get update` then install, as root or through sudo (no prompt in the middle)."""
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            sys.exit(f"need root (or sudo) to apt-get install {' '.join(packages)}")
        prefix = ["sudo"]
    os.environ["DEBIAN_FRONTEND"] = "noninteractive"
    _run(prefix + ["apt-get", "update"])
    _run(prefix + ["apt-get", "install", "-y", "--no-install-recommends", *packages])


def install_pip(dists: list[str]) -> None:
    _run([sys.executable, "-m", "pip", "install", *(PIP_PACKAGES[d] for d in dists)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="report what is missing, install nothing")
    args = ap.parse_args()

    apt, pip = missing_apt(), missing_pip()
    if not apt and not pip:
        print("peers present: " + ", ".join([*APT_PACKAGES, *PIP_PACKAGES]))
        return 0
    if args.check:
        print("missing: " + ", ".join(apt + pip))
        return 1
    if apt:
        install_apt(apt)
    if pip:
        install_pip(pip)
    still = missing_apt() + missing_pip()
    if still:
        print("still missing after install: " + ", ".join(still))
        return 1
    print("installed: " + ", ".join(apt + pip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
