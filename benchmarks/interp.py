"""What interpreter distsync's nodes run on in a benchmark, said in every result's header.

Why it matters: the same code runs measurably faster or slower depending on how its CPython
was built. On this project's machine, pyenv's 3.11 (configured `--enable-shared` without
`--enable-optimizations`: the interpreter is a shared libpython, every call inside it goes
through the PLT, and it has no profile-guided optimisation) costs about a fifth more server
CPU per PUT at c=64 than Debian's /usr/bin/python3.11 (libpython linked into the executable,
built the way Debian builds it) on the same code (benchmarks/README.md, "The interpreter").
The image the Dockerfile builds runs on `python:3.11-slim`, whose CPython is configured
`--enable-optimizations --with-lto`. So a result says which kind it measured, and
`--node-python` (run.py, ab.py) chooses.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

# Run inside the interpreter described: facts it can only tell about itself.
_PROBE = r"""
import json, platform, sys, sysconfig
with open("/proc/self/maps") as f:
    shared = "libpython" in f.read()
configure = sysconfig.get_config_var("CONFIG_ARGS") or ""
out = {"executable": sys.executable, "version": platform.python_version(),
       "implementation": platform.python_implementation(),
       "libpython_shared": shared,
       "configure_optimizations": "--enable-optimizations" in configure,
       "configure_lto": "--with-lto" in configure}
# Debian builds its python3.x with PGO and LTO, and keeps the flags out of sysconfig (its
# changelog: "Enable LTO/PGO builds on some architectures", "Don't propagate lto flags to
# the _sysconfigdata module"): CONFIG_ARGS alone would call it an unoptimised build.
import os
ver = "%d.%d" % sys.version_info[:2]
out["debian_package"] = sys.base_prefix == "/usr" and os.path.exists(
    f"/usr/share/doc/python{ver}/changelog.Debian.gz")
try:
    import distsync
    out["distsync"] = str(distsync.__path__[0])
except Exception as e:
    out["distsync_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def describe_python(python: str | Path) -> dict[str, Any]:
    """The interpreter's version, whether its libpython is a shared library, what its
    configure line asked for, and where it imports distsync from. Raises SystemExit with a
    plain reason when it cannot run or cannot import distsync (the nodes would not start)."""
    try:
        proc = subprocess.run([str(python), "-P", "-c", _PROBE], capture_output=True,
                              text=True, timeout=60)
    except OSError as e:
        raise SystemExit(f"--node-python {python}: cannot run it ({e})") from None
    if proc.returncode != 0:
        raise SystemExit(f"--node-python {python}: exited {proc.returncode}: "
                         f"{proc.stderr.strip()[-500:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["path"] = str(python)
    if "distsync_error" in info:
        raise SystemExit(f"--node-python {python} cannot import distsync "
                         f"({info['distsync_error']}); install it there first, e.g. "
                         f"`{python} -m pip install -e .`")
    return info


def python_summary(info: dict[str, Any], checkout: Path | None = None) -> str:
    """One line for a result's header; says so when the nodes import another distsync than
    `checkout`'s (a stale install would measure other code)."""
    lib = "shared libpython" if info["libpython_shared"] else "libpython linked in"
    conf = [flag for flag, on in (("--enable-optimizations", info["configure_optimizations"]),
                                  ("--with-lto", info["configure_lto"])) if on]
    line = (f"{info['path']} ({info['implementation']} {info['version']}, {lib}, configure "
            f"{' '.join(conf) if conf else 'without --enable-optimizations or --with-lto'}")
    if info.get("debian_package"):
        line += "; Debian's package, built with PGO and LTO outside configure"
    line += ")"
    if checkout is not None:
        want = (checkout / "node" / "distsync").resolve()
        if Path(info["distsync"]).resolve() != want:
            line += f"; WARNING: it imports distsync from {info['distsync']}, not {want}"
    return line
