"""What an agent's tool calls leave behind: ``tool.use`` and ``tool.result`` events, a
``tool`` message per call in the history, and the reply's token counts."""

from __future__ import annotations

from typing import Any

import attrs
import structlog

from aiosvc.agents.output import clean_text, clean_value
from aiosvc.bus import session_topic
from aiosvc.clock import utcnow
from aiosvc.commands.context import Context
from aiosvc.commands.jobs import Job
from aiosvc.events import EventType
from aiosvc.models import ErrorInfo, Message, MessageStatus, Role, Usage, new_id
from aiosvc.store.tables import MESSAGES, SESSIONS

log = structlog.get_logger(__name__)


class ReplyTools:
    """Records one reply's tool calls (the agent's :class:`~aiosvc.agents.ReplyRecorder`)."""

    def __init__(self, context: Context, job: Job) -> None:
        self._context = context
        self._job = job

    def tool_use(self, call_id: str, tool: str, input: Any) -> None:
        """Publish ``tool.use`` for one call the model made."""
        data = {
            "message_id": self._job.reply_id,
            "call_id": clean_text(call_id),  # the agent's words: see aiosvc.agents.output
            "tool": clean_text(tool),
            "input": clean_value(input),
        }
        self._context.bus.publish(EventType.TOOL_USE, (session_topic(self._job.session_id),), data)

    async def tool_result(
        self, call_id: str, tool: str, output: str, *, error_code: str | None = None
    ) -> None:
        """Store the call's outcome as a ``tool`` message, then publish ``tool.result``."""
        context, job = self._context, self._job
        output = clean_text(output)
        now = utcnow()
        message = Message(
            id=new_id("msg"),
            session_id=job.session_id,
            role=Role.TOOL,
            content=output,
            status=MessageStatus.COMPLETE,
            created_at=now,
            completed_at=now,
            error=None if error_code is None else ErrorInfo(code=error_code, message=output[:500]),
        )
        async with context.lock(job.session_id):
            session = context.cache.session(job.session_id)
            if session is None:  # deleted meanwhile: nothing to record it in
                return
            session = attrs.evolve(
                session,
                message_count=session.message_count + 1,
                last_message_at=now,
                updated_at=now,
            )
            await context.store.write([MESSAGES.save(message), SESSIONS.save(session)])
            context.bus.publish(
                EventType.TOOL_RESULT,
                (session_topic(job.session_id),),
                {
                    "message_id": job.reply_id,
                    "call_id": clean_text(call_id),
                    "tool": clean_text(tool),
                    "output": output,
                    "is_error": error_code is not None,
                },
            )
            context.publish_session(EventType.SESSION_UPDATED, session)
        log.info(
            "tool_called",
            session_id=job.session_id,
            message_id=job.reply_id,
            tool=tool,
            call_id=call_id,
            error=error_code,
        )

    def usage(self, input_tokens: int, output_tokens: int) -> None:
        """Add one upstream round's token counts to the reply's."""
        before = self._job.usage or Usage(input_tokens=0, output_tokens=0)
        self._job.usage = Usage(
            input_tokens=before.input_tokens + input_tokens,
            output_tokens=before.output_tokens + output_tokens,
        )
