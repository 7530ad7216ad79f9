"""Entry point placeholder: the kopf operator arrives with the Kubernetes issue."""

import sys


def main() -> None:
    print("distsync-operator: not implemented yet (see the Kubernetes issue)", file=sys.stderr)
    sys.exit(2)
