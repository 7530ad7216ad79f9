"""Chaos suite settings.

* `CHAOS_SEED`: the seed every scenario's fault schedule and workload derive from. Default: a
  fresh one per run, printed in pytest's header and in every failure with the command that
  replays it.
* `CHAOS_DURATION`: seconds of faults and load per scenario (default 25).
* `CHAOS_LOOPBACK=1`: also run the loopback variants where namespaces are available.
"""

from __future__ import annotations

import functools
import os
import sys

import pytest

from distsync.testing.chaos import new_seed
from distsync.testing.harness import netns_unavailable_reason

# Test modules import these as `chaos_helpers` (see tests/integration/conftest.py for why not
# `conftest`).
sys.modules["chaos_helpers"] = sys.modules[__name__]

_SEED = int(os.environ.get("CHAOS_SEED") or new_seed())


def pytest_report_header(config: pytest.Config) -> list[str]:
    dur = os.environ.get("CHAOS_DURATION", "25")
    return [f"chaos: CHAOS_SEED={_SEED} CHAOS_DURATION={dur} (set both to replay a run)"]


@functools.cache
def netns_reason() -> str | None:
    return netns_unavailable_reason()


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    return _SEED


@pytest.fixture(scope="session")
def chaos_duration() -> float:
    return float(os.environ.get("CHAOS_DURATION", "25"))
