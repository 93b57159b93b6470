"""Handler for external events posted to ``/api/v1/hooks``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import orjson

from aiosvc.bus import session_topic
from aiosvc.commands.types import PublishHook
from aiosvc.convert import unstructure
from aiosvc.errors import PayloadTooLarge, ValidationFailed
from aiosvc.models import Event

if TYPE_CHECKING:
    from aiosvc.commands.service import CommandService

HOOK_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


async def publish(service: CommandService, command: PublishHook) -> Event:
    """Publish the hook on ``hooks`` (and its session's topic when it names one)."""
    if HOOK_TYPE.fullmatch(command.type) is None:
        raise ValidationFailed(
            {"type": "expected 1 to 64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"}
        )
    topics = ["hooks"]
    if command.session_id is not None:
        topics.append(session_topic(service.session_or_404(command.session_id).id))
    data = {"type": command.type, "session_id": command.session_id, "data": command.data}
    size, limit = len(orjson.dumps(unstructure(data))), service.limits.max_event_bytes
    if size > limit:  # every event is kept for resuming clients: each must be bounded
        raise PayloadTooLarge(
            f"the hook event is {size} bytes as JSON, over the limit of {limit} bytes "
            "(limits.max_event_bytes)"
        )
    return service.bus.publish(f"hook.{command.type}", topics, data)
