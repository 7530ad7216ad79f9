"""The store's confirm thread: it makes an idle store's last batch part of the durable
mark, and otherwise stays asleep. Its wake-ups are read from the kernel's own count of the
thread's context switches (/proc), not from a counter in the code under test.

Why it matters: three nodes on two vCPUs, each with a thread waking 100 times a second to
find nothing to do, take the GIL from the event loop and a vCPU from the write path for
nothing; an operator also sees an idle node that never sleeps."""

from __future__ import annotations

import time
from pathlib import Path

from test_wal_faults import SEG, ents  # tests/unit is on sys.path (tests/conftest.py)

from distsync.raft.types import HardState
from distsync.storage import Storage
from distsync.storage.wal import CONFIRM_AFTER_S


def switches(s: Storage) -> int:
    """Voluntary plus involuntary context switches of `s`'s confirm thread so far."""
    assert s._confirmer is not None and s._confirmer.native_id is not None
    with open(f"/proc/self/task/{s._confirmer.native_id}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


def wait_confirmed(s: Storage, index: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while s._st.durable < index:
        assert time.monotonic() < deadline, f"mark still {s._st.durable}, wanted {index}"
        time.sleep(0.002)


def test_an_idle_store_confirms_its_last_batch_then_sleeps(tmp_path: Path) -> None:
    with Storage(tmp_path, segment_bytes=SEG) as s:
        s.save(HardState(2, "n1", 0), ents(1, 5, term=2))
        s.save(None, ents(6, 6, term=2))
        wait_confirmed(s, 6)
        before = switches(s)
        time.sleep(20 * CONFIRM_AFTER_S)  # the window watched, not a wait for something
        # A few for the tail of that confirm (its fdatasync runs after the mark is set, and
        # the GIL changes hands); a thread polling twice per period would show about 40.
        assert switches(s) - before <= 4
        # ...and it still wakes for the next save.
        s.save(None, ents(7, 8, term=2))
        wait_confirmed(s, 8)


def test_a_busy_store_wakes_its_confirmer_at_most_once_per_quiet_period(
        tmp_path: Path) -> None:
    """Under a steady stream of saves each save carries the previous one's mark, so the
    thread has nothing to do until the stream stops; it may look once per CONFIRM_AFTER_S,
    not more often. Counted by the thread itself: a context-switch count would also count
    its waits for the GIL, which depend on what else the machine runs."""
    with Storage(tmp_path, segment_bytes=SEG) as s:
        s.save(HardState(2, "n1", 0), ents(1, 1, term=2))
        before, t0 = s._wakes, time.monotonic()
        i = 2
        while time.monotonic() - t0 < 15 * CONFIRM_AFTER_S:
            s.save(None, ents(i, i, term=2))
            i += 1
            time.sleep(CONFIRM_AFTER_S / 10)  # the pace of the stream of saves
        woke = s._wakes - before
        periods = (time.monotonic() - t0) / CONFIRM_AFTER_S
        # About one per period; the slack is for a loaded machine, where a late save lets
        # the thread confirm and then wake again for the next save. Polling twice per
        # period, as the thread used to, would be 2 * periods.
        assert woke <= 1.5 * periods, f"{woke} wake-ups in {periods:.0f} quiet periods"
        wait_confirmed(s, i - 1)
