"""Seeded chaos scenarios against real node processes, with every history checked.

Each scenario starts a fresh cluster (5 nodes for `partitions`, 3 otherwise), runs every
workload (kv, locks, queue, cache: distsync.testing.workloads) at once for CHAOS_DURATION
seconds while the nemesis injects the scenario's faults from a schedule chosen by
CHAOS_SEED, heals everything, waits for the cluster to recover, reads the final state and
checks:

* kv: linearizable for a register per key (get / put / cas / delete; a timed-out operation
  may or may not have happened), revisions and values one to one;
* locks: linearizable for a mutex per lock; fencing tokens unique and increasing; no two
  holders at once by token intervals;
* queue: every acknowledged enqueue delivered, nothing invented, FIFO of first deliveries
  per partition, no delivery after a successful ack;
* cache: no stale read after an acknowledged PUT, on any node;
* the cluster recovers (a leader everyone agrees on, every node ready) after healing, and
  serves the final reads.

On a machine where network namespaces cannot be made, the netns variants skip with the reason
and the loopback variants run the same scenarios with process faults only.
"""

from __future__ import annotations

import os

import pytest
from chaos_helpers import netns_reason

from distsync.testing.chaos import SCENARIOS, run_chaos

NAMES = list(SCENARIOS)

# Open bugs this suite found in a service, by workload. An INVALID verdict of such a workload
# is reported as an expected failure (XFAIL, with the whole summary) instead of failing the
# run, so the other services stay guarded meanwhile; CHAOS_STRICT=1 fails on them as well.
# Delete the entry with the fix.
KNOWN_BUGS: dict[str, str] = {}


async def _run(scenario: str, cluster: str, seed: int, duration: float) -> None:
    res = await run_chaos(scenario, seed, duration, ["all"], cluster)
    print(res.summary())
    strict = os.environ.get("CHAOS_STRICT") == "1"
    bad = [v for v in res.verdicts if v.valid is not True]
    unexpected = [v.workload for v in bad if strict or v.workload not in KNOWN_BUGS]
    assert not res.errors and not unexpected, res.summary()
    assert res.injected, f"no fault was injected (seed {seed}):\n{res.summary()}"
    for v in res.verdicts:
        # Not vacuous: the workload really ran and had answers to check.
        assert v.counts.get("ok", 0) >= 50, f"{v.workload} barely ran:\n{res.summary()}"
    if bad:
        pytest.xfail("known bug(s): " + "; ".join(
            f"{v.workload}: {KNOWN_BUGS[v.workload]}" for v in bad) + "\n" + res.summary())


@pytest.mark.parametrize("scenario", NAMES)
async def test_chaos_netns(scenario: str, chaos_seed: int, chaos_duration: float) -> None:
    reason = netns_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable ({reason}); "
                    "test_chaos_loopback runs the same scenarios with process faults only")
    await _run(scenario, "netns", chaos_seed, chaos_duration)


@pytest.mark.parametrize("scenario", NAMES)
async def test_chaos_loopback(scenario: str, chaos_seed: int, chaos_duration: float) -> None:
    if not netns_reason() and os.environ.get("CHAOS_LOOPBACK") != "1":
        pytest.skip("network namespaces are available and test_chaos_netns covers this "
                    "scenario with network faults too (CHAOS_LOOPBACK=1 runs it anyway)")
    await _run(scenario, "loopback", chaos_seed, chaos_duration)
