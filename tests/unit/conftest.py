"""Makes the paper tests' step harness (tests/unit/raftsim.py) importable as `raftsim` under any pytest
import mode."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ANN001
    """Start the simulation's CI seeds in the background when the session will run them
    (sim_background.py): they then overlap with the rest of the suite."""
    if any(it.nodeid.startswith("tests/unit/test_sim.py::test_seeds[") for it in items):
        import sim_background
        from test_sim import CI_SEEDS

        sim_background.start(CI_SEEDS)


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    import sim_background

    sim_background.stop()
