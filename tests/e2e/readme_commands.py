"""The commands of README's "Run on Kubernetes" section: the e2e suite runs exactly these
(and an offline test checks they are there and consistent with the chart)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Run on Kubernetes"


def blocks(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The ```bash blocks of the section, each as its list of command lines."""
    text = readme.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    return [[ln.strip() for ln in body.splitlines() if ln.strip() and not ln.startswith("#")]
            for body in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def setup() -> list[str]:
    return blocks()[0]


def scale() -> list[str]:
    return blocks()[1]


def teardown() -> list[str]:
    return blocks()[2]
