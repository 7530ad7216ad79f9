"""`distsync` command line: run a node, a local cluster, a demo, a benchmark, or print cluster
status.

Every `distsync node` option can also come from a `DISTSYNC_*` environment variable (named on
each option), which is how the Kubernetes pods configure themselves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from typing import Any

import click

from .config import NodeConfig
from .security import options as security


def check_host_port(addr: str, what: str) -> str:
    """`host:port` with a port in 1..65535, or a usage error naming the option: a node must
    not start on an address other than the one it logs (a port past 65535 wraps around)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{addr!r} is not host:port (a port in 1-65535)",
                                 param_hint=what)
    return addr


def _host_port(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return check_host_port(value, f"--{param.name}") if value else value


def parse_peers(spec: str) -> dict[str, str]:
    """`n1=host:port,n2=host:port` -> {"n1": "host:port", ...}."""
    peers: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise click.BadParameter(f"peer {part!r} is not id=host:port")
        nid, addr = part.split("=", 1)
        peers[nid.strip()] = check_host_port(addr.strip(), f"--peers ({nid.strip()})")
    return peers


def _pod_defaults() -> dict[str, str]:
    """In a StatefulSet pod, derive id and founding peers from the pod name and the headless
    Service (`DISTSYNC_STATEFULSET_REPLICAS` founding members named `<set>-<i>`; the
    cluster's DNS domain from `DISTSYNC_CLUSTER_DOMAIN`, default cluster.local). A pod whose
    ordinal is at or beyond the founding size was added by scaling up: it starts with --join
    and waits for the operator to add it (as a learner, then a voter)."""
    out: dict[str, str] = {}
    pod = os.environ.get("POD_NAME")
    replicas = os.environ.get("DISTSYNC_STATEFULSET_REPLICAS")
    svc = os.environ.get("DISTSYNC_PEER_SERVICE")
    ns = os.environ.get("POD_NAMESPACE", "default")
    port = os.environ.get("DISTSYNC_PORT", "7001")
    domain = os.environ.get("DISTSYNC_CLUSTER_DOMAIN") or "cluster.local"
    if pod and replicas and svc and "-" in pod:
        base = pod.rsplit("-", 1)[0]
        out["id"] = pod
        out["advertise"] = f"{pod}.{svc}.{ns}.svc.{domain}:{port}"
        out["peers"] = ",".join(
            f"{base}-{i}={base}-{i}.{svc}.{ns}.svc.{domain}:{port}"
            for i in range(int(replicas))
        )
        ordinal = pod.rsplit("-", 1)[1]
        if ordinal.isdigit() and int(ordinal) >= int(replicas):
            out["join"] = "1"
    return out


EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 1, 2, 3, 4


class _PlainErrors(click.Group):
    """Every command fails in one plain line, never a traceback: a user who typed a wrong
    address or token needs to read what went wrong, not where in the code. The traceback is
    still logged at DEBUG (`--log-level DEBUG`)."""

    def invoke(self, ctx: click.Context) -> Any:
        from .client import DistSyncError
        from .storage import StorageError

        try:
            return super().invoke(ctx)
        except DistSyncError as e:
            logging.getLogger("distsync.cli").debug("command failed", exc_info=True)
            if e.status in (401, 403):
                click.echo(f"error: the node refused the token ({e.status} {e.code}: "
                           f"{e.message}); pass --token or set DISTSYNC_TOKEN", err=True)
                ctx.exit(EXIT_REFUSED)
            if e.code == "unreachable":
                click.echo(f"error: no node answered: {e.message}", err=True)
                ctx.exit(EXIT_UNREACHABLE)
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_FAILED)
        except (OSError, TimeoutError) as e:
            logging.getLogger("distsync.cli").debug("command failed", exc_info=True)
            click.echo(f"error: {type(e).__name__}: {e}", err=True)
            ctx.exit(EXIT_FAILED)
        except StorageError as e:
            # A data directory the node must not use (another node's, locked by another
            # process, unreadable as a store): what to fix, not where in the code.
            logging.getLogger("distsync.cli").debug("storage refused", exc_info=True)
            click.echo(f"error: storage: {e}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=_PlainErrors, epilog="""\b
Exit codes:
  0  success
  1  failure: a demo check failed, a node died, or the command could not finish
  2  usage error (a bad option or argument)
  3  no node answered at the given address(es)
  4  a node refused the credentials (401/403)""")
@click.option("--log-level", default="INFO", envvar="DISTSYNC_LOG_LEVEL", show_default=True)
def main(log_level: str) -> None:
    """distsync: Raft-replicated locks, queues, cache and a key-value register."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option("--id", "node_id", envvar="DISTSYNC_ID", show_envvar=True,
              help="Node id (default: the pod name in a StatefulSet).")
@click.option("--listen", envvar="DISTSYNC_LISTEN", default="127.0.0.1:7001", show_default=True,
              callback=_host_port,
              help="host:port serving both the client API and peer traffic.")
@click.option("--advertise", envvar="DISTSYNC_ADVERTISE", default="", callback=_host_port,
              help="Address peers and clients use to reach this node (default: --listen).")
@click.option("--peers", envvar="DISTSYNC_PEERS", default="",
              help="Founding members id=host:port,... (self included or not).")
@click.option("--data-dir", envvar="DISTSYNC_DATA_DIR", default="./data", show_default=True)
@click.option("--join", is_flag=True, envvar="DISTSYNC_JOIN",
              help="Start empty and wait to be added (POST /v1/cluster/members).")
@click.option("--cluster", envvar="DISTSYNC_CLUSTER", default="distsync", show_default=True)
@click.option("--tick-ms", envvar="DISTSYNC_TICK_MS", default=50, show_default=True,
              type=click.IntRange(1, 10_000))
@click.option("--election-ticks", envvar="DISTSYNC_ELECTION_TICKS", default=10,
              show_default=True, type=click.IntRange(2, 10_000),
              help="Election timeout in ticks (more than the one-tick heartbeat).")
@click.option("--snapshot-threshold", envvar="DISTSYNC_SNAPSHOT_THRESHOLD", default=10_000,
              show_default=True, type=click.IntRange(1), help="Applied entries between snapshots.")
@click.option("--max-body-bytes", envvar="DISTSYNC_MAX_BODY_BYTES", default=1 << 20,
              show_default=True, type=click.IntRange(1))
@click.option("--redis-url", envvar="DISTSYNC_REDIS_URL", default="",
              help="Cache backend, redis://host:port/db (default: embedded, one node only).")
@click.option("--cache-max-bytes", envvar="DISTSYNC_CACHE_MAX_BYTES", default=64 << 20,
              show_default=True, type=click.IntRange(1),
              help="Capacity of this node's near cache (LRU by bytes).")
@click.option("--cache-max-value-bytes", envvar="DISTSYNC_CACHE_MAX_VALUE_BYTES",
              default=512 << 10, show_default=True, type=click.IntRange(1),
              help="Largest cache value (larger PUTs get 413).")
@click.option("--cache-lease-ms", envvar="DISTSYNC_CACHE_LEASE_MS", default=3000,
              show_default=True, type=click.IntRange(1),
              help="How long a node serves lines from a home it cannot reach.")
@click.option("--watch-history-events", envvar="DISTSYNC_WATCH_HISTORY_EVENTS", default=100_000,
              show_default=True, type=click.IntRange(1),
              help="kv changes kept in memory for watches to start from (README Watches).")
@click.option("--watch-history-bytes", envvar="DISTSYNC_WATCH_HISTORY_BYTES", default=64 << 20,
              show_default=True, type=click.IntRange(1),
              help="Bytes of that history (keys, values, ~190 per event).")
@click.option("--max-watchers", envvar="DISTSYNC_MAX_WATCHERS", default=10_000,
              show_default=True, type=click.IntRange(1),
              help="Watch streams this node serves at once (429 too_many_watchers past it).")
@click.option("--max-watchers-per-client", envvar="DISTSYNC_MAX_WATCHERS_PER_CLIENT",
              default=1000, show_default=True, type=click.IntRange(1),
              help="Of those, per client: its bearer token and Client-Id, or else its address "
                   "(429 too_many_watchers, limit max_watchers_per_client).")
@click.option("--watch-buffer-events", envvar="DISTSYNC_WATCH_BUFFER_EVENTS", default=1000,
              show_default=True, type=click.IntRange(1),
              help="Events queued per watcher before it is cancelled as a slow consumer.")
@click.option("--event-loop", envvar="DISTSYNC_EVENT_LOOP", default="auto", show_default=True,
              type=click.Choice(["auto", "uvloop", "asyncio"]),
              help="auto = uvloop when installed (less CPU per request), else asyncio.")
@security.node_options
def node(node_id: str | None, listen: str, advertise: str, peers: str, data_dir: str,
         join: bool, cluster: str, tick_ms: int, election_ticks: int,
         snapshot_threshold: int, max_body_bytes: int, redis_url: str,
         cache_max_bytes: int, cache_max_value_bytes: int, cache_lease_ms: int,
         watch_history_events: int, watch_history_bytes: int, max_watchers: int,
         max_watchers_per_client: int, watch_buffer_events: int, event_loop: str,
         **secure: str) -> None:
    """Run one node in the foreground until SIGTERM or Ctrl-C."""
    pod = _pod_defaults()
    node_id = node_id or pod.get("id")
    if not node_id:
        raise click.UsageError("--id (or DISTSYNC_ID, or POD_NAME in a StatefulSet) is required")
    cfg = NodeConfig(
        node_id=node_id, listen=listen, advertise=advertise or pod.get("advertise", ""),
        peers=parse_peers(peers or pod.get("peers", "")), data_dir=data_dir,
        join=join or bool(pod.get("join")),
        cluster=cluster, tick_ms=tick_ms, election_ticks=election_ticks,
        snapshot_threshold=snapshot_threshold, max_body_bytes=max_body_bytes,
        redis_url=redis_url, cache_max_bytes=cache_max_bytes,
        cache_max_value_bytes=cache_max_value_bytes, cache_lease_ms=cache_lease_ms,
        watch_history_events=watch_history_events, watch_history_bytes=watch_history_bytes,
        max_watchers=max_watchers, max_watchers_per_client=max_watchers_per_client,
        watch_buffer_events=watch_buffer_events,
        **security.node_config_kwargs(secure),
    )
    # A node process is a long-running server with a growing heap of long-lived state.
    gc.set_threshold(*GC_THRESHOLDS)
    run_loop(_run_node(cfg), event_loop)


# The collector's default (a young collection every 700 container allocations) took 6-10 %
# of a node's CPU under load (PUT c=64: 0.66 s of the leader's 8.5 s, 0.27 s of a
# follower's 2.7 s) and its full collections paused the loop about 40 ms each. A young
# collection every 10,000 allocations cut that to 0.11 s and 0.08 s, and p99 from 43 to
# 27 ms. Full collections keep their own pacing (only after the heap has grown by a
# quarter), so a large heap is not scanned more often.
GC_THRESHOLDS = (10_000, 20, 10)


def run_loop(main: Any, event_loop: str = "auto") -> Any:
    """Run a coroutine on uvloop when asked or available: on this workload (many small
    socket writes between three processes) it spends markedly less CPU per request than the
    default loop, and CPU is what a request's latency is made of on a small machine."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise click.UsageError("--event-loop uvloop: uvloop is not installed") from None
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


async def _run_node(cfg: NodeConfig) -> None:
    from .server import run_node

    await run_node(cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@main.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--base-port", default=0, type=int, help="First port (default: free ports).")
@click.option("--data-dir", default="", help="Where node data lives (default: a temp dir).")
def up(nodes: int, base_port: int, data_dir: str) -> None:
    """Start a local cluster of real node processes on loopback; Ctrl-C stops it."""
    from .cache.redis_proc import local_backend
    from .local import LocalCluster, NodeDied

    stop_signals = {signal.SIGINT, signal.SIGTERM}
    with local_backend(click.echo) as cache_args, LocalCluster(
        nodes, base_port=base_port, data_dir=data_dir or None, extra_args=cache_args
    ) as lc:
        try:
            # Blocked only now: a child inherits the signal mask, and a node started with
            # SIGTERM blocked could not be stopped gracefully.
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            lc.wait_ready()
            lc.leader(15.0)
            click.echo(lc.status_table())
            first = next(iter(lc.nodes.values()))
            click.echo(f"console: {first.url}/ui/  (every node serves it)")
            click.echo(f"cluster up: {' '.join(lc.addrs)}  (data in {lc.data_dir}); "
                       "Ctrl-C stops it")
            # Watch the nodes while waiting for Ctrl-C: a node that dies later is reported at
            # once, and the cluster stops, rather than leaving a silent minority running.
            while signal.sigtimedwait(stop_signals, 0.5) is None:
                lc.check_alive()
            click.echo("stopping...")
        except (NodeDied, TimeoutError) as e:
            lc.keep_data = True
            click.echo(f"error: {e}", err=True)
            click.echo(f"stopping the other nodes; node logs kept in {lc.data_dir}", err=True)
            sys.exit(EXIT_FAILED)


class _DemoCommand(click.Command):
    """Lists the scenarios in `--help` from the registry itself, so the list cannot go stale."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from .demo import SUMMARIES

        with formatter.section("Scenarios"):
            formatter.write_dl(sorted(SUMMARIES.items()))


@main.command(cls=_DemoCommand)
@click.argument("scenario", default="kv")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--writes", default=200, show_default=True, type=int, help="kv scenario size.")
def demo(scenario: str, nodes: int, writes: int) -> None:
    """Start a local cluster of real node processes and run SCENARIO against it. Exits 0 when
    every check held; a failed check or a node that dies exits 1 and keeps the node logs."""
    from .demo import SCENARIOS

    if scenario not in SCENARIOS:
        raise click.BadParameter(f"choose one of {', '.join(sorted(SCENARIOS))}",
                                 param_hint="SCENARIO")
    sys.exit(SCENARIOS[scenario](nodes=nodes, writes=writes))


@main.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def chaos(args: tuple[str, ...]) -> None:
    """Seeded chaos run: faults + workloads + checks (see README "Chaos testing"); `--help`
    lists its options."""
    from .testing.chaos import main as run

    sys.exit(run(list(args), prog="distsync chaos"))


@main.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Side-by-side benchmark against etcd, PySyncObj and Redis (benchmarks/run.py in the
    repository checkout; `--help` lists its options)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
    if not script.is_file():
        raise click.ClickException(
            f"{script} not found: the benchmarks ship with the repository, not the package. "
            "Clone the repository and run `pip install -e .` there (or run "
            "`python benchmarks/run.py` in it)."
        )
    env = {**os.environ, "DISTSYNC_PROG": "distsync bench"}  # its --help shows this usage
    sys.exit(subprocess.call([sys.executable, str(script), *args], env=env))


@main.command()
@click.option("--addr", "addrs", multiple=True, default=["127.0.0.1:7001"], show_default=True,
              envvar="DISTSYNC_ADDR", help="Any node's address; repeatable.")
@click.option("--token", envvar="DISTSYNC_TOKEN", default=None, help="API token (read role).")
@click.option("--ca", envvar="DISTSYNC_CA", default=None, help="CA file: use HTTPS.")
def status(addrs: tuple[str, ...], token: str | None, ca: str | None) -> None:
    """Print the cluster table as seen from every member."""
    from .client import BlockingClient
    from .local import format_status

    with BlockingClient(list(addrs), token=token, ca=ca) as c:
        click.echo(format_status(c.cluster_status()))


if __name__ == "__main__":
    main()
