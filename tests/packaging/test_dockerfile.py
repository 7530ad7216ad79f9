"""The Dockerfile installs what pyproject.toml declares. No Docker daemon runs here, so this
reads the file: the image must hold every package directory and the readme pyproject names,
install the extras its two entrypoints need (the node: base dependencies; the operator:
`operator`), and run console scripts that exist."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    """Every `name` instruction, with its continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in text.splitlines()
            if line.strip().upper().startswith(name + " ")]


def _pip_targets(verb: str) -> list[str]:
    out = []
    for run in _instructions("RUN"):
        for cmd in run.split("&&"):
            words = shlex.split(cmd)
            if "pip" in words and verb in words:
                out += [w for w in words[words.index(verb) + 1:] if not w.startswith("-")
                        and not w.startswith("/")]
    return out


def _extras(target: str) -> set[str]:
    m = re.fullmatch(r"[^\[]+\[([^\]]*)\]", target)
    return {e.strip() for e in m.group(1).split(",")} if m else set()


def test_the_image_copies_every_package_dir_and_the_readme() -> None:
    copied = {Path(w).as_posix().rstrip("/") for c in _instructions("COPY")
              for w in shlex.split(c)[:-1] if not w.startswith("--")}
    needed = {Path(d).parts[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    needed |= {"pyproject.toml", PYPROJECT["project"]["readme"]}
    assert needed <= copied, f"the build stage lacks {sorted(needed - copied)}"


def test_the_wheel_build_and_the_install_use_declared_extras_the_entrypoints_need() -> None:
    built, installed = _pip_targets("wheel"), _pip_targets("install")
    assert built and installed, "no pip wheel / pip install line found"
    declared = set(PYPROJECT["project"]["optional-dependencies"])
    for target in built + installed:
        assert _extras(target) <= declared, f"{target}: extra not declared in pyproject"
    # The image runs both `distsync node` and `distsync-operator`: the operator needs its extra.
    assert "operator" in _extras(built[0]) and "operator" in _extras(installed[0])
    assert installed[0].split("[")[0] == PYPROJECT["project"]["name"]
    # Test-only extras have no place in the image.
    assert not ({"test", "bench"} & (_extras(built[0]) | _extras(installed[0])))


def test_entrypoint_and_documented_commands_are_console_scripts() -> None:
    scripts = set(PYPROJECT["project"]["scripts"])
    (entry,) = _instructions("ENTRYPOINT")
    assert shlex.split(entry.strip("[]").replace(",", " "))[0].strip('"') in scripts
    for script in re.findall(r"docker run [^\n]*?distsync:\S+ (\S+)", DOCKERFILE):
        assert script in scripts, f"the Dockerfile's comment runs {script}, not a console script"
