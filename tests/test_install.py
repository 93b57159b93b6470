"""``scripts/install`` into a temporary root: the virtual environment, the units and the
configuration it writes, the installed units checked by ``systemd-analyze verify`` against
what is really installed, and the program run from there."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aiosvc import __version__
from tests import installed

ROOT = installed.ROOT
INSTALL = ROOT / "scripts" / "install"
sys.path.insert(0, str(ROOT / "scripts"))
import shiplib  # noqa: E402  (a script's module, beside the scripts that use it)

PREFIX = Path("/opt/aiosvc")
UNITS = Path("etc/systemd/system")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None or not Path("/bin/kill").exists(),
    reason="systemd-analyze or /bin/kill is missing (scripts/test installs them as root)",
)


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/install --root ROOT ARGS`` to completion."""
    return subprocess.run(
        [str(INSTALL), "--root", str(root), *args],
        env=installed.environ(),
        capture_output=True,
        text=True,
        timeout=installed.BUILD_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root the install script wrote into, building the wheel itself as on a machine."""
    root = tmp_path_factory.mktemp("root")
    result = install(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return root


def as_system(root: Path) -> None:
    """Give ``root`` what a Debian system has and the units rely on: systemd's own units (the
    targets they are ordered against) and ``/bin/kill`` (ExecReload)."""
    systemd = root / "usr" / "lib" / "systemd" / "system"
    if not systemd.exists():
        shutil.copytree("/usr/lib/systemd/system", systemd, symlinks=True)
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/kill", root / "usr" / "bin" / "kill")
    if not (root / "bin").exists():
        (root / "bin").symlink_to("usr/bin")  # relative: it resolves inside the root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify --root=ROOT`` on installed units: paths in them are looked up
    below ``root``, so ExecStart must be the program really installed there."""
    assert ANALYZE is not None
    paths = [str(root / UNITS / unit) for unit in units]
    return subprocess.run(
        [ANALYZE, "verify", f"--root={root}", *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---- what is written


def test_the_service_unit_is_the_template_with_the_prefix(deployed: Path) -> None:
    template = (ROOT / "config" / "aiosvc.service").read_text()
    assert re.findall(r"@[A-Z_]+@", template) == ["@PREFIX@", "@PREFIX@"]  # header, ExecStart
    unit = (deployed / UNITS / "aiosvc.service").read_text()
    assert unit == template.replace("@PREFIX@", str(PREFIX))
    lines = unit.splitlines()
    assert "ExecStart=/opt/aiosvc/bin/aiosvc serve --config /etc/aiosvc/aiosvc.toml" in lines
    for setting in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=control-group",
        "StateDirectory=aiosvc",
        "Environment=AIOSVC_DB=%S/aiosvc/aiosvc.db",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ):
        assert setting in lines
    socket = (deployed / UNITS / "aiosvc.socket").read_text()
    assert socket == (ROOT / "config" / "aiosvc.socket").read_text()


def test_the_configuration_is_written_readable_by_the_service(deployed: Path) -> None:
    etc = deployed / "etc" / "aiosvc"
    assert sorted(p.name for p in etc.iterdir()) == ["aiosvc.example.toml", "aiosvc.toml"]
    assert (etc / "aiosvc.toml").read_text() == (ROOT / "config" / "aiosvc.toml").read_text()
    example = (ROOT / "config" / "aiosvc.example.toml").read_text()
    assert (etc / "aiosvc.example.toml").read_text() == example
    for path in [*etc.iterdir(), *(deployed / UNITS).iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_the_environment_names_where_it_will_live(deployed: Path) -> None:
    env = deployed / "opt" / "aiosvc"
    assert (env / "bin" / "aiosvc").read_text().splitlines()[0] == "#!/opt/aiosvc/bin/python"
    for path in [*(env / "bin").iterdir(), env / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert str(deployed) not in path.read_text(errors="replace"), path


def run_installed(deployed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``aiosvc ARGS``, run by the environment's python: its ``#!`` line names
    ``/opt/aiosvc``, which this machine does not have."""
    env = deployed / "opt" / "aiosvc" / "bin"
    return subprocess.run(
        [str(env / "python"), str(env / "aiosvc"), *args],
        cwd=deployed,
        env=installed.environ(),
        capture_output=True,
        text=True,
        timeout=installed.COMMAND_TIMEOUT,
        check=False,
    )


def test_the_installed_program_runs_on_the_installed_configuration(
    deployed: Path, tmp_path: Path
) -> None:
    version = run_installed(deployed, "--version")
    assert (version.returncode, version.stdout) == (0, f"aiosvc {__version__}\n")
    config = deployed / "etc" / "aiosvc" / "aiosvc.toml"
    db = tmp_path / "aiosvc.db"
    result = run_installed(deployed, "check-config", "--config", str(config), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [
        f"config OK ({config})",
        f"listening on http://127.0.0.1:8420 as computer {socket.gethostname()!r}",
        "api keys: none (loopback only)",
        f"database: {db}",
    ]
    assert result.stdout.splitlines()[4] == "agents: echo (echo, default)"


# ---- systemd-analyze


@needs_analyze
def test_systemd_analyze_verifies_the_installed_units(deployed: Path) -> None:
    as_system(deployed)
    result = verify(deployed, "aiosvc.service", "aiosvc.socket")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_analyze
def test_verify_fails_when_the_program_is_not_installed(deployed: Path, tmp_path: Path) -> None:
    (tmp_path / UNITS).mkdir(parents=True)
    shutil.copy2(deployed / UNITS / "aiosvc.service", tmp_path / UNITS / "aiosvc.service")
    as_system(tmp_path)
    result = verify(tmp_path, "aiosvc.service")
    assert result.returncode != 0
    assert "Command /opt/aiosvc/bin/aiosvc is not executable" in result.stderr


@needs_analyze
def test_the_hardening_keeps_the_exposure_low(deployed: Path) -> None:
    assert ANALYZE is not None
    as_system(deployed)
    argv = [ANALYZE, "security", "--offline=true", f"--root={deployed}", "--threshold=20"]
    result = subprocess.run(
        [*argv, str(deployed / UNITS / "aiosvc.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # at most 2.0 of 10
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"→ Overall exposure level for aiosvc.service: [0-2]\.\d OK \S+", last)


# ---- refusals


def test_a_folder_that_is_not_an_environment_is_never_emptied(tmp_path: Path) -> None:
    target = tmp_path / "opt" / "aiosvc"
    target.mkdir(parents=True)
    (target / "precious").write_text("keep me")
    result = install(tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"install: {target} exists and is not a virtual environment: choose another --prefix\n"
    )
    assert [p.name for p in target.iterdir()] == ["precious"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt"]


def test_a_relative_prefix_is_refused(tmp_path: Path) -> None:
    result = install(tmp_path, "--prefix", "opt/aiosvc")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "scripts/install: error: --prefix must be an absolute path, not opt/aiosvc"
    )
    assert list(tmp_path.iterdir()) == []


# ---- an upgrade: last, as it changes the module's install


def test_installing_again_replaces_the_program_and_keeps_the_configuration(
    deployed: Path, tmp_path: Path
) -> None:
    wheel = shiplib.build_wheel(tmp_path / "wheel", build_env=ROOT / ".shipped" / "build-env")
    config = deployed / "etc" / "aiosvc" / "aiosvc.toml"
    config.write_text("[server]\nport = 9000\n")
    config.chmod(0o640)
    example = config.parent / "aiosvc.example.toml"
    example.write_text("# old\n")
    stale = deployed / "opt" / "aiosvc" / "lib" / "stale"
    stale.write_text("")
    result = install(deployed, "--wheel", str(wheel))
    assert result.returncode == 0, result.stderr
    assert f"kept {config}" in result.stdout.splitlines()
    assert config.read_text() == "[server]\nport = 9000\n"
    assert config.stat().st_mode & 0o777 == 0o640
    assert example.read_text() == (ROOT / "config" / "aiosvc.example.toml").read_text()
    assert not stale.exists()  # the environment is made anew
    version = run_installed(deployed, "--version")
    assert (version.returncode, version.stdout) == (0, f"aiosvc {__version__}\n")
