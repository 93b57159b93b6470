"""The conversation so far, handed to a ``command`` agent's program as a JSON file.

The file is private to the daemon's user (mode 0600, in the system's temporary directory),
named by ``AIOSVC_CONVERSATION`` in the program's environment, and removed once the reply
ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

import orjson

from aiosvc.agents.base import Turn


async def write_conversation(turn: Turn) -> Path:
    """Write ``turn``'s session, history and prompt to a fresh file; return its path."""
    session = turn.session
    document = {
        "session": {
            "id": session.id,
            "title": session.title,
            "agent": session.agent,
            "project": session.project,
            "model": session.model,
            "system_prompt": session.system_prompt,
        },
        "reply_id": turn.reply_id,
        "messages": [{"role": m.role.value, "content": m.content} for m in await turn.history()]
        + [{"role": "user", "content": turn.prompt}],
    }
    data = orjson.dumps(document)
    return await asyncio.to_thread(_write, data)


def _write(data: bytes) -> Path:
    fd, name = tempfile.mkstemp(prefix="aiosvc-conversation-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        remove(Path(name))
        raise
    return Path(name)


def remove(path: Path) -> None:
    """Remove the file (already gone is fine)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
