"""The peers of the side-by-side run (etcd, PySyncObj): find each adapter in `systems/`,
install what is missing with `setup_peers.py` before anything starts, and build the adapter.
A peer that still cannot run is recorded with the reason, which its table rows then show:
never a silent skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = {"etcd": "benchmarks.systems.etcd", "pysyncobj": "benchmarks.systems.pysyncobj",
         "floor": "benchmarks.systems.floor"}
SETUP = HERE / "setup_peers.py"


def _peer_class(module: Any, name: str) -> type:
    """The class in a peer adapter module whose `name` is the peer's name."""
    for obj in vars(module).values():
        if (inspect.isclass(obj) and obj.__module__ == module.__name__
                and getattr(obj, "name", None) == name and hasattr(obj, "start")):
            return obj
    raise RuntimeError(f"{module.__name__} defines no system named {name!r}")


def _peer_ready(name: str) -> str | None:
    """None if the adapter exists and says its peer is installed, else why not."""
    mod_name = PEERS[name]
    if importlib.util.find_spec(mod_name) is None:
        return f"adapter {mod_name.replace('.', '/')}.py does not exist (not written yet)"
    mod = importlib.import_module(mod_name)
    available = getattr(mod, "available", None)
    if available is not None and not available():
        return f"{name} is not installed on this machine"
    return None


def setup_peers(b: Any, names: list[str], needs_redis: bool) -> None:
    """Install missing peers with setup_peers.py (Debian/PyPI) before anything starts, so a
    missing peer is installed rather than skipped; what still cannot run is reported."""
    missing = {n: why for n in names if (why := _peer_ready(n)) is not None}
    tools = [t for t, ok in (("redis-server", shutil.which("redis-server") or not needs_redis),
                             ("matplotlib", importlib.util.find_spec("matplotlib"))) if not ok]
    if b.args.no_setup or not (missing or tools):
        for n, why in missing.items():
            b.down[n] = why
        return
    if not SETUP.exists():
        for n, why in missing.items():
            b.down[n] = f"{why}; benchmarks/setup_peers.py does not exist to install it"
        return
    b.say(f"missing ({', '.join([*missing, *tools])}): running {SETUP.name} ...")
    proc = subprocess.run([sys.executable, str(SETUP)], capture_output=True, text=True,
                          timeout=1200)
    b.report["peer_setup"] = {"returncode": proc.returncode,
                              "output_tail": (proc.stdout + proc.stderr)[-2000:]}
    importlib.invalidate_caches()
    for n in missing:
        for mod in [m for m in sys.modules if m.startswith(PEERS[n])]:
            del sys.modules[mod]
        why = _peer_ready(n)
        if why is not None:
            b.down[n] = f"{why} (setup_peers.py exited {proc.returncode})"


def make_peer(name: str, nodes: int, work: Path, python: str | None = None) -> Any:
    """`python`: the interpreter of distsync's nodes, for a peer that runs Python of ours
    (the relay floor) and takes one."""
    cls = _peer_class(importlib.import_module(PEERS[name]), name)
    params = inspect.signature(cls).parameters
    kw: dict[str, Any] = {}
    if "python" in params and python:
        kw["python"] = python
    if "nodes" in params:
        kw["nodes"] = nodes
    if "data_dir" in params:
        kw["data_dir"] = str(work / name)
    return cls(**kw)
