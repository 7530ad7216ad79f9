"""Storage semantics on real files: what a restarting Raft node reads back must be exactly what
it was told was durable, and the log rules (truncation, snapshot install, compaction) must hold
across reopen."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distsync.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    PersistedState,
    Snapshot,
    SnapshotMeta,
)
from distsync.storage import (
    SqliteStorage,
    Storage,
    StorageError,
    StorageIdentityError,
    StorageLockedError,
    snapfiles,
)


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, EntryType.NORMAL, b"d%d-%d" % (i, term)) for i in range(first, last + 1)]


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    conf = ConfState(
        voters=frozenset({"n1", "n2", "n3"}),
        learners=frozenset({"n4"}),
        addrs=(
            ("n1", "10.0.0.1:7000"),
            ("n2", "10.0.0.2:7000"),
            ("n3", "h3:7000"),
            ("n4", "h4:7000"),
        ),
    )
    return Snapshot(SnapshotMeta(index, term, conf), data)


def indexes(st: PersistedState) -> list[int]:
    return [e.index for e in st.entries]


@pytest.fixture
def store(tmp_path: Path):
    s = Storage(tmp_path / "data")
    yield s
    s.close()


def reopen(s: Storage, path: Path) -> Storage:
    s.close()
    return Storage(path)


def test_fresh_store_is_empty(store: Storage) -> None:
    st = store.load()
    assert st.hard_state == HardState()
    assert st.snapshot is None
    assert st.entries == []
    assert store.first_index() == 1
    assert store.last_index() == 0


def test_creates_nested_data_dir_with_a_preallocated_segment(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "c"
    with Storage(d, segment_bytes=1 << 20) as s:
        s.save(HardState(1, None, 0), [])
        segs = sorted(d.glob("*.seg"))
        assert len(segs) == 1 and segs[0].stat().st_size == 1 << 20
        assert s.identity() == ("", "")
    with Storage(d, cluster="c1", node="n1") as s:
        assert s.load().hard_state == HardState(1, None, 0)
        s.save(HardState(2, "n1", 0), [])
    with Storage(d) as s:
        assert s.identity() == ("c1", "n1")


@pytest.mark.parametrize(
    "hs", [HardState(), HardState(5, "n2", 17), HardState(7, None, 3), HardState(2**40, "x", 2**39)]
)
def test_hard_state_round_trip(tmp_path: Path, hs: HardState) -> None:
    s = Storage(tmp_path)
    s.save(hs, [])
    assert s.load().hard_state == hs
    s = reopen(s, tmp_path)
    assert s.load().hard_state == hs
    s.close()


def test_entries_round_trip_all_types_and_payloads(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    batch = [
        Entry(1, 1, EntryType.NOOP, b""),
        Entry(2, 1, EntryType.NORMAL, b"\x00\xff" * 10),
        Entry(3, 2, EntryType.CONF, b"conf-change"),
        Entry(4, 2, EntryType.NORMAL, bytes(range(256)) * 4096),  # 1 MiB
    ]
    s.save(HardState(2, "n1", 3), batch)
    for st in (s.load(), (s := reopen(s, tmp_path)).load()):
        assert st.entries == batch
        assert all(type(e.type) is EntryType for e in st.entries)
        assert all(type(e.data) is bytes for e in st.entries)
        assert st.hard_state == HardState(2, "n1", 3)
    s.close()


def test_appends_accumulate(store: Storage) -> None:
    store.save(None, ents(1, 3))
    store.save(None, ents(4, 10))
    assert store.load().entries == ents(1, 10)
    assert store.last_index() == 10


def test_conflict_truncation(store: Storage) -> None:
    store.save(HardState(1, "n1", 0), ents(1, 10, term=1))
    # A new leader overwrites 6..7; 8..10 from the old term must disappear.
    store.save(HardState(2, "n2", 5), ents(6, 7, term=2))
    st = store.load()
    assert st.entries == ents(1, 5, term=1) + ents(6, 7, term=2)
    assert st.hard_state == HardState(2, "n2", 5)
    assert store.last_index() == 7


def test_overwrite_whole_log(store: Storage) -> None:
    store.save(None, ents(1, 5, term=1))
    store.save(None, ents(1, 2, term=3))
    assert store.load().entries == ents(1, 2, term=3)


def test_rejects_gap_and_writes_nothing(store: Storage) -> None:
    store.save(HardState(1, None, 0), ents(1, 3))
    with pytest.raises(ValueError, match="log ends at 3"):
        store.save(HardState(9, "n9", 9), ents(5, 6))
    st = store.load()
    assert st.entries == ents(1, 3)
    assert st.hard_state == HardState(1, None, 0)
    # Still usable after a rejected call.
    store.save(None, ents(4, 4))
    assert store.last_index() == 4


def test_rejects_non_contiguous_batch(store: Storage) -> None:
    with pytest.raises(ValueError, match="not contiguous"):
        store.save(None, [Entry(1, 1), Entry(3, 1)])
    with pytest.raises(ValueError):
        store.save(None, [Entry(0, 1)])
    assert store.load().entries == []


def test_empty_save_is_noop(store: Storage) -> None:
    store.save(None, [])
    assert store.load() == PersistedState()


def test_snapshot_round_trip_with_conf_addrs(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    sn = snap(10, 3, b"\x01" * 100_000)
    s.save(HardState(3, "n1", 10), [], sn)
    s = reopen(s, tmp_path)
    st = s.load()
    assert st.snapshot == sn
    assert st.snapshot.meta.conf.addr_map()["n2"] == "10.0.0.2:7000"
    assert st.snapshot.meta.conf.learners == frozenset({"n4"})
    assert st.entries == []
    assert s.first_index() == 11
    assert s.last_index() == 10
    s.close()


def test_snapshot_install_matching_log_keeps_suffix(store: Storage) -> None:
    store.save(None, ents(1, 10, term=2))
    store.save(HardState(2, None, 6), [], snap(6, 2))
    st = store.load()
    assert st.snapshot.meta.index == 6
    assert st.entries == ents(7, 10, term=2)
    assert store.first_index() == 7


def test_snapshot_install_conflicting_term_discards_log(store: Storage) -> None:
    store.save(None, ents(1, 10, term=1))
    store.save(HardState(3, "n2", 6), [], snap(6, 3))
    st = store.load()
    assert st.snapshot.meta.index == 6
    assert st.entries == []
    assert store.last_index() == 6


def test_snapshot_install_beyond_log_discards_log(store: Storage) -> None:
    store.save(None, ents(1, 4))
    store.save(None, [], snap(50, 4))
    assert store.load().entries == []
    assert store.last_index() == 50
    # The log continues right after the snapshot.
    store.save(None, ents(51, 52, term=4))
    assert indexes(store.load()) == [51, 52]
    with pytest.raises(ValueError):
        store.save(None, ents(54, 55, term=4))


def test_snapshot_and_entries_in_one_save(store: Storage) -> None:
    store.save(None, ents(1, 10, term=1))
    store.save(HardState(5, "n3", 20), ents(21, 25, term=5), snap(20, 5))
    st = store.load()
    assert st.snapshot.meta.index == 20
    assert st.entries == ents(21, 25, term=5)
    assert st.hard_state == HardState(5, "n3", 20)


def test_entries_covered_by_snapshot_are_dropped(store: Storage) -> None:
    store.save(None, [], snap(5, 1))
    store.save(None, ents(3, 8, term=1))
    assert indexes(store.load()) == [6, 7, 8]
    store.save(None, ents(1, 5, term=1))  # entirely covered: nothing to do
    assert indexes(store.load()) == [6, 7, 8]


def test_same_snapshot_again_keeps_following_entries(store: Storage) -> None:
    store.save(None, ents(1, 10, term=2))
    store.compact(snap(5, 2))
    store.save(None, [], snap(5, 2))
    assert indexes(store.load()) == [6, 7, 8, 9, 10]


def test_stale_snapshot_install_rejected(store: Storage) -> None:
    store.save(None, ents(1, 10))
    store.compact(snap(8, 1))
    with pytest.raises(ValueError, match="older"):
        store.save(None, [], snap(5, 1))
    st = store.load()
    assert st.snapshot.meta.index == 8
    assert indexes(st) == [9, 10]


def test_compact(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.save(HardState(1, "n1", 8), ents(1, 10))
    s.compact(snap(8, 1, b"sm@8"))
    st = s.load()
    assert st.snapshot == snap(8, 1, b"sm@8")
    assert st.entries == ents(9, 10)
    assert s.first_index() == 9
    # An older local snapshot (produced while a newer one was installed) is ignored.
    s.compact(snap(4, 1, b"sm@4"))
    assert s.load().snapshot == snap(8, 1, b"sm@8")
    # Compacting everything leaves an empty log that continues after the snapshot.
    s.compact(snap(10, 1, b"sm@10"))
    s = reopen(s, tmp_path)
    st = s.load()
    assert st.entries == []
    assert st.snapshot.data == b"sm@10"
    assert s.last_index() == 10
    s.save(None, ents(11, 11))
    assert indexes(s.load()) == [11]
    s.close()


def test_reopen_sees_everything(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.save(HardState(1, "n1", 0), ents(1, 100, term=1))
    s.save(HardState(2, "n2", 40), ents(90, 120, term=2))
    s.compact(snap(40, 1))
    s.save(HardState(2, "n2", 60), ents(121, 130, term=2))
    before = s.load()
    s = reopen(s, tmp_path)
    after = s.load()
    assert after == before
    assert after.hard_state == HardState(2, "n2", 60)
    assert after.snapshot.meta.index == 40
    assert after.entries == ents(41, 89, term=1) + ents(90, 130, term=2)
    s.close()


def test_a_directory_naming_another_node_or_cluster_is_refused_untouched(tmp_path: Path) -> None:
    s = Storage(tmp_path, cluster="prod", node="n2")
    s.save(HardState(1, "n2", 0), ents(1, 5))
    s.close()
    (tmp_path / "x.tmp").write_bytes(b"a crash's leftover: deleted by an open that adopts")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "LOCK"}
    for cluster, node, says in (("prod", "n3", "node 'n2'"), ("test", "n2", "cluster 'prod'"),
                                ("test", "n3", "node 'n2' of cluster 'prod'")):
        with pytest.raises(StorageIdentityError, match=says):
            Storage(tmp_path, cluster=cluster, node=node)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "LOCK"} == before
    # the directory's lock was let go each time, and names unknown on one side pass
    for cluster, node in (("prod", "n2"), ("", ""), ("prod", "")):
        s = Storage(tmp_path, cluster=cluster, node=node)
        assert indexes(s.load()) == [1, 2, 3, 4, 5]
        s.close()


def test_load_is_contiguous_after_snapshot(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.save(None, ents(1, 30))
    s.compact(snap(12, 1))
    st = s.load()
    assert indexes(st) == list(range(13, 31))
    s.close()


def test_segments_roll_and_reload_across_them(tmp_path: Path) -> None:
    s = Storage(tmp_path, segment_bytes=16 << 10)
    for i in range(1, 301, 10):
        s.save(HardState(1, "n1", i), [Entry(j, 1, data=b"x" * 200) for j in range(i, i + 10)])
    assert len(list(tmp_path.glob("*.seg"))) > 3
    s.close()
    s = Storage(tmp_path, segment_bytes=16 << 10)
    st = s.load()
    assert st.fault is None and indexes(st) == list(range(1, 301))
    # A conflict that reaches back into an older segment.
    s.save(HardState(2, "n2", 0), ents(5, 7, term=2))
    s.close()
    s = Storage(tmp_path, segment_bytes=16 << 10)
    st = s.load()
    assert st.fault is None and indexes(st) == list(range(1, 8))
    assert st.entries[4:] == ents(5, 7, term=2)
    assert len(list(tmp_path.glob("*.seg"))) <= 2  # the superseded segments are gone
    s.compact(snap(6, 2))
    s.save(None, ents(8, 9, term=2))
    s.close()
    st = Storage(tmp_path, segment_bytes=16 << 10).load()
    assert st.fault is None and st.snapshot == snap(6, 2) and indexes(st) == [7, 8, 9]


def test_second_open_of_same_dir_is_refused(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    with pytest.raises(StorageLockedError):
        Storage(tmp_path)
    s.close()
    Storage(tmp_path).close()


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageError):
        s.load()
    with pytest.raises(StorageError):
        s.save(HardState(1), [])


def test_usable_from_another_thread(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    with ThreadPoolExecutor(max_workers=1) as ex:
        ex.submit(s.save, HardState(1, "n1", 0), ents(1, 50)).result()
        st = ex.submit(s.load).result()
    assert indexes(st) == list(range(1, 51))
    # And concurrent callers are serialized rather than corrupting the connection.
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(50):
                st = s.load()
                assert indexes(st) == list(range(1, len(st.entries) + 1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(51, 101):
        s.save(None, ents(i, i))
    t.join()
    assert not errors
    s.close()


def test_size_bytes_counts_preallocated_segments(tmp_path: Path) -> None:
    with Storage(tmp_path, segment_bytes=64 << 10) as store:
        assert store.size_bytes() == 0
        store.save(None, ents(1, 1))
        before = store.size_bytes()
        assert before == 64 << 10
        store.save(None, [Entry(i, 1, data=b"x" * 1000) for i in range(2, 202)])
        assert store.size_bytes() > before + 200 * 1000


def test_group_commit_is_fast(store: Storage) -> None:
    """1000 small entries in one save must cost one transaction, not one per entry."""
    store.save(None, ents(1, 1))
    best = float("inf")
    nxt = 2
    for _ in range(5):
        batch = [Entry(i, 1, data=b"payload-%d" % i) for i in range(nxt, nxt + 1000)]
        t0 = time.perf_counter()
        store.save(HardState(1, "n1", nxt), batch)
        best = min(best, time.perf_counter() - t0)
        nxt += 1000
    assert store.last_index() == nxt - 1
    # Generous bound (a few ms of CPU plus one fsync on a slow disk); per-entry commits would
    # take seconds.
    assert best < 0.25, f"save of 1000 entries took {best * 1000:.1f} ms"


# -- snapshot files ----------------------------------------------------------------------


def snap_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("snap-"))


def test_snapshot_lives_in_one_file_and_superseded_ones_go(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.save(None, ents(1, 30))
    s.compact(snap(10, 1, b"sm@10"))
    assert snap_files(tmp_path) == ["snap-1-10.bin"]
    s.compact(snap(20, 1, b"sm@20"))
    assert snap_files(tmp_path) == ["snap-1-20.bin"]
    s.close()
    st = Storage(tmp_path).load()
    assert st.snapshot == snap(20, 1, b"sm@20")
    assert indexes(st) == list(range(21, 31))


def test_orphan_snapshot_file_from_a_crash_is_ignored_and_removed(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.save(None, ents(1, 30))
    s.compact(snap(10, 1, b"sm@10"))
    # A crash after writing the next snapshot's file but before the transaction that makes
    # it current leaves a file nobody refers to.
    snapfiles.write(tmp_path, snap(25, 1, b"sm@25"))
    (tmp_path / "snap-1-26.bin.tmp").write_bytes(b"torn")
    s.close()
    s = Storage(tmp_path)
    st = s.load()
    assert st.snapshot == snap(10, 1, b"sm@10")
    assert indexes(st) == list(range(11, 31))
    assert snap_files(tmp_path) == ["snap-1-10.bin"]
    s.close()


def test_missing_snapshot_file_is_a_lost_snapshot_fault(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.save(HardState(1, "n1", 0), ents(1, 30))
    s.compact(snap(10, 1))
    s.close()
    (tmp_path / "snap-1-10.bin").unlink()
    with Storage(tmp_path) as s:
        st = s.load()
    assert st.fault is not None and st.fault.kind == "lost_snapshot"
    assert st.snapshot is None and st.entries == [] and st.hard_state.term == 1


def test_an_sqlite_data_dir_is_converted_on_open(tmp_path: Path) -> None:
    """A data directory written by the SQLite store (before segment files) is read once and
    rewritten in the new format; the old database is kept aside, not deleted."""
    with SqliteStorage(tmp_path) as old:
        old.save(HardState(3, "n2", 12), ents(1, 30))
        old.compact(snap(10, 1))
    with Storage(tmp_path) as s:
        st = s.load()
    assert st.fault is None
    assert st.hard_state == HardState(3, "n2", 12)
    assert st.snapshot == snap(10, 1)
    assert st.entries == ents(11, 30)
    assert not (tmp_path / "raft.db").exists() and (tmp_path / "raft.db.migrated").exists()
    with Storage(tmp_path) as s:
        assert s.load() == st


def test_eio_from_fdatasync_poisons_the_store(tmp_path: Path, monkeypatch) -> None:
    """After a failed fsync the kernel may have dropped the dirty pages: the store refuses
    every later call instead of retrying (PostgreSQL's rule), and a reopen reads the disk
    afresh. The failing fdatasync is a stand-in (no way to make this kernel's disk fail on
    demand; tests/integration/test_storage_failstop.py fails a real device)."""
    import errno

    import distsync.storage.wal as wal

    s = Storage(tmp_path, confirm=False)
    s.save(HardState(1, "n1", 0), ents(1, 3))
    real = wal.os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal.os, "fdatasync", failing)
    with pytest.raises(StorageError, match="EIO"):
        s.save(None, ents(4, 4))
    monkeypatch.setattr(wal.os, "fdatasync", real)
    with pytest.raises(StorageError, match="failed earlier"):
        s.save(None, ents(4, 4))
    with pytest.raises(StorageError, match="failed earlier"):
        s.load()
    s.close()
    with Storage(tmp_path) as s:
        st = s.load()
    assert st.fault is None and indexes(st)[:3] == [1, 2, 3]
