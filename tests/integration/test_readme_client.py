"""Every ```python block of README runs, as a user would paste it, against a real local
cluster (issue 20). A block that is only a fragment of someone else's code is marked in the
README with `<!-- readme-test: skip (why) -->` on the line before it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import ready

from distsync.local import LocalCluster

README = Path(__file__).resolve().parents[2] / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip \((.+?)\) -->\s*$")


def python_blocks() -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of each ```python block."""
    lines = README.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            j = start
            while lines[j].strip() != "```":
                j += 1
            m = SKIP.search(lines[i - 1]) if i else None
            out.append((start, "\n".join(lines[start:j]) + "\n", m.group(1) if m else None))
            i = j
        i += 1
    return out


BLOCKS = python_blocks()


@pytest.fixture(scope="module")
def readme_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as lc:
        ready(lc)
        yield lc


def test_readme_has_the_client_blocks() -> None:
    runnable = [b for b in BLOCKS if b[2] is None]
    assert len(runnable) >= 6, [b[0] for b in BLOCKS]
    text = "".join(code for _, code, _ in runnable)
    for form in ("async with c.lock(", "msg.process()", "with msg.process():",
                 "codec=\"json\"", "get_or_set", "acquire(timeout=5)", "lock.extend()",
                 "c.semaphore(", "c.double_barrier(", ".wait(timeout="):
        assert form in text, form


def test_every_coordination_recipe_has_a_runnable_block() -> None:
    """README "Coordination recipes": each recipe (a ### subsection) is a program CI runs,
    and the first two use ephemeral keys, listings and watches."""
    text = README.read_text()
    start = text.index("\n## Coordination recipes\n")
    end = text.index("\n## ", start + 1)
    lines = text[:end].count("\n")
    first = text[:start].count("\n")
    recipes = re.split(r"\n### ", text[start:end])[1:]
    names = [r.split("\n", 1)[0] for r in recipes]
    assert names[:2] == ["Service discovery", "Configuration push"], names
    runnable = [b for b in BLOCKS if b[2] is None and first < b[0] <= lines]
    for name, body in zip(names, recipes, strict=True):
        assert "```python\n" in body, f"recipe {name!r} has no python block"
    assert len(runnable) >= len(names), (names, [b[0] for b in runnable])
    code = "".join(b[1] for b in runnable)
    for form in ("session=", ".list(", ".watch(prefix=", 'listing["revision"] + 1'):
        assert form in code, form


@pytest.mark.parametrize("line,code,skip", BLOCKS, ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_readme_block_runs(readme_cluster: LocalCluster, line: int, code: str,
                           skip: str | None) -> None:
    if skip is not None:
        pytest.skip(f"README.md:{line} is marked: {skip}")
    addrs = readme_cluster.addrs
    # the README's example addresses (127.0.0.1:7001...) become this cluster's nodes
    script = re.sub(r"127\.0\.0\.1:700([1-9])",
                    lambda m: addrs[(int(m.group(1)) - 1) % len(addrs)], code)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert res.returncode == 0, (
        f"README.md:{line} failed (exit {res.returncode})\n--- stdout ---\n{res.stdout}"
        f"\n--- stderr ---\n{res.stderr}")
