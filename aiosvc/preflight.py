"""What ``aiosvc check-config`` checks beyond the file itself: what ``serve`` would refuse or
fail on, found before starting it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from aiosvc.config import CommandAgentConfig, Config
from aiosvc.serve import RefusedToStart, check_exposure


def problems(config: Config, env: Mapping[str, str] | None = None) -> list[str]:
    """One line per problem found: the bind policy, the command agents' programs and folders,
    the database's folder and file. Empty when there is none."""
    env = os.environ if env is None else env
    found = []
    try:
        check_exposure(config)
    except RefusedToStart as exc:
        found.append(str(exc))
    for name, agent in config.agents.backends.items():
        if isinstance(agent, CommandAgentConfig):
            found += [f"agents.{name}: {problem}" for problem in _command(agent, env)]
    found += _database(config.storage.db)
    return found


def _command(agent: CommandAgentConfig, env: Mapping[str, str]) -> Iterator[str]:
    cwd = Path(agent.cwd) if agent.cwd is not None else None
    if cwd is not None and not cwd.is_dir():
        yield f"cwd {agent.cwd!r} is not a folder"
        return
    program = agent.argv[0]
    if "/" in program:  # a path: the program runs in the agent's cwd, so it is relative to that
        path = (cwd or Path.cwd()) / program
        if not path.is_file():
            yield f"program {program!r} not found"
        elif not os.access(path, os.X_OK):
            yield f"program {program!r} is not executable"
        return
    # the program's own environment decides where it is looked for, as when it is run
    search = agent.env.get("PATH", env.get("PATH", os.defpath))
    if shutil.which(program, path=search) is None:
        on_path = [d for d in search.split(os.pathsep) if d and (Path(d) / program).is_file()]
        if on_path:
            yield f"program {program!r} is not executable (in {on_path[0]})"
        else:
            yield f"program {program!r} not found on PATH ({search})"


def _database(db: Path) -> list[str]:
    try:
        if db.is_dir():
            return [f"{db}: the database is a directory"]
        found = []
        if db.exists():
            unusable = [what for what, mode in _ACCESS if not os.access(db, mode)]
            if unusable:
                found.append(f"{db}: the database is not {' or '.join(unusable)}")
        folder = db.parent
        existing = next(p for p in (folder, *folder.parents) if p.exists())
    except OSError as exc:
        return [f"{db}: cannot look at the database: {exc.strerror}"]
    # SQLite writes its journal (-wal, -shm) beside the file: the folder must be writable
    if not existing.is_dir():
        found.append(f"{db}: cannot create the database's folder: {existing} is not a folder")
    elif not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            found.append(f"{db}: the database's folder is not writable")
        else:
            found.append(f"{db}: cannot create the database's folder: {existing} is not writable")
    return found


_ACCESS = (("readable", os.R_OK), ("writable", os.W_OK))
