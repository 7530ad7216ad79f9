"""`python -m distsync.testing.check_history HISTORY.jsonl [--workload kv]`: check a history
saved by a chaos run (see distsync.testing.history) with that workload's checks.

Apart from the checker (linearizability.py) because it needs the workloads, which are built
on the checker: the command sits above both.
"""

from __future__ import annotations

import argparse
import json
import sys

from .history import History
from .workloads import WORKLOADS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("history")
    p.add_argument("--workload", default="kv", choices=sorted(WORKLOADS))
    a = p.parse_args(argv)
    hist = History.load(a.history)
    verdict = WORKLOADS[a.workload].check(hist)
    print(json.dumps(verdict.as_dict(), indent=2, default=str))
    return 0 if verdict.valid else 1


if __name__ == "__main__":
    sys.exit(main())
