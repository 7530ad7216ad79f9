"""The in-memory view of one node's Raft log: a compacted prefix (the snapshot point), the
entries after it, and the commit, apply and persistence marks.

Entries past `stable` are not on disk yet; the driver persists them from `Ready.entries`.
"""

from __future__ import annotations

from .types import Entry, Snapshot, SnapshotMeta


class RaftLog:
    def __init__(self, snapshot: SnapshotMeta | None = None, entries: list[Entry] | None = None):
        self.snap = snapshot or SnapshotMeta()
        self.entries: list[Entry] = list(entries or [])
        self.committed = self.snap.index
        self.applied = self.snap.index
        self.stable = self.last_index()
        # A snapshot received from the leader that the driver has not persisted yet.
        self.pending_snapshot: Snapshot | None = None

    # -- reading -----------------------------------------------------------------------

    def first_index(self) -> int:
        return self.snap.index + 1

    def last_index(self) -> int:
        return self.snap.index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap.term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`, or None if it is compacted or beyond the end."""
        if index == self.snap.index:
            return self.snap.term
        if index < self.snap.index or index > self.last_index():
            return None
        return self.entries[index - self.snap.index - 1].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi; lo must not be compacted."""
        off = self.snap.index + 1
        return self.entries[lo - off : hi - off]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Section 5.4.1: a candidate's log is at least as up to date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def unstable_entries(self) -> list[Entry]:
        if self.stable >= self.last_index():
            return []
        return self.slice(max(self.stable + 1, self.first_index()), self.last_index() + 1)

    def next_committed(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last index <= `index` whose term is <= `term` (fast back-off: the leader can
        skip a whole term of mismatching entries in one round trip)."""
        while index > self.snap.index:
            t = self.term(index)
            if t is None or t <= term:
                break
            index -= 1
        return index, self.term(index) or 0

    # -- writing -----------------------------------------------------------------------

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry in `ents` that is new or conflicts; 0 if all present."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, ents: list[Entry]
    ) -> int | None:
        """AppendEntries receiver rules 2-5 of Figure 2; the new last index, or None."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(f"entry {ci} conflicts with committed entry")
            self.append(ents[ci - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"append after {after} would overwrite committed entries")
        if after < self.snap.index:
            raise AssertionError("append into the compacted prefix")
        del self.entries[after - self.snap.index :]
        self.entries.extend(ents)
        self.stable = min(self.stable, after)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        if self.match_term(index, term):
            self.stable = max(self.stable, index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader."""
        self.snap = snapshot.meta
        self.entries = []
        self.committed = snapshot.meta.index
        self.stable = snapshot.meta.index
        self.pending_snapshot = snapshot

    def compact(self, meta: SnapshotMeta) -> None:
        """Drop entries covered by a local snapshot at meta.index."""
        if meta.index <= self.snap.index:
            return
        if meta.index > self.applied:
            raise AssertionError("compacting past the applied index")
        del self.entries[: meta.index - self.snap.index]
        self.snap = meta
