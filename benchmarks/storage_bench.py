#!/usr/bin/env python3
"""Save latency of candidate Raft log formats, with fsync on: the measurement behind the
choice of distsync's storage (README "Storage").

Not a test: a measurement you run by hand (see benchmarks/README.md).

Each candidate persists Raft Ready batches the way the node does (`save(hard_state,
entries)`, ~100-byte entries, the hard state every 16th save as a vote would be). For batch
sizes 1, 16 and 128 it measures the latency of `save()` in one process alone and in 3
processes at once, each with its own data directory on the same disk (3 members on one
machine, as in the side-by-side benchmark and the tests).

Candidates:

* `segments`: distsync.storage.Storage (segmented, preallocated files, CRC-chained records,
  head slots with the durable mark in the same file): one fdatasync per save.
* `segments+mark-file`: the same, plus the durable mark in a separate two-slot file written
  and fdatasync'ed after every save (what detecting a lost tail with no window costs).
* `sqlite`: the SQLite store before it (WAL, synchronous=FULL), as it was.
* `sqlite-tuned`: the same with locking_mode=EXCLUSIVE (no shared-memory index), a larger
  WAL before checkpoints, and the hard state written only when it changes.
* `sqlite-meta+log`: entries appended to a plain log file (fdatasync), then the durable
  mark and hard state committed to SQLite (a second sync).

    python benchmarks/storage_bench.py                  # ~1 minute
    python benchmarks/storage_bench.py --saves 300 --data-dir /mnt/disk/tmp
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from distsync.raft.codec import encode_hard_state  # noqa: E402
from distsync.raft.types import Entry, HardState  # noqa: E402
from distsync.storage import SqliteStorage, Storage  # noqa: E402

PAYLOAD = b"v" * 100
BATCHES = (1, 16, 128)


class MarkFile:
    """A durable mark in a file of its own: two 4 KiB slots, CRC'ed, fdatasync'ed."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(self.fd, 0, 8192)
        os.fsync(self.fd)
        self.seq = 0

    def write(self, index: int) -> None:
        self.seq += 1
        body = b"%d %d" % (self.seq, index)
        os.pwrite(self.fd, zlib.crc32(body).to_bytes(4, "little") + body, (self.seq % 2) * 4096)
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class SegmentsWithMarkFile:
    def __init__(self, d: Path) -> None:
        self.store = Storage(d, confirm=False)
        self.mark = MarkFile(d / "MARK")

    def save(self, hs: HardState | None, entries: list[Entry]) -> None:
        self.store.save(hs, entries)
        self.mark.write(entries[-1].index)

    def close(self) -> None:
        self.mark.close()
        self.store.close()


class SqliteTuned:
    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.c = sqlite3.connect(d / "raft.db", isolation_level=None)
        self.c.execute("PRAGMA locking_mode=EXCLUSIVE")
        self.c.execute("PRAGMA journal_mode=WAL")
        self.c.execute("PRAGMA synchronous=FULL")
        self.c.execute("PRAGMA wal_autocheckpoint=10000")
        self.c.execute("CREATE TABLE IF NOT EXISTS e(idx INTEGER PRIMARY KEY, term INTEGER, "
                       "type INTEGER, data BLOB)")
        self.c.execute("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v BLOB)")

    def save(self, hs: HardState | None, entries: list[Entry]) -> None:
        c = self.c
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT OR REPLACE INTO e VALUES (?, ?, ?, ?)",
                      [(e.index, e.term, int(e.type), e.data) for e in entries])
        if hs is not None:
            c.execute("INSERT OR REPLACE INTO kv VALUES ('hs', ?)", (encode_hard_state(hs),))
        c.execute("COMMIT")

    def close(self) -> None:
        self.c.close()


class SqliteMetaPlusLog:
    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(d / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.c = sqlite3.connect(d / "meta.db", isolation_level=None)
        self.c.execute("PRAGMA journal_mode=WAL")
        self.c.execute("PRAGMA synchronous=FULL")
        self.c.execute("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v BLOB)")

    def save(self, hs: HardState | None, entries: list[Entry]) -> None:
        buf = b"".join(e.index.to_bytes(8, "little") + len(e.data).to_bytes(4, "little")
                       + e.data for e in entries)
        os.write(self.fd, zlib.crc32(buf).to_bytes(4, "little") + buf)
        os.fdatasync(self.fd)
        self.c.execute("BEGIN IMMEDIATE")
        self.c.execute("INSERT OR REPLACE INTO kv VALUES ('durable', ?)",
                       (entries[-1].index,))
        if hs is not None:
            self.c.execute("INSERT OR REPLACE INTO kv VALUES ('hs', ?)",
                           (encode_hard_state(hs),))
        self.c.execute("COMMIT")

    def close(self) -> None:
        os.close(self.fd)
        self.c.close()


CANDIDATES = {
    "segments": lambda d: Storage(d, confirm=False),
    "segments+mark-file": SegmentsWithMarkFile,
    "sqlite": SqliteStorage,
    "sqlite-tuned": SqliteTuned,
    "sqlite-meta+log": SqliteMetaPlusLog,
}


def worker(name: str, d: str, batch: int, saves: int, barrier, out) -> None:
    store = CANDIDATES[name](Path(d))
    nxt = 1
    lat: list[float] = []
    try:
        for i in range(20 + saves):
            if i == 20:
                barrier.wait()
            ents = [Entry(j, 1, data=PAYLOAD) for j in range(nxt, nxt + batch)]
            hs = HardState(1 + i // 16, "n1", 0) if i % 16 == 0 else None
            t0 = time.perf_counter()
            store.save(hs, ents)
            if i >= 20:
                lat.append(time.perf_counter() - t0)
            nxt += batch
    finally:
        store.close()
    out.put(lat)


def measure(name: str, base: Path, batch: int, procs: int, saves: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    dirs = [base / f"{name}-{batch}-{procs}-{k}" for k in range(procs)]
    ps = [ctx.Process(target=worker, args=(name, str(d), batch, saves, barrier, out))
          for d in dirs]
    for p in ps:
        p.start()
    lat = [x for _ in ps for x in out.get(timeout=600)]
    for p in ps:
        p.join()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    lat.sort()
    return {"candidate": name, "batch": batch, "procs": procs, "n": len(lat),
            "p50_us": round(statistics.median(lat) * 1e6),
            "p99_us": round(lat[int(len(lat) * 0.99)] * 1e6),
            "entries_per_s_per_proc": round(batch / statistics.mean(lat))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--saves", type=int, default=200, help="measured saves per process")
    ap.add_argument("--data-dir", help="where the stores go (default: the system temp dir)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=args.data_dir))
    load = os.getloadavg()
    rows = []
    try:
        for procs in (1, 3):
            for batch in BATCHES:
                for name in CANDIDATES:
                    r = measure(name, base, batch, procs, args.saves)
                    rows.append(r)
                    print(f"{name:20s} batch {batch:4d} procs {procs}: p50 {r['p50_us']:6d} us"
                          f"  p99 {r['p99_us']:6d} us", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lines = [
        "# Storage candidates: save() latency with fsync on",
        "",
        f"`python benchmarks/storage_bench.py --saves {args.saves}` at "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}; load average at start "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; data under {base.parent}.",
        "",
        "| candidate | batch | processes | p50 µs | p99 µs | entries/s per process |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['batch']} | {r['procs']} | {r['p50_us']} | "
                     f"{r['p99_us']} | {r['entries_per_s_per_proc']} |")
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if not args.no_write:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "storage_bench.md").write_text(table)
        (out / "storage_bench.json").write_text(json.dumps(
            {"load": load, "saves": args.saves, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
