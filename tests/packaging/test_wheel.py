"""The package as a user installs it: the wheel (not an editable checkout) in fresh virtual
environments, with only what pyproject.toml declares. This is the test that would have caught
the undeclared `orjson` that killed every node of a fresh install.

1. Build the wheel (`pip wheel --no-deps`) from a copy of the files git knows (tracked, or new
   and not ignored): building in the checkout would reuse a stale `build/` directory, whose
   modules from before a move end up in the wheel.
2. A fresh venv with the base dependencies only: every `distsync` module imports; the
   operator's modules need the `operator` extra and say so; `distsync demo` succeeds.
3. The same venv plus `[operator]`: every `distsync_operator` module imports and
   `distsync-operator --help` works.

Everything runs outside the checkout (cwd is a temp dir), so nothing can be imported from
the source tree by accident. No site or user packages are reused. Under `.ci/run` the
dependencies come from its wheelhouse (`DISTSYNC_WHEELHOUSE`, built by `pip wheel` from the
same pyproject.toml), without the index; elsewhere from the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IMPORT_ALL = """
import importlib, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
bad = []
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        bad.append(f"{m.name}: {type(e).__name__}: {e}")
print(pkg.__file__)
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if os.environ.get("DISTSYNC_WHEELHOUSE"):
        env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=os.environ["DISTSYNC_WHEELHOUSE"],
                   PIP_NO_COMPILE="1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"{res.args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src")
    files = _ok(_run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT))
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    _ok(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
              str(src)], cwd=out))
    (whl,) = out.glob("distsync-*.whl")
    return whl


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    venv = tmp_path_factory.mktemp("base") / "venv"
    _ok(_run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent))
    _ok(_run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=venv.parent))
    return venv


def test_every_module_imports_with_only_the_base_dependencies(base_venv: Path) -> None:
    out = _ok(_run([str(base_venv / "bin" / "python"), "-c", IMPORT_ALL, "distsync"],
                   cwd=base_venv.parent))
    assert out.startswith(str(base_venv)), f"imported from outside the venv: {out}"
    # No stray packages: the venv holds what the wheel declares, nothing from this machine.
    assert _run([str(base_venv / "bin" / "python"), "-c", "import pytest"],
                cwd=base_venv.parent).returncode != 0


def test_the_operator_needs_its_extra_and_says_which(base_venv: Path) -> None:
    res = _run([str(base_venv / "bin" / "distsync-operator"), "--help"], cwd=base_venv.parent)
    assert res.returncode != 0
    assert "pip install 'distsync[operator]'" in res.stderr, res.stderr


def test_readme_demo_succeeds_from_the_wheel(base_venv: Path) -> None:
    res = _run([str(base_venv / "bin" / "distsync"), "demo", "--writes", "40"],
               cwd=base_venv.parent, timeout=180)
    out = _ok(res)
    assert "OK: every acknowledged write survived" in out, out[-3000:]


def test_operator_extra_imports_and_runs(base_venv: Path, wheel: Path) -> None:
    _ok(_run([str(base_venv / "bin" / "pip"), "install", "-q", f"{wheel}[operator]"],
             cwd=base_venv.parent))
    _ok(_run([str(base_venv / "bin" / "python"), "-c", IMPORT_ALL, "distsync_operator"],
             cwd=base_venv.parent))
    out = _ok(_run([str(base_venv / "bin" / "distsync-operator"), "--help"],
                   cwd=base_venv.parent))
    assert "Usage: distsync-operator" in out, out


def test_the_wheel_ships_the_operator_console(wheel: Path) -> None:
    """Every file under node/distsync/console (the `/ui` page) is package data of the wheel:
    without them every node of an installed cluster would answer /ui/ with 404."""
    import zipfile

    source = ROOT / "node" / "distsync" / "console"
    want = {f"distsync/console/{p.relative_to(source).as_posix()}"
            for p in source.rglob("*") if p.is_file()}
    assert "distsync/console/index.html" in want and "distsync/console/js/app.js" in want
    with zipfile.ZipFile(wheel) as z:
        missing = want - set(z.namelist())
    assert not missing, f"console files missing from the wheel: {sorted(missing)}"
