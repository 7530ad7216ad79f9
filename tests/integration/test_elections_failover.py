"""Leader election on a real 3-node cluster through a server kill and a paused client.

Three client processes campaign in one election over and over (hold the leadership a little,
resign, campaign again), each logging when it was elected and, every few milliseconds while
its leadership holds by the client's own lease count, a "lead" sample with its fencing token
and the machine's monotonic clock. Meanwhile the test observes the election and:

* SIGKILLs the Raft leader node, and later restarts it;
* SIGSTOPs the client process that leads, for longer than its session's TTL: the cluster
  must expire its session and elect the next candidate while it is stopped; after SIGCONT
  the process must find its leadership lost.

Checked on the histories:

* observed leader changes (from `observe()`): tokens strictly increase from leader to
  leader, each token is the revision (log index) that elected it, and a change of leader
  away from a session that did not resign happens only once that session is gone;
* the clients' own beliefs: for tokens Ta < Tb, every "lead" sample of Ta comes before the
  first of Tb, so no two processes ever both believed they led at once; and every token a
  client was elected with was observed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import agreed_leader, async_wait_until, diag, ready, wait_caught_up

from distsync.client import Client
from distsync.local import LocalCluster, http_json

ELECTION = "jobs"
TTL_S = 3.0

CANDIDATE = textwrap.dedent("""
    import asyncio, json, os, random, sys, time
    from distsync.client import Client
    from distsync.client.elections import LeadershipLost

    addrs, me, stop, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
    f = open(out, "a", buffering=1)

    def log(**kw):
        f.write(json.dumps({"me": me, "t": time.monotonic(), **kw}) + "\\n")

    async def main():
        rng = random.Random(me)
        async with Client(addrs, timeout=30) as c:
            e = c.election("%(election)s", ttl=%(ttl)s)
            while not os.path.exists(stop):
                try:
                    async with e.campaign(me) as lead:
                        log(ev="elected", token=lead.token, session=lead.session_id)
                        end = time.monotonic() + rng.uniform(0.3, 1.2)
                        while time.monotonic() < end and not os.path.exists(stop):
                            now = time.monotonic()
                            if not lead.is_leader():
                                break
                            log(ev="lead", token=lead.token, t=now)
                            await asyncio.sleep(0.01)
                        if lead.lost:
                            log(ev="lost", token=lead.token)
                            raise LeadershipLost(409, "leadership_lost", "lost")
                    log(ev="resigned", token=lead.token)
                except LeadershipLost:
                    log(ev="lost", token=lead.token)
                except Exception as exc:  # an unavailable cluster mid-failover: try again
                    log(ev="error", error=repr(exc)[:200])
                    await asyncio.sleep(0.1)

    asyncio.run(main())
""") % {"election": ELECTION, "ttl": TTL_S}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as lc:
        ready(lc)
        yield lc


def read_log(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line cut by the end of the run
    return out


def belief_problems(records: list[dict[str, Any]]) -> list[str]:
    """Two clients that both believed they led at once: for tokens Ta < Tb, a "lead" sample
    of Ta at or after the first sample of Tb."""
    samples: dict[int, list[float]] = defaultdict(list)
    owner: dict[int, str] = {}
    for r in records:
        if r["ev"] == "lead":
            samples[r["token"]].append(r["t"])
            owner.setdefault(r["token"], r["me"])
    bad = []
    toks = sorted(samples)
    for i, ta in enumerate(toks):
        last_a = max(samples[ta])
        for tb in toks[i + 1:]:
            if owner[ta] != owner[tb] and last_a >= min(samples[tb]):
                bad.append(f"{owner[ta]} still led with token {ta} at {last_a:.3f} when "
                           f"{owner[tb]} led with token {tb} from {min(samples[tb]):.3f}")
    return bad


def change_problems(changes: list[dict[str, Any]]) -> list[str]:
    """Observed leader changes: a new leader's token is the revision that elected it and
    larger than every earlier leader's."""
    bad = []
    last_token = 0
    last_session = None
    for ev in changes:
        lead = ev["leader"]
        if lead is None:
            last_session = None
            continue
        if lead["session"] != last_session or lead["token"] != last_token:
            if not lead["token"] > last_token:
                bad.append(f"token {lead['token']} after {last_token}: {ev}")
            if not ev.get("resync") and lead["token"] != ev["revision"]:
                bad.append(f"a new leader's token is not the revision that elected it: {ev}")
        last_token, last_session = max(last_token, lead["token"]), lead["session"]
    return bad


def _wait_all(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_checkers_catch_violations() -> None:
    assert belief_problems([
        {"ev": "lead", "token": 5, "t": 1.0, "me": "a"},
        {"ev": "lead", "token": 9, "t": 1.5, "me": "b"},
        {"ev": "lead", "token": 5, "t": 2.0, "me": "a"},
    ])
    assert not belief_problems([
        {"ev": "lead", "token": 5, "t": 1.0, "me": "a"},
        {"ev": "lead", "token": 9, "t": 1.5, "me": "b"},
    ])
    lead = {"type": "leader"}
    assert change_problems([
        {**lead, "revision": 9, "leader": {"session": "s1", "token": 9}},
        {**lead, "revision": 12, "leader": {"session": "s2", "token": 7}},
    ])
    assert change_problems([{**lead, "revision": 10, "leader": {"session": "s1", "token": 9}}])
    assert not change_problems([
        {**lead, "revision": 9, "leader": {"session": "s1", "token": 9}},
        {**lead, "revision": 11, "leader": {"session": "s1", "token": 9}},  # a proclaim
        {**lead, "revision": 12, "leader": None},
        {**lead, "revision": 14, "leader": {"session": "s2", "token": 14}},
    ])


async def test_never_two_leaders_through_server_kill_and_client_pause(
        cluster: LocalCluster) -> None:
    lc = cluster
    tmp = Path(tempfile.mkdtemp(prefix="elections-"))
    stop = tmp / "stop"
    logs = {f"c{i}": tmp / f"c{i}.jsonl" for i in range(3)}
    procs = {
        me: subprocess.Popen([sys.executable, "-c", CANDIDATE, ",".join(lc.addrs), me,
                              str(stop), str(path)], stderr=subprocess.PIPE, text=True)
        for me, path in logs.items()
    }
    changes: list[dict[str, Any]] = []
    paused_session = paused_token = None
    try:
        async with Client(lc.addrs, timeout=30) as c:
            election = c.election(ELECTION)

            async def observer() -> None:
                async for ev in election.observe(progress_ms=300):
                    changes.append(ev)

            obs = asyncio.create_task(observer())

            def leaders() -> int:
                return len({(ev["leader"] or {}).get("token") for ev in changes} - {None})

            await async_wait_until(lc, lambda: leaders() >= 5, 60, "five leaders")

            # The Raft leader node dies; elections go on under the next one.
            old = await asyncio.to_thread(agreed_leader, lc)
            await asyncio.to_thread(lc.kill, old, signal.SIGKILL)
            survivors = [n for n in lc.nodes if n != old]
            await asyncio.to_thread(agreed_leader, lc, 20.0, survivors)
            n = leaders()
            await async_wait_until(lc, lambda: leaders() >= n + 3, 60,
                                   "three more leaders after the kill")

            # The leading client process stops for longer than its session's TTL.
            lead = await election.leader()
            assert lead is not None
            who = lead["value"]
            paused_session, paused_token = lead["session"], lead["token"]
            procs[who].send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                async def moved_on() -> bool:
                    now = await election.leader()
                    return now is not None and now["token"] > paused_token

                deadline = time.monotonic() + TTL_S + 10
                while not await moved_on():
                    assert time.monotonic() < deadline, diag(lc, "no new leader while paused")
                    await asyncio.sleep(0.1)
                code, _ = await asyncio.to_thread(
                    http_json, "GET", f"{lc.nodes[survivors[0]].url}/v1/sessions/"
                                      f"{paused_session}")
                assert code == 404, "a new leader was elected while the old one's session lived"
                await asyncio.sleep(max(0.0, TTL_S + 1 - (time.monotonic() - stopped_at)))
            finally:
                procs[who].send_signal(signal.SIGCONT)

            # The killed node comes back and catches up; a few more leaders.
            lc.start_node(old)
            now_leader = await asyncio.to_thread(agreed_leader, lc, 30.0)
            await asyncio.to_thread(wait_caught_up, lc, old, now_leader, 30.0)
            n = leaders()
            await async_wait_until(lc, lambda: leaders() >= n + 3, 60,
                                   "three more leaders after the restart")
            await async_wait_until(lc, lambda: any(
                r["ev"] == "lost" and r["token"] == paused_token
                for r in read_log(logs[who])), 30, "the paused client to see its loss")
            # The clients stop (each resigns, or its session ends); the observer sees the
            # election empty after every leadership they were granted.
            stop.touch()
            await asyncio.to_thread(_wait_all, procs)
            last = max((r["token"] for path in logs.values() for r in read_log(path)
                        if r["ev"] == "elected"), default=0)
            await async_wait_until(lc, lambda: changes and changes[-1]["leader"] is None
                                   and changes[-1]["revision"] > last, 30,
                                   "the observer to see the last resign")
            obs.cancel()
    finally:
        stop.touch()
        for p in procs.values():
            p.send_signal(signal.SIGCONT)
        _wait_all(procs)
    errs = {me: p.stderr.read() if p.stderr else "" for me, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), errs
    records = [r for path in logs.values() for r in read_log(path)]
    elected = {r["token"] for r in records if r["ev"] == "elected"}
    observed = {ev["leader"]["token"] for ev in changes if ev["leader"]}
    bad = belief_problems(records) + change_problems(changes)
    assert not bad, diag(lc, "\n".join(bad[:10]))
    assert elected <= observed or any(ev.get("resync") for ev in changes), (
        f"elected but never observed: {sorted(elected - observed)}")
    assert paused_token in elected and paused_token in observed
    assert len(elected) >= 11, sorted(elected)
    by_me = defaultdict(int)
    for r in records:
        if r["ev"] == "elected":
            by_me[r["me"]] += 1
    assert len(by_me) == 3, dict(by_me)
    print(f"{len(elected)} leaders over {len(changes)} observed changes, "
          f"{sum(r['ev'] == 'lead' for r in records)} lead samples; tokens "
          f"{min(elected)}..{max(elected)}; {os.path.basename(tmp)}")
