"""The simulation's election checks (testing/wl_election.py) can fail: election bugs
planted on purpose are found within the first seeds, with the rule they break named."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from distsync.services.elections import ElectionService
from distsync.testing.sim import SimFailure, run_seed

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
SEEDS = range(0, 40)


@pytest.fixture(autouse=True)
def _quiet_nodes() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def first_failure(what: str) -> str:
    for seed in SEEDS:
        try:
            run_seed(seed)
        except SimFailure as e:
            return str(e)
    pytest.fail(f"{what} survived {len(SEEDS)} seeds")


def test_a_session_end_that_leaves_the_leader_in_place_is_found(monkeypatch) -> None:
    """Plant the bug session binding exists to prevent: a closed or expired session keeps
    leading (and waiting)."""
    monkeypatch.setattr(ElectionService, "session_ended", lambda self, sid, i, why: None)
    msg = first_failure("a leader outliving its session")
    assert "lead or wait but are not open" in msg, msg[:400]


def test_a_reused_fencing_token_is_found(monkeypatch) -> None:
    """Plant a constant fencing token: two leaderships share one, which the per-apply
    check must catch."""
    orig = ElectionService._elect_next

    def constant_token(self, el, index):  # type: ignore[no-untyped-def]
        orig(self, el, index)
        if el.leader is not None:
            el.token = 5

    monkeypatch.setattr(ElectionService, "_elect_next", constant_token)
    msg = first_failure("a reused token")
    assert "token 5 held by" in msg or "token went" in msg, msg[:400]
