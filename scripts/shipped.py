#!/usr/bin/env python3
"""Make (or reuse) the install the test suite runs, and print its directory.

The wheel is built from a clean copy of the package's files and installed, not editable, into
a virtual environment of its own (``.shipped/venv`` unless ``--cache`` says otherwise), which
has nothing else in it but the package's dependencies. It is reused while no package file
(``aiosvc/``, setup.cfg, pyproject.toml, README.rst) changed. When one changed, the wheel is
built again and reinstalled over the previous one (pip removes every file the previous one
installed); when the dependencies or the interpreter changed, the environment is made anew.
``scripts/test`` runs this and names the result in ``AIOSVC_TEST_INSTALL``; the tests run it
themselves when that is not set.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shiplib

STATE = "aiosvc-shipped.json"


def ensure(cache: Path, root: Path = shiplib.ROOT) -> Path:
    """The directory of an install of the package as it is in ``root`` now."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once take turns
        env = cache / "venv"
        wanted = {
            "package": shiplib.digest(shiplib.package_files(root), root),
            "dependencies": shiplib.dependency_digest(root),
        }
        state_file = env / STATE
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        if state == wanted and (env / "bin" / "aiosvc").is_file():
            return env
        print("building the wheel", file=sys.stderr)
        wheels = cache / "wheel"
        shutil.rmtree(wheels, ignore_errors=True)
        wheel = shiplib.build_wheel(wheels, build_env=cache / "build-env", root=root)
        state_file.unlink(missing_ok=True)  # an interrupted install is never taken as done
        if state.get("dependencies") == wanted["dependencies"] and (env / "bin").is_dir():
            print(f"reinstalling {wheel.name} in {env}", file=sys.stderr)
            options = ["--force-reinstall", "--no-deps"]
            shiplib.pip_install(env / "bin" / "python", wheel, options=options)
        else:
            print(f"installing {wheel.name} into a new environment, {env}", file=sys.stderr)
            shiplib.pip_install(shiplib.create_venv(env), wheel)
        state_file.write_text(json.dumps(wanted))
        return env


def main() -> int:
    """Print the directory of an up-to-date install."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=shiplib.ROOT / ".shipped")
    args = parser.parse_args()
    try:
        print(ensure(args.cache.resolve()))
    except shiplib.ShipError as exc:
        print(f"shipped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
