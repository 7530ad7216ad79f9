"""Orders the tests that read the simulation's background seeds last, and starts the seeds.
(tests/conftest.py puts this directory on sys.path, so that the paper tests' step harness
imports as `raftsim` and this module's helper as `sim_background` under any import mode.)"""

from __future__ import annotations

import sim_background


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

