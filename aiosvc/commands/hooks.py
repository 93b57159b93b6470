"""Handler for external events posted to ``/api/v1/hooks``."""

from __future__ import annotations

import re

from aiosvc.bus import session_topic
from aiosvc.commands.context import Context
from aiosvc.commands.types import PublishHook
from aiosvc.errors import ValidationFailed
from aiosvc.models import Event

HOOK_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


async def publish(context: Context, command: PublishHook) -> Event:
    """Publish the hook on ``hooks`` (and its session's topic when it names one)."""
    if HOOK_TYPE.fullmatch(command.type) is None:
        raise ValidationFailed(
            {"type": "expected 1 to 64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"}
        )
    topics = ["hooks"]
    if command.session_id is not None:
        topics.append(session_topic(context.session_or_404(command.session_id).id))
    data = {"type": command.type, "session_id": command.session_id, "data": command.data}
    return context.bus.publish(f"hook.{command.type}", topics, data)
