"""What the suites need beyond pip, in one place.

Some tests drive real programs from Debian: `redis-server` (the cache suites), `ip` and `nft`
(the chaos suite's network namespaces), `etcd` (the benchmark's peer adapter), `chromium` and
`chromedriver` (the operator console's browser tests). Where one is
missing, its tests skip with a message naming the program and the one install line README
gives; under CI (`CI` set, as `.ci/run` runs) they fail instead, because CI must run them all.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

# Test modules import this as `needs_tools` (see tests/integration/conftest.py for why not
# `conftest`).
sys.modules["needs_tools"] = sys.modules[__name__]

APT_LINE = ("apt-get install -y redis-server nftables iproute2 etcd-server openssl curl "
            "util-linux chromium chromium-driver")
PACKAGE_OF = {"redis-server": "redis-server", "ip": "iproute2", "nft": "nftables",
              "etcd": "etcd-server", "chromium": "chromium", "chromedriver": "chromium-driver"}


def missing_tool_message(tool: str, why: str) -> str:
    return (f"`{tool}` is not installed (Debian package {PACKAGE_OF.get(tool, tool)}; {why}). "
            f"Install what the tests need with: {APT_LINE}")


def require_tool(tool: str, why: str) -> None:
    """Skip the calling test when `tool` is not on PATH (fail under CI)."""
    if shutil.which(tool):
        return
    msg = missing_tool_message(tool, why)
    if os.environ.get("CI"):
        pytest.fail(f"{msg} [CI is set: every test must run]")
    pytest.skip(msg)
