"""Conditional cache writes (`PUT ?nx=1`, `?if_version=n`): the one rule both places that
order a write (the E owner for a silent write, the home for a PUTX) apply."""

from __future__ import annotations

from typing import Any


def cond_holds(cond: dict[str, Any], version: int) -> bool:
    """Whether a conditional write may go ahead over a key at `version` (0: absent)."""
    if cond.get("nx"):
        return version == 0
    if "if_version" in cond:
        return bool(version == cond["if_version"])
    return True
