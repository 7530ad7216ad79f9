"""`distsync-operator`: run the kopf operator for DistSyncCluster.

    distsync-operator [--namespace NS ...] [--all-namespaces] [--liveness URL]
    distsync-operator delete-cluster NAME --namespace NS [--timeout S]   (cleanup.py)

It is `kopf run --standalone -m distsync_operator.handlers` with the namespaces given by
flags or by `DISTSYNC_OPERATOR_NAMESPACES` (comma-separated; empty: all namespaces).
"""

from __future__ import annotations

import os
import sys


def argv(args: list[str]) -> list[str]:
    """The `kopf run` command line for our arguments."""
    out = ["run", "--standalone", "-m", "distsync_operator.handlers"]
    if not any(a in ("--namespace", "-n", "--all-namespaces", "-A") or a.startswith(
            "--namespace=") for a in args):
        spaces = [s.strip() for s in os.environ.get("DISTSYNC_OPERATOR_NAMESPACES", "")
                  .split(",") if s.strip()]
        out += [f"--namespace={s}" for s in spaces] if spaces else ["--all-namespaces"]
    return out + args


def main() -> None:
    try:
        if sys.argv[1:2] == ["delete-cluster"]:
            from .cleanup import main as cleanup_main

            sys.exit(cleanup_main(sys.argv[2:]))
        from kopf.cli import main as kopf_main
    except ImportError as e:  # the base install has no kopf: say which extra brings it
        sys.exit(f"distsync-operator needs the operator extra ({e}): "
                 "pip install 'distsync[operator]'")

    sys.exit(kopf_main(argv(sys.argv[1:]), prog_name="distsync-operator"))


if __name__ == "__main__":
    main()
