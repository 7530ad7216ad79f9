"""The real store keeps a recovery under way (HardState.recovering, raft/recovery.py): a node
restarted in the middle of its repair must come back still refusing to vote. The fault that
started it is reported by the store only once for a lost hard state or an empty data dir (after
the first save there is nothing left to detect), so the marker is all that remembers it."""

from __future__ import annotations

from distsync.raft.types import Entry, HardState
from distsync.storage import Storage


def test_the_store_keeps_the_recovery_marker_and_clears_it(tmp_path) -> None:
    st = Storage(tmp_path)
    st.save(HardState(3, None, 0, recovering="lost_hard_state"), [Entry(1, 3)])
    st.close()
    st = Storage(tmp_path)
    assert st.load().hard_state.recovering == "lost_hard_state"
    st.save(HardState(3, "n1", 1), [])
    st.close()
    st = Storage(tmp_path)
    try:
        assert st.load().hard_state == HardState(3, "n1", 1)
    finally:
        st.close()
