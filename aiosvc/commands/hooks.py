"""Handler for external events posted to ``/api/v1/hooks``."""

from __future__ import annotations

from aiosvc.bus import EventTooLarge, session_topic
from aiosvc.commands.context import Context
from aiosvc.commands.types import PublishHook
from aiosvc.errors import PayloadTooLarge, ValidationFailed
from aiosvc.models import Event
from aiosvc.rules import HOOK_TYPE, HOOK_TYPE_ERROR


async def publish(context: Context, command: PublishHook) -> Event:
    """Publish the hook on ``hooks`` (and its session's topic when it names one)."""
    if HOOK_TYPE.fullmatch(command.type) is None:
        raise ValidationFailed({"type": HOOK_TYPE_ERROR})
    topics = ["hooks"]
    if command.session_id is not None:
        topics.append(session_topic(context.cache.require_session(command.session_id).id))
    data = {"type": command.type, "session_id": command.session_id, "data": command.data}
    # every event is kept for resuming clients: each must be bounded (serialised once, here)
    try:
        return context.bus.publish_hook(
            command.type, topics, data, max_bytes=context.limits.max_event_bytes
        )
    except EventTooLarge as exc:
        raise PayloadTooLarge(f"the hook event is {exc} (limits.max_event_bytes)") from None
