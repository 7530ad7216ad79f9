"""Semaphores and double barriers across real client processes, on a real 3-node cluster.

* Permits across processes: four processes contend for a semaphore of 2 permits; the
  cluster never shows more than 2 holders, every grant's token is above the ones before it,
  and every process gets its turn.
* A holder SIGKILLed while holding frees its permit once its session's TTL runs out: a
  waiter in this process is granted within TTL plus a margin, with a larger token.
* A double barrier of 3 real processes: nobody is let in before the last one arrived, and
  nobody is let out before the last one left (wall clock of one machine). They start
  their delays together, on a line from the test, so that their start-up times under load
  do not reorder the arrivals.
* The leader SIGKILLed while a permit is held, one waits, and a round is half entered: the
  new leader hands the permit on (larger token) and lets the round fill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from cluster_helpers import agreed_leader, diag, ready

from distsync.client import BlockingClient, Client
from distsync.local import LocalCluster


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, (out, err)
        outs.append(out)
    return outs


CONTENDER = textwrap.dedent("""
    import sys, time
    from distsync.client import BlockingClient
    with BlockingClient(sys.argv[1].split(",")) as c:
        sem = c.semaphore("proc-pool", permits=2)
        for _ in range(3):
            asked = time.time()
            with sem.acquire(timeout=60) as p:
                print("granted", p.token, time.time(), asked, flush=True)
                time.sleep(0.2)
                print("released", p.token, time.time(), 0, flush=True)
""")


def test_permits_across_processes(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    procs = [_spawn(CONTENDER, ",".join(lc.addrs)) for _ in range(4)]
    seen_max = 0
    with BlockingClient(lc.addrs) as c:
        sem = c.semaphore("proc-pool", permits=2)
        while any(p.poll() is None for p in procs):
            info = sem.info()
            assert len(info["holders"]) <= 2, info
            assert sum(h["count"] for h in info["holders"]) <= 2, info
            seen_max = max(seen_max, len(info["holders"]))
            time.sleep(0.02)
    outs = _finish(procs)
    grants = [(float(asked), float(t), int(tok)) for out in outs
              for line in out.splitlines()
              for kind, tok, t, asked in [line.split()] if kind == "granted"]
    assert len(grants) == 12, outs
    # a grant seen before another was asked for has the smaller token (tokens are log
    # indexes; grants made by one release share theirs)
    for _, done_a, tok_a in grants:
        for asked_b, _, tok_b in grants:
            assert not (done_a < asked_b and tok_a >= tok_b), grants
    # at most 2 intervals [granted, released] overlap at any time
    events = sorted((float(t), 1 if kind == "granted" else -1) for out in outs
                    for line in out.splitlines() for kind, _, t, _ in [line.split()])
    level = 0
    for _, d in events:
        level += d
        assert level <= 2, events
    assert seen_max >= 1


HOLDER = textwrap.dedent("""
    import sys, time
    from distsync.client import BlockingClient
    c = BlockingClient(sys.argv[1].split(","))
    p = c.semaphore("proc-kill", permits=1, ttl=1.5).acquire(timeout=30)
    print("held", p.token, flush=True)
    time.sleep(600)
""")


def test_a_sigkilled_holder_frees_its_permit_after_its_ttl(shared_cluster: LocalCluster
                                                           ) -> None:
    lc = shared_cluster
    child = _spawn(HOLDER, ",".join(lc.addrs))
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("held"), (line, child.stderr.read() if child.poll() else "")
        token = int(line.split()[1])
        with BlockingClient(lc.addrs) as c:
            sem = c.semaphore("proc-kill", permits=1)
            assert sem.try_acquire() is None
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            killed = time.monotonic()
            with sem.acquire(timeout=30) as p:
                took = time.monotonic() - killed
                assert p.token > token
            # TTL 1.5 s, plus the leader's expiry timer and a proposal; generous for a
            # loaded CI machine (a permit that is never freed would take the full 30 s)
            assert took < 1.5 + 5.0, diag(lc, f"the permit came back after {took:.1f} s")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


PARTICIPANT = textwrap.dedent("""
    import sys, time
    from distsync.client import BlockingClient
    delay = float(sys.argv[2])
    with BlockingClient(sys.argv[1].split(",")) as c:
        c.status()
        print("ready", 0, flush=True)
        sys.stdin.readline()  # all start together, whatever their start-up took
        time.sleep(delay)
        db = c.double_barrier("proc-db", n=3)
        print("arrive", time.time(), flush=True)
        db.enter(timeout=60)
        print("in", time.time(), db.round, flush=True)
        time.sleep(delay)
        print("leave", time.time(), flush=True)
        db.leave(timeout=60)
        print("out", time.time(), flush=True)
""")


def test_double_barrier_of_three_processes(shared_cluster: LocalCluster) -> None:
    lc = shared_cluster
    procs = [_spawn(PARTICIPANT, ",".join(lc.addrs), str(d)) for d in (0.1, 0.8, 1.5)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().startswith("ready"), \
            p.stderr.read() if p.poll() is not None and p.stderr else ""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = _finish(procs)
    at: dict[str, list[float]] = {"arrive": [], "in": [], "leave": [], "out": []}
    rounds = set()
    for out in outs:
        for line in out.splitlines():
            parts = line.split()
            at[parts[0]].append(float(parts[1]))
            if parts[0] == "in":
                rounds.add(parts[2])
    assert all(len(v) == 3 for v in at.values()), outs
    assert len(rounds) == 1, outs
    assert max(at["arrive"]) <= min(at["in"]), at
    assert max(at["leave"]) <= min(at["out"]), at
    # and the fast ones really waited for the slow one
    assert min(at["in"]) - min(at["arrive"]) > 1.0, at


async def test_permits_and_a_round_survive_a_leader_kill() -> None:
    """Holders, waiters and a half-entered double barrier live in the replicated state: the
    leader is SIGKILLed, and the new one hands the permit on with a larger token and lets
    the round fill, as if nothing happened."""
    with LocalCluster(3) as lc:
        ready(lc)
        async with Client(lc.addrs, timeout=30) as c:
            sem = c.semaphore("fo-pool", permits=1)
            held = await sem.acquire()
            waiter = asyncio.ensure_future(sem.acquire(timeout=40))
            first = asyncio.ensure_future(c.double_barrier("fo-db", n=2).enter(timeout=40))
            await asyncio.sleep(1.0)
            assert not waiter.done() and not first.done()
            old = agreed_leader(lc)
            lc.kill(old)
            info = await sem.info()
            assert [h["token"] for h in info["holders"]] == [held.token], info
            assert len(info["waiters"]) == 1, info
            await held.release()
            got = await waiter
            assert got.token > held.token
            second = c.double_barrier("fo-db", n=2)
            await second.enter(timeout=40)
            r1 = await first
            assert r1["round"] == second.round
            await got.release()
            assert agreed_leader(lc, among=[n for n in lc.nodes if n != old]) != old
