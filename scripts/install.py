"""Install aiosvc on this machine as a systemd service (run through ``scripts/install``).

1. Build the wheel from this tree (or take ``--wheel``) and install it, with its dependencies,
   into a virtual environment of its own at the prefix (``/opt/aiosvc``), made anew each time.
2. Write ``/etc/systemd/system/aiosvc.service`` (``config/aiosvc.service`` with ``@PREFIX@``
   replaced) and ``aiosvc.socket``.
3. Write ``/etc/aiosvc/aiosvc.example.toml``, and ``/etc/aiosvc/aiosvc.toml`` only when there
   is none: a configuration is never overwritten.

``--root DIR`` puts every file under DIR instead of ``/`` (as DESTDIR does), for packaging and
tests; what is installed then names the paths it will have once DIR is the root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shiplib

CONFIG = shiplib.ROOT / "config"
UNITS = Path("etc/systemd/system")
ETC = Path("etc/aiosvc")
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


class InstallError(Exception):
    """The install cannot go on; the message says why."""


def under(root: Path, path: Path) -> Path:
    """``path`` (absolute) as it is found below ``root``."""
    return root / path.relative_to("/")


def unit_text(prefix: Path) -> str:
    """The service unit for an install at ``prefix``."""
    text = (CONFIG / "aiosvc.service").read_text().replace("@PREFIX@", str(prefix))
    left = sorted(set(PLACEHOLDER.findall(text)))
    if left:
        raise InstallError(f"config/aiosvc.service: unknown placeholders {', '.join(left)}")
    return text


def write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` (its folders made as needed) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def check_target(target: Path) -> None:
    """Refuse to empty a folder that is not a virtual environment (say, ``--prefix /usr``)."""
    if target.exists() and any(target.iterdir()) and not (target / "pyvenv.cfg").is_file():
        raise InstallError(
            f"{target} exists and is not a virtual environment: choose another --prefix"
        )


def install_venv(target: Path, prefix: Path, wheel: Path | None) -> None:
    """Make the virtual environment at ``target`` (``prefix`` once installed) with the wheel."""
    with tempfile.TemporaryDirectory(prefix="aiosvc-install-") as tmp:
        if wheel is None:
            print("building the wheel")
            wheel = shiplib.build_wheel(Path(tmp) / "wheel", build_env=Path(tmp) / "build-env")
        print(f"installing {wheel.name} into {target}")
        python = shiplib.create_venv(target)
        shiplib.pip_install(python, wheel)
    if target != prefix:
        shiplib.relocate(target, prefix)


def install(root: Path, prefix: Path, wheel: Path | None) -> list[str]:
    """Install everything under ``root``; return what to tell the operator."""
    target = under(root, prefix)
    check_target(target)
    unit = unit_text(prefix)
    install_venv(target, prefix, wheel)
    units = under(root, Path("/") / UNITS)
    write(units / "aiosvc.service", unit)
    shutil.copyfile(CONFIG / "aiosvc.socket", units / "aiosvc.socket")
    (units / "aiosvc.socket").chmod(0o644)
    print(f"wrote {units / 'aiosvc.service'} and aiosvc.socket")
    etc = under(root, Path("/") / ETC)
    write(etc / "aiosvc.example.toml", (CONFIG / "aiosvc.example.toml").read_text())
    config = etc / "aiosvc.toml"
    if config.exists():
        print(f"kept {config}")
    else:
        write(config, (CONFIG / "aiosvc.toml").read_text())
        print(f"wrote {config}")
    return [
        f"check the configuration: {prefix}/bin/aiosvc check-config "
        f"--config /{ETC}/aiosvc.toml --db /var/lib/aiosvc/aiosvc.db",
        "start it at boot and now: systemctl enable --now aiosvc",
        "(or on demand, by socket activation: systemctl enable --now aiosvc.socket)",
    ]


def reload_systemd() -> None:
    """Let a running systemd see the new units, and restart aiosvc if it was running."""
    if not Path("/run/systemd/system").is_dir():
        return  # systemd is not running here (a container, a chroot)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    subprocess.run(["systemctl", "try-restart", "aiosvc.service"], check=True)


def main() -> int:
    """Parse the options and install."""
    parser = argparse.ArgumentParser(
        prog="scripts/install", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument("--prefix", type=Path, default=Path("/opt/aiosvc"), help="%(default)s")
    parser.add_argument("--root", type=Path, default=Path("/"), help="%(default)s")
    parser.add_argument("--wheel", type=Path, help="install this wheel instead of building one")
    args = parser.parse_args()
    if not args.prefix.is_absolute():
        parser.error(f"--prefix must be an absolute path, not {args.prefix}")
    root = args.root.resolve()
    if root == Path("/") and os.geteuid() != 0:
        parser.error("installing into / needs root (or give --root DIR)")
    os.umask(0o022)  # the service's user must be able to read everything installed
    try:
        steps = install(root, Path(os.path.normpath(args.prefix)), args.wheel)
    except (InstallError, shiplib.ShipError, OSError) as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 1
    if root == Path("/"):
        reload_systemd()
    print("\n".join(["", "next:", *(f"  {step}" for step in steps)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
