"""Projects (``[projects.NAME]``): their sessions, their ``TODO.md`` todos, and the watch that
publishes ``todos.updated`` when a ``TODO.md`` changes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
import structlog

from aiosvc.bus import Bus
from aiosvc.config import ProjectConfig
from aiosvc.errors import NotFound
from aiosvc.events import EventType
from aiosvc.models import ErrorInfo
from aiosvc.projects.files import TodoFiles, TodoList
from aiosvc.projects.todos import Todo
from aiosvc.projects.watcher import TodoWatcher
from aiosvc.store import Store

__all__ = ["PROJECTS_TOPIC", "TODOS_UPDATED", "Project", "Projects", "Todo", "TodoList"]

log = structlog.get_logger(__name__)

#: The topic of the projects' events.
PROJECTS_TOPIC = "projects"
#: The event a project's ``TODO.md`` change publishes, with ``{"project"}``.
TODOS_UPDATED = EventType.TODOS_UPDATED


@attrs.frozen(kw_only=True)
class Project:
    """A configured project, as clients see it."""

    name: str
    path: str
    computer: str
    session_count: int
    open_todos: int
    #: Why its todos cannot be read (the list is then empty), or null.
    todos_error: ErrorInfo | None = None


class Projects:
    """The configured projects; reads their todos and watches their ``TODO.md`` files."""

    def __init__(
        self, store: Store, bus: Bus, projects: Mapping[str, ProjectConfig], computer: str
    ) -> None:
        self._store = store
        self._bus = bus
        self._projects = dict(projects)
        self._computer = computer
        self._files = TodoFiles()
        self._watcher = TodoWatcher(self._changed)
        self._restarting: asyncio.Task[None] | None = None
        self._started = False

    def _directories(self) -> dict[str, Path]:
        return {name: Path(os.path.abspath(p.path)) for name, p in self._projects.items()}

    async def start(self) -> None:
        """Start watching the projects' ``TODO.md`` files."""
        self._started = True
        self._watcher.start(self._directories())

    async def close(self) -> None:
        """Stop watching."""
        self._started = False
        if self._restarting is not None:
            await asyncio.wait([self._restarting])
        await self._watcher.stop()

    def reconfigure(self, projects: Mapping[str, ProjectConfig], computer: str) -> None:
        """Take a reloaded configuration; the watch follows a changed set of projects."""
        self._computer = computer
        if dict(projects) == self._projects:
            return
        self._projects = dict(projects)
        self._files.forget(set(self._directories().values()))
        if self._started:
            previous = self._restarting
            self._restarting = asyncio.get_running_loop().create_task(
                self._restart(previous), name="aiosvc-todo-watcher-restart"
            )

    async def _restart(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # one restart after another, the last one wins
        await self._watcher.stop()
        if self._started:
            self._watcher.start(self._directories())
            log.info("todo_watch_restarted", projects=sorted(self._projects))

    def _changed(self, project: str) -> None:
        if project in self._projects:
            self._bus.publish(TODOS_UPDATED, (PROJECTS_TOPIC,), {"project": project})

    async def describe(self) -> list[Project]:
        """Every configured project, by name, with its session count and open todos."""
        directories = self._directories()
        names = sorted(directories)
        counts = await self._store.session_counts(names)
        todos = await asyncio.gather(*(self._files.read(directories[n]) for n in names))
        return [
            Project(
                name=name,
                path=os.fspath(directories[name]),
                computer=self._computer,
                session_count=counts.get(name, 0),
                open_todos=len(found.checklist.open),
                todos_error=found.error,
            )
            for name, found in zip(names, todos, strict=True)
        ]

    async def todos(
        self, project: str, *, include_done: bool, limit: int, offset: int
    ) -> tuple[list[Todo], int]:
        """One page of a project's todos in the file's order, open ones only unless
        ``include_done``, and how many there are in all (none when its ``TODO.md`` cannot be
        read); an unknown project is :class:`NotFound`."""
        directory = self._directories().get(project)
        if directory is None:
            raise NotFound.of("project", project)
        found = await self._files.read(directory)
        return found.checklist.page(project, include_done=include_done, limit=limit, offset=offset)
