"""The package as it ships: a wheel built from a clean copy of the package's files, installed
into a virtual environment of its own.

``scripts/install`` (a machine install) and ``scripts/shipped.py`` (the install the test suite
runs) both use it. Standard library only: it runs before any virtual environment exists.

The wheel is built from a copy holding only the files a build reads, never in the working
tree: setuptools reuses ``build/lib`` between builds, so a module deleted from the tree would
otherwise still ship. Any warning in the build's output fails the build.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import venv
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aiosvc"
#: Files beside the package that a build reads (metadata, the long description).
BUILD_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.rst")
#: What setuptools adds to a wheel's metadata on its own when present.
LICENSE_GLOBS = ("LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*")
#: The files that decide the package's dependencies.
DEPENDENCY_FILES = ("pyproject.toml", "setup.cfg", "setup.py")
#: Unset for the build (why: where it is used).
BUILD_UNSET = ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
#: setuptools' own "warning: ..." lines and Python warnings ("SetuptoolsDeprecationWarning: ...").
WARNING = re.compile(r"^\s*warning\b|\w*Warning:", re.IGNORECASE)
#: Runs in the build environment: ``requires`` writes what the backend needs beyond
#: build-system.requires, ``wheel`` builds and writes the wheel's file name, to the file named
#: last (the backend prints on stdout itself).
BACKEND_DRIVER = """
import importlib, sys
step, target, out, result = sys.argv[1:5]  # read first: setuptools edits sys.argv
module, _, attribute = target.partition(":")
backend = importlib.import_module(module)
for part in filter(None, attribute.split(".")):
    backend = getattr(backend, part)
if step == "requires":
    answer = "\\n".join(backend.get_requires_for_build_wheel())
else:
    answer = backend.build_wheel(out)
with open(result, "w") as file:
    file.write(answer)
"""


class ShipError(Exception):
    """Building or installing failed; the message says what and shows the tool's output."""


def package_files(root: Path = ROOT) -> list[str]:
    """Every file a build of the package reads, relative to ``root``, sorted."""
    found = {name for name in BUILD_FILES if (root / name).is_file()}
    for pattern in LICENSE_GLOBS:
        found.update(path.name for path in root.glob(pattern) if path.is_file())
    for path in (root / PACKAGE).rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            found.add(path.relative_to(root).as_posix())
    return sorted(found)


def digest(names: Iterable[str], root: Path = ROOT, *extra: str) -> str:
    """A hash of the files' names and contents, and of ``extra`` strings."""
    hashed = hashlib.sha256()
    for name in names:
        hashed.update(name.encode() + b"\0")
        hashed.update(hashlib.sha256((root / name).read_bytes()).digest())
    for text in extra:
        hashed.update(text.encode() + b"\0")
    return hashed.hexdigest()


def dependency_digest(root: Path = ROOT) -> str:
    """A hash of what decides the installed dependencies, the interpreter's version included."""
    names = [name for name in DEPENDENCY_FILES if (root / name).is_file()]
    return digest(names, root, sys.version)


def run(
    argv: Sequence[str | Path],
    what: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv``; return its output, or raise :class:`ShipError` with it."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
    )
    if result.returncode != 0:
        raise ShipError(f"{what} failed (exit status {result.returncode}):\n{result.stdout}")
    return str(result.stdout)


def create_venv(path: Path) -> Path:
    """A fresh virtual environment at ``path`` (whatever was there is removed); its python."""
    # The base interpreter, even when this runs inside another virtual environment.
    venv.EnvBuilder(clear=True, with_pip=True, symlinks=True).create(path)
    return path / "bin" / "python"


def pip_install(python: Path, *requirements: str | Path, options: Sequence[str] = ()) -> None:
    """``pip install`` into the environment of ``python``."""
    argv: list[str | Path] = [python, "-m", "pip", "install", "--quiet"]
    argv.append("--disable-pip-version-check")
    run([*argv, *options, *requirements], f"pip install {' '.join(map(str, requirements))}")


def _build_system(source: Path) -> tuple[list[str], str]:
    table = tomllib.loads((source / "pyproject.toml").read_text()).get("build-system", {})
    requires = list(table.get("requires", ["setuptools>=40.8.0"]))
    return requires, str(table.get("build-backend", "setuptools.build_meta:__legacy__"))


def build_wheel(out_dir: Path, *, build_env: Path, root: Path = ROOT) -> Path:
    """Build the wheel into ``out_dir`` from a clean copy of the package's files.

    ``build_env`` holds a virtual environment with build-system.requires; it is made, or
    reused when it was made for the same requirements.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aiosvc-build-") as tmp:
        source = Path(tmp) / "source"
        for name in package_files(root):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
        requires, backend = _build_system(source)
        python = _build_env(build_env, requires)
        # PYTHONDONTWRITEBYTECODE makes setuptools warn that it skips byte-compiling; the
        # source tree must not be importable from the build either.
        env = {k: v for k, v in os.environ.items() if k not in BUILD_UNSET}
        result = Path(tmp) / "result"

        def step(name: str, what: str) -> tuple[str, str]:
            argv: list[str | Path] = [python, "-c", BACKEND_DRIVER, name, backend, out_dir]
            output = run([*argv, result], what, cwd=source, env=env)
            return output, result.read_text()

        output, more = step("requires", "asking the build backend what it needs")
        if more.split():
            pip_install(python, *more.split())
        built, name = step("wheel", "building the wheel")
        output += built
    warnings = [line for line in output.splitlines() if WARNING.search(line)]
    if warnings:
        raise ShipError("the wheel's build printed warnings:\n" + output)
    return out_dir / name


def _build_env(path: Path, requires: list[str]) -> Path:
    python = path / "bin" / "python"
    stamp = path / "aiosvc-build-requires"
    wanted = "\n".join([sys.version, *requires])
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    create_venv(path)
    pip_install(python, *requires)
    stamp.write_text(wanted)
    return python


def relocate(env: Path, final: Path) -> None:
    """Make the environment built at ``env`` right for where it will run, ``final``: the
    scripts' ``#!`` lines and the activation scripts name ``final`` instead."""
    old, new = os.fsencode(env), os.fsencode(final)
    for path in [*(env / "bin").iterdir(), env / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
