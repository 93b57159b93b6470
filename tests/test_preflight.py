"""``aiosvc check-config`` as a pre-flight, through the installed program: what ``serve`` would
refuse or fail on is found before starting, one ``aiosvc:`` line each, exit status 1; and no
command leaves a traceback when its reader goes away."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import installed
from tests.serving import free_port

REFUSED = (
    "aiosvc: refusing to listen on '0.0.0.0' without an API key: anyone who can reach it could "
    "run agents. Set server.api_keys (or AIOSVC_API_KEYS), or bind a loopback address such as "
    "127.0.0.1\n"
)


def check(tmp_path: Path, text: str | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    """``aiosvc check-config`` on a file holding ``text`` (none when it is None) and a database
    in ``tmp_path`` unless ``args`` give another."""
    argv = ["check-config", *args]
    if "--db" not in args:
        argv += ["--db", str(tmp_path / "state" / "aiosvc.db")]
    if text is not None:
        path = tmp_path / "aiosvc.toml"
        path.write_text(text)
        argv += ["--config", str(path)]
    return installed.run(*argv, cwd=tmp_path)


def command_agent(name: str, argv: list[str], **settings: str) -> str:
    """A config table for a command agent."""
    lines = [f"[agents.{name}]", 'kind = "command"', f"argv = {argv!r}".replace("'", '"')]
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def test_a_good_config_passes_and_creates_nothing(tmp_path: Path) -> None:
    text = command_agent("py", [sys.executable, "-c", "pass"]) + command_agent("sh", ["sh"])
    result = check(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[0] == f"config OK ({tmp_path / 'aiosvc.toml'})"
    assert f"database: {tmp_path / 'state' / 'aiosvc.db'}" in result.stdout.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aiosvc.toml"]  # no folder, no db


# ---- the bind policy


@pytest.mark.parametrize(
    ("text", "args"),
    [('[server]\nhost = "0.0.0.0"\n', ()), (None, ("--host", "0.0.0.0"))],
    ids=["file", "flag"],
)
def test_a_public_address_without_a_key_is_refused_as_serve_refuses_it(
    tmp_path: Path, text: str | None, args: tuple[str, ...]
) -> None:
    result = check(tmp_path, text, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == REFUSED
    argv = ["serve", *args, "--port", str(free_port()), "--db", str(tmp_path / "a.db")]
    if text is not None:
        argv += ["--config", str(tmp_path / "aiosvc.toml")]
    served = installed.run(*argv, cwd=tmp_path)
    assert served.returncode == 1
    assert served.stderr == REFUSED


def test_a_public_address_with_a_key_passes(tmp_path: Path) -> None:
    result = check(tmp_path, '[server]\nhost = "0.0.0.0"\napi_keys = ["k"]\n')
    assert result.returncode == 0, result.stderr
    assert "api keys: 1 configured" in result.stdout.splitlines()


# ---- command agents' programs


def test_a_program_not_on_path_is_named(tmp_path: Path) -> None:
    result = check(tmp_path, command_agent("ghost", ["aiosvc-no-such-program", "--x"]))
    assert result.returncode == 1
    assert result.stdout == ""
    path = os.environ["PATH"]
    assert result.stderr == (
        f"aiosvc: agents.ghost: program 'aiosvc-no-such-program' not found on PATH ({path})\n"
    )


def test_the_agents_own_path_is_searched(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    tool = tools / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)
    text = command_agent("t", ["tool"]) + f'env = {{ PATH = "{tools}" }}\n'
    result = check(tmp_path, text)
    assert result.returncode == 1
    assert result.stderr == f"aiosvc: agents.t: program 'tool' is not executable (in {tools})\n"
    tool.chmod(0o755)
    result = check(tmp_path, text)
    assert result.returncode == 0, result.stderr


def test_a_program_path_is_taken_from_the_agents_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    text = command_agent("rel", ["./bin/run"], cwd=str(work))
    result = check(tmp_path, text)
    assert result.returncode == 1
    assert result.stderr == "aiosvc: agents.rel: program './bin/run' not found\n"
    (work / "bin" / "run").write_text("#!/bin/sh\n")
    result = check(tmp_path, text)
    assert result.stderr == "aiosvc: agents.rel: program './bin/run' is not executable\n"
    (work / "bin" / "run").chmod(0o755)
    result = check(tmp_path, text)
    assert result.returncode == 0, result.stderr


def test_a_missing_agent_folder_is_named(tmp_path: Path) -> None:
    result = check(tmp_path, command_agent("a", ["sh"], cwd=str(tmp_path / "nowhere")))
    assert result.returncode == 1
    assert result.stderr == f"aiosvc: agents.a: cwd '{tmp_path / 'nowhere'}' is not a folder\n"


# ---- the database


def test_a_database_that_is_a_folder_is_named(tmp_path: Path) -> None:
    result = check(tmp_path, None, "--db", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"aiosvc: {tmp_path}: the database is a directory\n"


def test_a_database_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    db = tmp_path / "file" / "sub" / "a.db"
    result = check(tmp_path, None, "--db", str(db))
    assert result.returncode == 1
    assert result.stderr == (
        f"aiosvc: {db}: cannot create the database's folder: {tmp_path / 'file'} is not a folder\n"
    )


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths made immutable (``chattr +i``: not writable, even by root); cleared at the end."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def make_immutable(path: Path, made: list[Path]) -> None:
    """``chattr +i path``, or skip the test where the file system or privileges do not allow."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"chattr +i is not allowed here: {result.stderr.decode().strip()}")
    made.append(path)


def test_a_database_folder_that_is_not_writable_is_named(
    tmp_path: Path, immutable: list[Path]
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    make_immutable(folder, immutable)
    result = check(tmp_path)
    assert result.returncode == 1
    db = folder / "aiosvc.db"
    assert result.stderr == f"aiosvc: {db}: the database's folder is not writable\n"
    below = folder / "deeper" / "a.db"
    result = check(tmp_path, None, "--db", str(below))
    assert result.stderr == (
        f"aiosvc: {below}: cannot create the database's folder: {folder} is not writable\n"
    )


def test_a_database_that_is_not_writable_is_named(tmp_path: Path, immutable: list[Path]) -> None:
    db = tmp_path / "state" / "aiosvc.db"
    assert installed.run("migrate", "--db", str(db), cwd=tmp_path).returncode == 0
    make_immutable(db, immutable)
    result = check(tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"aiosvc: {db}: the database is not writable\n"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = '[server]\nhost = "0.0.0.0"\n' + command_agent("ghost", ["aiosvc-no-such-program"])
    result = check(tmp_path, text, "--db", str(tmp_path))
    assert result.returncode == 1
    assert [line.split(":")[1].strip() for line in result.stderr.splitlines()] == [
        "refusing to listen on '0.0.0.0' without an API key",
        "agents.ghost",
        str(tmp_path),
    ]


def test_a_config_error_keeps_its_exit_status(tmp_path: Path) -> None:
    result = check(tmp_path, '[server]\nport = "80"\nhost = "0.0.0.0"\n')
    assert result.returncode == 2
    assert result.stderr == (
        f"aiosvc: {tmp_path / 'aiosvc.toml'}: server.port: expected an integer, got '80'\n"
    )


# ---- a reader that goes away


def without_buffering(buffered: bool) -> dict[str, str]:
    """The environment with stdout block-buffered (a shell's default) or not."""
    env = installed.environ()
    env.pop("PYTHONUNBUFFERED", None)
    return env if buffered else env | {"PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(
    "args",
    [("check-config",), ("migrate", "--db", "a.db"), ("--version",), ("check-config", "--help")],
    ids=["check-config", "migrate", "version", "help"],
)
def test_no_traceback_when_stdout_is_a_closed_pipe(
    tmp_path: Path, args: tuple[str, ...], buffered: bool
) -> None:
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        result = installed.run(*args, cwd=tmp_path, env=without_buffering(buffered), stdout=write)
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert all(line.startswith("{") for line in result.stderr.splitlines())  # log lines only
    if buffered or (args[0] != "--version" and "--help" not in args):
        assert result.returncode == 1
    else:  # argparse ignores a failed write of its own and exits as usual
        assert result.returncode == 0


def test_check_config_piped_into_head(tmp_path: Path) -> None:
    argv = shlex.join(installed.argv("check-config", "--db", str(tmp_path / "a.db")))
    result = subprocess.run(
        ["bash", "-c", f"{argv} | head -1"],
        cwd=tmp_path,
        env=installed.environ(),
        capture_output=True,
        text=True,
        timeout=installed.COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == "config OK (no file, defaults)\n"
    assert result.stderr == ""
