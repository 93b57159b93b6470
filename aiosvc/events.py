"""The API's event types: what the server publishes and every client reads, named once.

A leaf that the terminal client may import too (it imports nothing else of the server, see
``tests/test_layers.py``): one list for both sides, so a misspelt type is an error where it is
written, not an event that nothing handles. ``tests/test_docs.py`` checks that ``docs/api.rst``
documents each one.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """Every event type of API version 1 but the hooks' (``hook.<type>``, chosen by senders)."""

    SESSION_CREATED = "session.created"
    SESSION_UPDATED = "session.updated"
    SESSION_ENDED = "session.ended"
    SESSION_DELETED = "session.deleted"
    MESSAGE_CREATED = "message.created"
    MESSAGE_STARTED = "message.started"
    MESSAGE_DELTA = "message.delta"
    MESSAGE_COMPLETED = "message.completed"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_CANCELLED = "message.cancelled"
    TOOL_USE = "tool.use"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_RESOLVED = "approval.resolved"
    STATUS = "status"
    CONFIG_RELOADED = "config.reloaded"
    TODOS_UPDATED = "todos.updated"
    COMPUTER_ONLINE = "computer.online"
    COMPUTER_OFFLINE = "computer.offline"


#: What every hook event's type starts with: ``hook.`` and the type its sender posted.
HOOK_PREFIX = "hook."

#: The types that end a reply (its final message carries the whole text).
FINAL_TYPES = frozenset(
    {EventType.MESSAGE_COMPLETED, EventType.MESSAGE_FAILED, EventType.MESSAGE_CANCELLED}
)
