"""The installed ``aiosvc`` that every end-to-end test runs: the wheel as it ships, never the
source tree.

``scripts/test`` builds the wheel, installs it into a clean virtual environment
(``scripts/shipped.py``) and names that environment in ``AIOSVC_TEST_INSTALL``. When pytest
runs without it, the first test that needs the program runs ``scripts/shipped.py`` itself,
which reuses its cached install while no package file changed and rebuilds it otherwise.
``AIOSVC_TEST_INSTALL`` may name any other install to test, such as ``/opt/aiosvc``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_VARIABLE = "AIOSVC_TEST_INSTALL"
#: What a supervisor hands its child: a test's process must not inherit the test runner's.
SUPERVISOR = frozenset(
    ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")
)
#: Bound on every short-lived command; they take about a second.
COMMAND_TIMEOUT = 60.0
#: Building the wheel and a fresh environment takes about 20 s; a cold pip cache longer.
BUILD_TIMEOUT = 600.0


@functools.cache
def install_dir() -> Path:
    """The virtual environment holding the installed package (built on first use)."""
    given = os.environ.get(INSTALL_VARIABLE, "").strip()
    if given:
        path = Path(given)
    else:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "shipped.py")],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"cannot build and install the wheel:\n{result.stderr}")
        path = Path(result.stdout.strip())
    if not os.access(path / "bin" / "aiosvc", os.X_OK):
        raise RuntimeError(f"{INSTALL_VARIABLE}={path}: no executable {path / 'bin' / 'aiosvc'}")
    return path


def program() -> Path:
    """The installed ``aiosvc`` executable."""
    return install_dir() / "bin" / "aiosvc"


def argv(*args: str) -> list[str]:
    """The command line running the installed ``aiosvc`` with ``args``."""
    return [str(program()), *args]


def environ(**extra: str) -> dict[str, str]:
    """The test's environment for an ``aiosvc`` process, plus ``extra``: without aiosvc's own
    variables, a supervisor's, or a PYTHONPATH that could put the source tree first."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AIOSVC_") and name not in SUPERVISOR and name != "PYTHONPATH"
    }
    return env | extra


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``aiosvc ARGS`` to completion in ``cwd`` (output captured, unless
    ``stdout`` names where it goes)."""
    return subprocess.run(
        argv(*args),
        cwd=cwd,
        env=environ() if env is None else env,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
