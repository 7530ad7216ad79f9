"""How every `distsync demo` scenario runs: start a local cluster, wait for a leader, run the
scenario, and fail loudly. A node that crashes (at start-up or mid-scenario) ends the demo
with its id, exit code and log tail, and the logs are kept, because a demo that fails with
only "timed out waiting for a leader" teaches a new user nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import click

from ..local import LocalCluster, NodeDied


def run_scenario(
    nodes: int, scenario: Callable[[LocalCluster], Awaitable[int]], ok: str,
    extra_args: list[str] | None = None, show_table: bool = True,
) -> int:
    """Run `scenario` on a fresh cluster; its result (0 = every check held) is the exit
    status. On any failure the data directory stays and its path is printed."""
    with LocalCluster(nodes, extra_args=extra_args) as lc:
        click.echo(f"starting {nodes} nodes on loopback (data in {lc.data_dir}) ...")
        try:
            lc.wait_ready(30)
            lc.leader()
            if show_table:
                click.echo(lc.status_table() + "\n")
            rc = asyncio.run(scenario(lc))
            lc.check_alive()  # a node that died mid-scenario fails it, even if checks held
        except NodeDied as e:
            click.echo(f"\nFAILED: {e}", err=True)
            rc = 1
        except Exception as e:  # noqa: BLE001 - a demo reports, it does not dump a traceback
            click.echo(f"\nFAILED: {type(e).__name__}: {e}", err=True)
            rc = 1
        if show_table and rc == 0:
            click.echo("\n" + lc.status_table())
        if rc == 0:
            click.echo(f"\nOK: {ok}")
        else:
            lc.keep_data = True
            click.echo(f"\nFAILED; node logs kept in {lc.data_dir}", err=True)
        return rc
