"""Fail-stop on a disk that refuses writes, with real processes and real file systems.

* ENOSPC: the node's data directory is a tmpfs mounted with `size=`: once its log needs a
  new segment, fallocate fails for real.
* A failing device: the data directory is an ext4 file system on a loop device whose
  backing file lives on a small tmpfs (thin provisioning): once the backing store is full,
  the loop device fails the block writes under a file system that believes it has space.
  The kernel reports that to the writer as EIO or as ENOSPC, depending on which path sees
  the failed block write first (both happen here). The device-mapper `error` target would
  give EIO every time, but this kernel has no device-mapper driver and no fault injection;
  `tests/unit/test_storage.py::test_eio_from_fdatasync_poisons_the_store` pins the EIO path
  itself with a failing fdatasync (a stand-in, named as such).

In both cases the node must stop (exit status 70, a log line naming the error; a failed
fsync is never retried, as PostgreSQL learned), the other two keep serving, no acknowledged
write is lost, and after the disk is repaired a restart catches up.

Needs root (mount, losetup); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import diag, ready, wait_caught_up, wait_until

from distsync.client import BlockingClient, DistSyncError
from distsync.local import LocalCluster
from distsync.realparts import EXIT_LOOP_DIED

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount file systems")

VALUE = "x" * 200_000  # big values reach a segment roll (16 MiB) in ~80 writes


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def thin_ext4(path: Path, backing: Path, backing_size: str) -> Iterator[tuple[Path, str]]:
    """An ext4 file system of 256 MiB whose blocks live in a `backing_size` tmpfs."""
    with tmpfs(backing, backing_size):
        img = backing / "disk.img"
        run("truncate", "-s", "256M", str(img))
        try:
            loop = run("losetup", "-f", "--show", str(img))
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            pytest.skip(f"no loop devices here: {e}")
        try:
            run("mkfs.ext4", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", loop)
            path.mkdir(parents=True, exist_ok=True)
            run("mount", "-o", "errors=continue", loop, str(path))
            try:
                yield path, loop
            finally:
                subprocess.run(["umount", "-l", str(path)], check=False)
        finally:
            subprocess.run(["losetup", "-d", loop], check=False)


def write_until_dead(lc: LocalCluster, victim: str, c: BlockingClient) -> dict[str, int]:
    """PUT big values until `victim` exits; returns the acknowledged keys (key -> i)."""
    acked: dict[str, int] = {}
    deadline = time.monotonic() + 120
    i = 0
    while lc.nodes[victim].alive():
        assert time.monotonic() < deadline, diag(lc, f"{victim} never hit its disk error")
        key = f"fill/{i}"
        try:
            c.put(key, {"i": i, "pad": VALUE})
        except DistSyncError:
            pass  # in flight when a node died: unknown outcome, not acknowledged
        else:
            acked[key] = i
        i += 1
    return acked


def check_failstop(lc: LocalCluster, victim: str, errnames: tuple[str, ...]) -> None:
    proc = lc.nodes[victim].proc
    assert proc is not None
    assert proc.wait(timeout=30) == EXIT_LOOP_DIED, diag(lc, f"{victim} exit status")
    lc.nodes[victim].stopped = True  # an expected death: the harness must not wait it out
    log = lc.nodes[victim].log_path.read_text(errors="replace")
    assert any(f"failed in {lc.nodes[victim].data_dir}: {e}" in log for e in errnames) and (
        "never retried" in log), diag(lc, f"{victim} gave no clear reason")


def check_all_there(c: BlockingClient, acked: dict[str, int]) -> None:
    for key, i in acked.items():
        got = c.get(key)
        assert got["value"]["i"] == i, key


def others_serve(lc: LocalCluster, victim: str, c: BlockingClient, acked: dict[str, int]) -> None:
    ready_others = [n for n in lc.nodes if n != victim]
    wait_until(lc, lambda: all(lc.status(n) for n in ready_others), 30, "the others to answer")
    for k in range(5):
        c.put(f"after/{k}", {"i": k})
        acked[f"after/{k}"] = k


def make_leader(lc: LocalCluster, target: str) -> None:
    from distsync.local import http_json

    def moved() -> bool:
        leader = ready(lc)
        if leader == target:
            return True
        with contextlib.suppress(OSError, ValueError):
            http_json("POST", f"{lc.nodes[leader].url}/v1/cluster/transfer-leader",
                      {"to": target}, timeout=5)
        return False

    wait_until(lc, moved, 30, f"{target} to become leader", interval=0.5)


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_enospc_stops_the_node_and_a_restart_catches_up(tmp_path: Path, role: str) -> None:
    base = tmp_path / "cluster"
    with tmpfs(base / "n3", "20m") as n3dir:
        lc = LocalCluster(3, data_dir=base)
        try:
            lc.start()
            leader = ready(lc)
            if role == "leader":
                make_leader(lc, "n3")
            elif leader == "n3":
                make_leader(lc, "n1")
            with BlockingClient(lc.addrs, timeout=20) as c:
                acked = write_until_dead(lc, "n3", c)
                check_failstop(lc, "n3", ("ENOSPC",))
                others_serve(lc, "n3", c, acked)
                check_all_there(c, acked)
                # Free the space (a bigger volume) and restart: it catches up by itself.
                run("mount", "-o", "remount,size=200m", str(n3dir))
                lc.start_node("n3")
                leader = ready(lc, timeout=60)
                wait_caught_up(lc, "n3", leader, timeout=60)
                check_all_there(c, acked)
                st = lc.status("n3")
                assert st is not None and st.get("storage_fault") in (None, False), st
        except BaseException:
            lc.keep_data = True
            raise
        finally:
            lc.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_a_failing_device_stops_the_node_and_the_rest_serve(tmp_path: Path) -> None:
    base = tmp_path / "cluster"
    with thin_ext4(base / "n3", tmp_path / "backing", "24m") as (n3dir, loop):
        lc = LocalCluster(3, data_dir=base)
        try:
            lc.start()
            leader = ready(lc)
            if leader == "n3":
                make_leader(lc, "n1")
            with BlockingClient(lc.addrs, timeout=20) as c:
                acked = write_until_dead(lc, "n3", c)
                check_failstop(lc, "n3", ("EIO", "ENOSPC"))
                others_serve(lc, "n3", c, acked)
                check_all_there(c, acked)
        except BaseException:
            lc.keep_data = True
            raise
        finally:
            lc.stop()
    shutil.rmtree(base, ignore_errors=True)
