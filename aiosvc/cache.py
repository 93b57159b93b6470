"""The read side: snapshots of sessions, histories, commands and approvals.

Handlers read only from here. Sessions and approvals are loaded whole at startup; histories are
loaded per session on first read and kept for the most recently read sessions. Every change
reaches the cache through the bus (events, and commands' states as internal changes),
synchronously at publication, which happens right after the write committed: so once a write's
answer is sent, every read sees it.

A history being loaded while events arrive buffers those events and applies them, in order,
after the snapshot: each event carries the whole resulting object, so replaying one the snapshot
already includes is harmless and the result is always the newest state.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs

from aiosvc.bus import ALL, COMMAND_CHANGED, Bus, Subscription
from aiosvc.convert import dumps
from aiosvc.errors import NotFound
from aiosvc.models import (
    Approval,
    Command,
    Event,
    Message,
    MessageStatus,
    Session,
    is_valid_id,
)
from aiosvc.store import Store

T = TypeVar("T")


class Cache:
    """In-memory snapshots kept current from the bus."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        histories_kept: int = 256,
        commands_kept: int = 10_000,
        first_page_size: int = 50,
    ) -> None:
        self._store = store
        self._first_page_size = first_page_size
        self._bus = bus
        self._histories_kept = histories_kept
        self._commands_kept = commands_kept
        self._sessions: dict[str, Session] = {}  # oldest first
        self._histories: OrderedDict[str, dict[str, Message]] = OrderedDict()
        # Histories being loaded, with the events that arrived meanwhile (applied after).
        self._loading: dict[str, tuple[asyncio.Task[dict[str, Message]], list[Message]]] = {}
        self._live: dict[str, list[str]] = {}  # streaming message id -> deltas so far
        self._commands: OrderedDict[str, Command] = OrderedDict()
        self._approvals: dict[str, Approval] = {}
        # The JSON of each current session and message snapshot, by id, beside the snapshot it
        # encodes: the bus serialised it once at publication, so reads need not do it again.
        self._json: dict[str, tuple[object, bytes]] = {}
        self._sessions_json: list[bytes] | None = None  # every session's JSON, newest first
        self._first_page: bytes | None = None  # built from _sessions_json, dropped with it
        self._subscription: Subscription | None = None
        self._unlisten: Callable[[], None] | None = None

    async def load(self) -> None:
        """Load sessions and approvals from the store and start following the bus."""
        await self._load_snapshots()
        self._subscription = self._bus.subscribe(self._apply, [ALL])
        self._unlisten = self._bus.listen(COMMAND_CHANGED, self._put_command)

    def reconfigure(self, first_page_size: int) -> None:
        """Serve the unfiltered first page at this size from now on."""
        if first_page_size != self._first_page_size:
            self._first_page_size = first_page_size
            self._sessions_changed()

    async def reload(self) -> None:
        """Forget everything and load it again from the store (once startup has settled what
        the previous run left, which changed rows without publishing events)."""
        await self._load_snapshots()
        self._histories.clear()
        self._live.clear()
        self._commands.clear()

    async def _load_snapshots(self) -> None:
        sessions = await self._store.sessions()
        approvals = await self._store.approvals()
        self._json = {session.id: (session, dumps(session)) for session in sessions}
        self._sessions = {s.id: s for s in reversed(sessions)}
        self._sessions_changed()
        self._approvals = {a.id: a for a in approvals}

    def close(self) -> None:
        """Stop following the bus."""
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    # Sessions ----------------------------------------------------------------------------------

    def session(self, session_id: str) -> Session | None:
        """One session, or None."""
        return self._sessions.get(session_id)

    def require_session(self, session_id: str) -> Session:
        """The session, or :class:`NotFound` (a malformed id is simply not found)."""
        return _require(self._sessions, "session", session_id)

    def sessions(
        self, *, status: str | None = None, project: str | None = None, computer: str | None = None
    ) -> list[Session]:
        """Sessions matching every given filter, newest first."""
        return [
            s
            for s in reversed(self._sessions.values())
            if (status is None or s.status == status)
            and (project is None or s.project == project)
            and (computer is None or s.computer == computer)
        ]

    def sessions_json(self) -> list[bytes]:
        """The JSON of every session, newest first (kept until a session changes)."""
        if self._sessions_json is None:
            self._sessions_json = [self._json[i][1] for i in reversed(self._sessions)]
        return self._sessions_json

    def first_sessions_page(self) -> bytes:
        """The whole body of the unfiltered first page (of the default page size): what a
        dashboard asks for most."""
        page = self._first_page
        if page is None:
            everything = self.sessions_json()
            limit = self._first_page_size
            page = self._first_page = b'{"data":[%s],"total":%d,"limit":%d,"offset":0}' % (
                b",".join(everything[:limit]),
                len(everything),
                limit,
            )
        return page

    # Histories ---------------------------------------------------------------------------------

    async def history(self, session_id: str) -> list[Message]:
        """A session's messages, oldest first; a streaming reply shows its text so far."""
        messages = self._histories.get(session_id)
        if messages is None:
            messages = await self._load_history(session_id)
        else:
            self._histories.move_to_end(session_id)
        return [self._with_live_text(m) for m in messages.values()]

    async def _load_history(self, session_id: str) -> dict[str, Message]:
        """Load a history once however many read it meanwhile: every reader gets the result,
        or the error (never an empty history for a failed load). The load is a task of its
        own, so a reader that goes away does not cut it short for the others."""
        pending = self._loading.get(session_id)
        if pending is None:
            task = asyncio.get_running_loop().create_task(
                self._load_from_store(session_id), name=f"aiosvc-history-{session_id}"
            )
            task.add_done_callback(_retrieve)
            pending = self._loading[session_id] = (task, [])
        return await asyncio.shield(pending[0])

    async def _load_from_store(self, session_id: str) -> dict[str, Message]:
        try:
            loaded = await self._store.messages(session_id)
        finally:
            _, buffered = self._loading.pop(session_id)
        messages = {m.id: m for m in loaded}
        for message in buffered:
            messages[message.id] = message
        if session_id in self._sessions:
            for message in messages.values():
                self._json.setdefault(message.id, (message, dumps(message)))
            self._histories[session_id] = messages
            while len(self._histories) > self._histories_kept:
                _, evicted = self._histories.popitem(last=False)
                for message_id in evicted:
                    self._json.pop(message_id, None)
        return messages

    def json(self, snapshot: Session | Message) -> bytes:
        """The JSON of a session or message snapshot read from this cache."""
        cached = self._json.get(snapshot.id)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        return dumps(snapshot)  # a streaming message with its text so far

    def _with_live_text(self, message: Message) -> Message:
        if message.status is MessageStatus.STREAMING and message.id in self._live:
            return attrs.evolve(message, content="".join(self._live[message.id]))
        return message

    # Commands and approvals --------------------------------------------------------------------

    def _put_command(self, command: Command) -> None:
        """Record a command's new state (told by the bus after each write of it)."""
        self._commands[command.id] = command
        self._commands.move_to_end(command.id)
        while len(self._commands) > self._commands_kept:
            self._commands.popitem(last=False)

    async def command(self, command_id: str) -> Command | None:
        """One command: from memory when recent, else from the store."""
        found = self._commands.get(command_id)
        if found is None:
            found = await self._store.command(command_id)
        return found

    def approval(self, approval_id: str) -> Approval | None:
        """One approval, or None."""
        return self._approvals.get(approval_id)

    def require_approval(self, approval_id: str) -> Approval:
        """The approval, or :class:`NotFound` (a malformed id is simply not found)."""
        return _require(self._approvals, "approval", approval_id)

    def approvals(
        self, *, status: str | None = None, session_id: str | None = None
    ) -> list[Approval]:
        """Approvals matching every given filter, newest first."""
        return [
            a
            for a in reversed(self._approvals.values())
            if (status is None or a.status == status)
            and (session_id is None or a.session_id == session_id)
        ]

    # Following the bus -------------------------------------------------------------------------

    def _apply(self, event: Event, _topic: str) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event)

    def _on_session(self, event: Event) -> None:
        session: Session = event.obj
        self._sessions[session.id] = session
        self._json[session.id] = (session, event.data_json)
        self._sessions_changed()

    def _sessions_changed(self) -> None:
        """Drop what is built from the list of sessions."""
        self._sessions_json = None
        self._first_page = None

    def _on_session_deleted(self, event: Event) -> None:
        session_id = event.obj["id"]
        self._sessions.pop(session_id, None)
        self._json.pop(session_id, None)
        self._sessions_changed()
        for message_id in self._histories.pop(session_id, {}):
            self._live.pop(message_id, None)
            self._json.pop(message_id, None)
        for approval in [a for a in self._approvals.values() if a.session_id == session_id]:
            del self._approvals[approval.id]

    def _on_message(self, event: Event) -> None:
        message: Message = event.obj
        if message.status is MessageStatus.STREAMING:
            self._live.setdefault(message.id, [])
        elif message.status is not MessageStatus.PENDING:
            self._live.pop(message.id, None)
        loading = self._loading.get(message.session_id)
        if loading is not None:
            loading[1].append(message)
            return
        messages = self._histories.get(message.session_id)
        if messages is not None:
            messages[message.id] = message
            self._json[message.id] = (message, event.data_json)

    def _on_delta(self, event: Event) -> None:
        chunks = self._live.get(event.obj["message_id"])
        if chunks is not None:
            chunks.append(event.obj["delta"])

    def _on_approval(self, event: Event) -> None:
        approval: Approval = event.obj
        self._approvals[approval.id] = approval


def _require(found: Mapping[str, T], kind: str, item_id: str) -> T:
    """The ``kind`` named ``item_id``, or :class:`NotFound` (a malformed id too)."""
    item = found.get(item_id) if is_valid_id(item_id) else None
    if item is None:
        raise NotFound.of(kind, item_id)
    return item


def _retrieve(task: asyncio.Task[dict[str, Message]]) -> None:
    """Mark a failed load's error as seen: its readers raise it, and there may be none."""
    if not task.cancelled():
        task.exception()


_HANDLERS: dict[str, Callable[[Cache, Event], None]] = {
    "session.created": Cache._on_session,
    "session.updated": Cache._on_session,
    "session.ended": Cache._on_session,
    "session.deleted": Cache._on_session_deleted,
    "message.created": Cache._on_message,
    "message.started": Cache._on_message,
    "message.completed": Cache._on_message,
    "message.failed": Cache._on_message,
    "message.cancelled": Cache._on_message,
    "message.delta": Cache._on_delta,
    "approval.requested": Cache._on_approval,
    "approval.resolved": Cache._on_approval,
}
