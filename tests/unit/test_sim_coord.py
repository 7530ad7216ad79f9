"""The simulation's semaphore and barrier checks (testing/wl_semaphore.py) can fail: bugs
planted in the services are found within the first seeds that run those clients, and the
client-side checks report answers that came before the event they wait for."""

from __future__ import annotations

import random
from typing import Any

import pytest

from distsync.services.barriers import BarrierService
from distsync.services.semaphores import Semaphore
from distsync.testing.sim import SimFailure, run_seed
from distsync.testing.wl_semaphore import CoordClients

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
SEEDS = range(0, 40)


def first_failure(what: str) -> str:
    for seed in SEEDS:
        try:
            run_seed(seed)
        except SimFailure as e:
            return str(e)
    pytest.fail(f"{what} survived seeds {SEEDS}")


def test_planted_grant_past_the_permits_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A semaphore that counts every permit as free, whoever holds them."""
    monkeypatch.setattr(Semaphore, "free", property(lambda s: s.permits))
    msg = first_failure("the planted semaphore bug")
    assert "permits held by" in msg, msg[:600]


def test_planted_early_enter_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A double barrier that releases an enter before its round is full."""
    orig = BarrierService.enter_state

    def early(self: BarrierService, name: str, sid: str) -> dict[str, Any]:
        st = orig(self, name, sid)
        if st.get("entered") and not st.get("next_round"):
            st["ready"] = True
        return st

    monkeypatch.setattr(BarrierService, "enter_state", early)
    msg = first_failure("the planted barrier bug")
    assert "double barrier: an enter of round" in msg, msg[:600]


class _FakeSim:
    class loop:  # noqa: N801 - stands in for the simulation's loop
        @staticmethod
        def time() -> float:
            return 0.0

    def __init__(self) -> None:
        self.failures: list[str] = []

    def fail(self, msg: str) -> None:
        self.failures.append(msg)


def test_client_side_checks_report_early_answers() -> None:
    cc = CoordClients(_FakeSim(), random.Random(1))  # type: ignore[arg-type]
    cc.sems = {"S": 2}
    cc.holds = [(0.0, 5.0, "S", 1, 10, "a"), (1.0, 6.0, "S", 2, 11, "b")]
    cc.grants = [(0.0, 0.5, "S", 12), (1.0, 1.5, "S", 11)]
    cc.removed_at = {7: 3.0}
    cc.waits_released = [(2.0, "B", 7), (4.0, "B", 7)]
    cc.full_at, cc.done_at = {20: 5.0}, {20: 9.0}
    cc.enters = [(4.9, 20), (5.1, 20)]
    cc.leaves = [(8.0, 20)]
    problems = cc.problems()
    assert any("3 permits held at once" in p for p in problems), problems
    assert any("token 12 seen before" in p for p in problems), problems
    assert sum("barrier B" in p for p in problems) == 1, problems
    assert any("enter of round 20 released at 4.9" in p for p in problems), problems
    assert any("leave of round 20" in p for p in problems), problems


def test_planted_early_barrier_release_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A barrier whose generation reads differently each time: a waiter's poll sees it
    "change" and returns while the barrier is still up."""
    calls = iter(range(1, 1 << 30))
    orig = BarrierService.generation

    def drifting(self: BarrierService, name: str) -> int | None:
        g = orig(self, name)
        return None if g is None else g * 1000 + next(calls) % 2

    monkeypatch.setattr(BarrierService, "generation", drifting)
    msg = first_failure("the planted barrier-wait bug")
    assert "barrier B: a wait on generation" in msg, msg[:600]
