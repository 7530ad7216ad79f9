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
from pathlib import Path

import pytest

# tests/unit on sys.path: its helpers import by name (`raftsim`, `sim_background`, which
# the xdist controller drives below) under any import mode.
_UNIT = str(Path(__file__).resolve().parent / "unit")
if _UNIT not in sys.path:
    sys.path.insert(0, _UNIT)

import sim_background  # noqa: E402 - from _UNIT

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


# Under pytest-xdist (README's test command runs `-n 2`), the controller hands out whole
# files, so that a file's module-scoped fixture (a cluster, a built wheel, a browser) is
# made once and its tests run in their order; the envtest tier as one unit (its package
# fixture is a real API server); and the tests that read the simulation's background seeds
# one at a time, last, as unit/conftest.py orders them. (xdist's own `--dist loadgroup`
# cannot be used: it renames items, which pytest 9 ignores.)
_ONE_UNIT_PACKAGES = ("tests/envtest/",)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: tests of one unit run on one worker, in order."""
    if nodeid.startswith(sim_background.TAKES_BACKGROUND_SEEDS):
        return nodeid
    for pkg in _ONE_UNIT_PACKAGES:
        if nodeid.startswith(pkg):
            return pkg
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):  # noqa: ANN001, ANN201 - xdist's types
    from xdist.scheduler import LoadScopeScheduling

    # Units go out in collection order (not largest first, xdist's default for scopes): the
    # tests that wait for the background seeds must come last.
    config.option.loadscopereorder = False

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


# The simulation's CI seeds run in background processes (tests/unit/sim_background.py).
# Under pytest-xdist the controller owns them: every worker collects the whole suite, so a
# worker that started them would run them once per worker. The controller makes their
# directory, names it to each worker, and starts them once a worker has collected them.

@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # noqa: ANN001 - xdist's WorkerController
    node.workerinput["distsync_sim_dir"] = str(sim_background.directory())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:  # noqa: ANN001
    if any(i.startswith(sim_background.SEEDS_TEST) for i in ids):
        sim_background.start(sim_background.ci_seeds())


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    sim_background.stop()
