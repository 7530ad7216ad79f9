"""Makes the paper tests' step harness (tests/unit/raftsim.py) importable as `raftsim` under any pytest
import mode."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


_TAKES_BACKGROUND_SEEDS = ("tests/unit/test_sim.py::test_seeds[",
                           "tests/unit/test_sim.py::test_every_fault_happens_in_the_ci_seeds[",
                           "tests/unit/test_sim.py::test_faults_are_spread_over_the_ci_seeds")


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ANN001
    """Start the simulation's CI seeds in the background when the session will run them
    (sim_background.py): they then overlap with the rest of the suite. The tests that read
    their outcomes run last, so they wait as little as possible for the background."""
    late = [it for it in items if it.nodeid.startswith(_TAKES_BACKGROUND_SEEDS)]
    if late:
        ids = {id(it) for it in late}
        items[:] = [it for it in items if id(it) not in ids] + late
    if any(it.nodeid.startswith("tests/unit/test_sim.py::test_seeds[") for it in items):
        import sim_background
        from test_sim import CI_SEEDS

        sim_background.start(CI_SEEDS)


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    import sim_background

    sim_background.stop()
