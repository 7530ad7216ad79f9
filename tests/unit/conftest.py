"""Makes the paper tests' step harness (tests/unit/raftsim.py) importable as `raftsim` under any pytest
import mode."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import sim_background  # noqa: E402 - from _HERE


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ANN001
    """Start the simulation's CI seeds in the background when the session will run them
    (sim_background.py): they then overlap with the rest of the suite. The tests that read
    their outcomes run last, so they wait as little as possible for the background. Under
    pytest-xdist a worker does not start them: the controller has (tests/conftest.py), and
    the worker reads their outcomes from the directory it was given."""
    late = [it for it in items if it.nodeid.startswith(sim_background.TAKES_BACKGROUND_SEEDS)]
    if late:
        ids = {id(it) for it in late}
        items[:] = [it for it in items if id(it) not in ids] + late
    given = getattr(config, "workerinput", {}).get("distsync_sim_dir")
    if given:
        sim_background.use_directory(given)
    elif any(it.nodeid.startswith(sim_background.SEEDS_TEST) for it in items):
        sim_background.start(sim_background.ci_seeds())

