"""The TODO.md watch in the process: which changes it tells, for which projects, and that it
stops at once (its thread sees the stop event), leaving no task behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiosvc.projects.watcher import TodoWatcher


async def next_change(changes: asyncio.Queue[str], within: float = 10) -> str:
    async with asyncio.timeout(within):
        return await changes.get()


async def test_changes_to_todo_files_are_told_by_project(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "two")
    changes: asyncio.Queue[str] = asyncio.Queue()
    watcher = TodoWatcher(changes.put_nowait)
    watcher.start(
        {
            "one": tmp_path / "one",
            "two": tmp_path / "two",
            "also-two": tmp_path / "link",  # the same directory, through a symbolic link
            "missing": tmp_path / "nowhere",
        }
    )
    try:
        await asyncio.sleep(0.3)
        (tmp_path / "one" / "TODO.md").write_text("- [ ] a\n")
        assert await next_change(changes) == "one"
        await asyncio.sleep(0.6)
        (tmp_path / "one" / "notes.md").write_text("not the todo file\n")
        (tmp_path / "two" / "TODO.md").write_text("- [ ] b\n")
        told = {await next_change(changes), await next_change(changes)}
        assert told == {"two", "also-two"}
        await asyncio.sleep(0.6)
        assert changes.empty()  # notes.md told nothing
        (tmp_path / "one" / "TODO.md").unlink()
        assert await next_change(changes) == "one"
    finally:
        started = time.monotonic()
        await watcher.stop()
        assert time.monotonic() - started < 4  # the thread saw the stop event: no 5 s timeout
    assert not watcher.running


async def test_nothing_to_watch_and_restarts(tmp_path: Path) -> None:
    changes: asyncio.Queue[str] = asyncio.Queue()
    watcher = TodoWatcher(changes.put_nowait)
    watcher.start({})
    assert not watcher.running
    await watcher.stop()
    watcher.start({"gone": tmp_path / "gone"})
    await asyncio.sleep(0.2)
    assert not watcher.running  # nothing exists to watch: it ended by itself
    await watcher.stop()
    (tmp_path / "later").mkdir()
    watcher.start({"later": tmp_path / "later"})
    try:
        await asyncio.sleep(0.3)
        (tmp_path / "later" / "TODO.md").write_text("- [ ] c\n")
        assert await next_change(changes) == "later"
    finally:
        await watcher.stop()
