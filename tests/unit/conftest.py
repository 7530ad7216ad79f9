"""Makes the paper tests' step harness (tests/unit/raftsim.py) importable as `raftsim` under any pytest
import mode."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
