"""Watching the projects' ``TODO.md`` files with watchfiles: a change is told within about
half a second (the debounce below), by the operating system's notifications, not by polling.

Each project's directory is watched, not recursively (a project's tree may be huge), and not
the file itself: an editor that saves by writing a new file and renaming it over the old one
replaces the file, and a watch on the old one would see nothing after the first save.

watchfiles waits for changes in a worker thread that checks a stop event every ``step``
milliseconds; cancelling the task instead would wait for the thread's own timeout (seconds).
So stopping sets the event first and then waits for the task.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog
from watchfiles import Change, awatch

from aiosvc.projects.files import FILE_NAME

log = structlog.get_logger(__name__)

#: Changes are gathered for at most this long before they are told (milliseconds).
DEBOUNCE_MS = 500
#: After the watch fails (a directory went away under it, the system's watch limit), wait
#: this long before watching again, twice as long after each failure in a row, up to the most.
RETRY_S = 5.0
MAX_RETRY_S = 300.0
#: How long stopping waits for the watching thread to notice (it checks every 50 ms).
STOP_TIMEOUT_S = 5.0

# watchfiles logs every batch of changes at info; todos_changed below says what matters.
logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _is_todo_file(change: Change, path: str) -> bool:
    return os.path.basename(path) == FILE_NAME


class TodoWatcher:
    """Tells ``on_change(project)`` when a project's ``TODO.md`` changed (created, written,
    replaced or deleted)."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def running(self) -> bool:
        """Tell whether a watch is in place (or being set up)."""
        return self._task is not None and not self._task.done()

    def start(self, projects: Mapping[str, Path]) -> None:
        """Watch these projects' directories (call :meth:`stop` first if watching)."""
        if self.running:
            raise RuntimeError("the watcher is already running")
        by_directory: dict[str, list[str]] = {}
        for name, directory in sorted(projects.items()):
            by_directory.setdefault(os.path.abspath(directory), []).append(name)
        self._stop = asyncio.Event()
        if by_directory:
            self._task = asyncio.get_running_loop().create_task(
                self._watch(by_directory, self._stop), name="aiosvc-todo-watcher"
            )

    async def stop(self) -> None:
        """Stop watching, and wait until the watching thread has let go."""
        task, self._task = self._task, None
        self._stop.set()
        if task is None:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.wait([task])

    async def _watch(self, by_directory: dict[str, list[str]], stop: asyncio.Event) -> None:
        delay = RETRY_S
        while not stop.is_set():
            present = await asyncio.to_thread(lambda: [d for d in by_directory if os.path.isdir(d)])
            missing = sorted(set(by_directory) - set(present))
            if missing:
                log.warning("todo_directories_missing", directories=missing)
            if not present:
                return  # nothing to watch until the configuration changes
            try:
                async for changes in awatch(
                    *present,
                    watch_filter=_is_todo_file,
                    recursive=False,
                    debounce=DEBOUNCE_MS,
                    stop_event=stop,
                ):
                    self._tell(by_directory, {path for _, path in changes})
                    delay = RETRY_S  # it works again
                return  # stopped
            except Exception as exc:  # the watch itself failed: watch again, a little later
                log.warning(
                    "todo_watch_failed", error=f"{type(exc).__name__}: {exc}", retry_s=delay
                )
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                delay = min(delay * 2, MAX_RETRY_S)

    def _tell(self, by_directory: Mapping[str, list[str]], paths: set[str]) -> None:
        # watchfiles names a change by a watched path joined with the file's name; two
        # projects in one directory (one of them through a symbolic link) share one watch,
        # so a change is told to every project whose directory is really that one
        real: dict[str, set[str]] = {}
        for directory, names in by_directory.items():
            real.setdefault(os.path.realpath(directory), set()).update(names)
        changed = sorted(
            {
                name
                for path in paths
                for name in real.get(os.path.realpath(os.path.dirname(path)), ())
            }
        )
        for name in changed:
            log.info("todos_changed", project=name)
            try:
                self._on_change(name)
            except Exception:  # one failing listener must not end the watch
                log.exception("todos_listener_failed", project=name)
