"""The package as it ships: the wheel's install holds the whole package, is what the
end-to-end tests run, and serves from there."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest

from aiosvc import __version__
from tests import installed
from tests.serving import Server

ROOT = installed.ROOT
sys.path.insert(0, str(ROOT / "scripts"))
import shiplib  # noqa: E402  (a script's module, beside the scripts that use it)

#: Run by the installed interpreter: where the package is, and its distribution's files.
INSPECT = """
import importlib.metadata, json, sysconfig, aiosvc
dist = importlib.metadata.distribution("aiosvc")
print(json.dumps({
    "module": aiosvc.__file__,
    "purelib": sysconfig.get_paths()["purelib"],
    "version": dist.version,
    "scripts": [(e.name, e.value) for e in dist.entry_points if e.group == "console_scripts"],
    "files": {str(f): f.hash.value for f in dist.files if f.hash is not None},
}))
"""


def record_hash(data: bytes) -> str:
    """A file's hash as a wheel's RECORD writes it (urlsafe base64 of sha256, unpadded)."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def source_files(root: Path) -> dict[str, str]:
    """Every file of the package in a source tree (modules and data), with its RECORD hash."""
    found = {}
    for path in sorted((root / "aiosvc").rglob("*")):
        relative = path.relative_to(root)
        hidden = any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
        if path.is_file() and not hidden:
            found[relative.as_posix()] = record_hash(path.read_bytes())
    return found


def package_part(files: dict[str, str]) -> dict[str, str]:
    """The entries of a distribution's file list that belong to the package itself."""
    return {
        name: digest
        for name, digest in files.items()
        if name.startswith("aiosvc/") and "/__pycache__/" not in name
    }


@pytest.fixture(scope="module")
def inspected() -> dict[str, object]:
    """What the installed interpreter says about the installed package."""
    python = installed.install_dir() / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", INSPECT],
        cwd="/",  # nowhere near the source tree
        env=installed.environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


def test_the_installed_package_is_not_the_source_tree(inspected: dict[str, object]) -> None:
    module = Path(str(inspected["module"]))
    assert module == Path(str(inspected["purelib"])) / "aiosvc" / "__init__.py"
    assert not module.is_relative_to(ROOT / "aiosvc")
    assert module.is_relative_to(installed.install_dir())
    assert inspected["version"] == __version__
    assert inspected["scripts"] == [["aiosvc", "aiosvc.cli:main"]]


def test_every_file_of_the_package_is_installed_as_it_is_in_the_tree(
    inspected: dict[str, object],
) -> None:
    files = inspected["files"]
    assert isinstance(files, dict)
    shipped, expected = package_part(files), source_files(ROOT)
    assert sorted(set(expected) - set(shipped)) == [], "missing from the install"
    assert sorted(set(shipped) - set(expected)) == [], "installed but not in the tree"
    changed = sorted(name for name in expected if shipped[name] != expected[name])
    assert changed == [], "installed copies differ from the tree: the install is stale"
    # the ones that went missing before: a package without __init__.py, and package data
    for name in ("aiosvc/web/__init__.py", "aiosvc/store/migrations/0001_initial.sql"):
        assert name in shipped
    assert "aiosvc/py.typed" in shipped


def test_the_program_runs_the_installed_interpreter() -> None:
    shebang = installed.program().read_bytes().splitlines()[0].decode()
    python = Path(shebang.removeprefix("#!"))
    assert python.parent == installed.install_dir() / "bin"
    assert python.name.startswith("python")


async def test_a_message_round_trip_through_the_installed_program(db_path: Path) -> None:
    server = Server(db_path)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/health") as response:
                assert (await response.json())["data"]["version"] == __version__
            async with http.post(server.url + "/api/v1/sessions", json={"title": "t"}) as response:
                assert response.status == 201
                session_id = (await response.json())["data"]["id"]
            url = f"{server.url}/api/v1/sessions/{session_id}/messages?wait=true"
            async with http.post(url, json={"content": "hello"}) as response:
                assert response.status == 200
                reply = (await response.json())["data"]
        assert (reply["role"], reply["content"], reply["status"]) == (
            "assistant",
            "hello",
            "complete",
        )
    finally:
        assert await server.stop() == 0
    assert server.process is not None
    args = server.process.args
    assert isinstance(args, list)
    assert args[0] == str(installed.program())


# ---- the build itself, on copies of the tree with past mistakes put back


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """A copy of the files a build reads."""
    copy = tmp_path / "tree"
    for name in shiplib.package_files(ROOT):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    return copy


def build(tree: Path, out: Path) -> Path:
    """Build ``tree``'s wheel with the test install's build environment."""
    return shiplib.build_wheel(out, build_env=ROOT / ".shipped" / "build-env", root=tree)


def wheel_files(wheel: Path) -> set[str]:
    """The files a wheel's RECORD lists."""
    with zipfile.ZipFile(wheel) as archive:
        record = archive.read(next(n for n in archive.namelist() if n.endswith("/RECORD")))
    return {row[0] for row in csv.reader(record.decode().splitlines())}


@pytest.mark.parametrize(
    ("removed", "lost"),
    [
        ("aiosvc/web/__init__.py", "aiosvc/web/front_door.py"),
        ("aiosvc/store/migrations/__init__.py", "aiosvc/store/migrations/0001_initial.sql"),
    ],
    ids=["web-package", "migrations"],
)
def test_a_folder_left_out_of_the_wheel_is_caught(
    tree_copy: Path, tmp_path: Path, removed: str, lost: str
) -> None:
    (tree_copy / removed).unlink()
    wheel = build(tree_copy, tmp_path / "out")  # setuptools says nothing
    missing = set(source_files(tree_copy)) - wheel_files(wheel)
    assert lost in missing


def test_a_build_warning_fails_the_build(tree_copy: Path, tmp_path: Path) -> None:
    setup = tree_copy / "setup.cfg"
    text = setup.read_text()
    assert "long_description_content_type" in text
    setup.write_text(text.replace("long_description_content_type", "long-description-content-type"))
    with pytest.raises(shiplib.ShipError, match="the wheel's build printed warnings") as raised:
        build(tree_copy, tmp_path / "out")
    assert "SetuptoolsDeprecationWarning: Invalid dash-separated key" in str(raised.value)
