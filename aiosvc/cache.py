"""The read side: snapshots of sessions, commands and approvals, and pages of histories.

Handlers read only from here. Sessions and approvals are loaded whole at startup; histories are
read a page at a time (:mod:`aiosvc.history`), the recently read pages kept within a byte
budget. Every change reaches the cache through the bus (events, and commands' states as
internal changes), synchronously at publication, which
happens right after the write committed: so once a write's answer is sent, every read sees it.

The unfiltered first page of sessions comes from memory; other session lists are indexed
queries for the page's ids. Either way the sessions' JSON comes from memory, and the totals from
counts kept in memory.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from aiosvc.bus import ALL, COMMAND_CHANGED, Bus, Subscription
from aiosvc.convert import dumps, dumps_kept
from aiosvc.errors import InvalidParameter, NotFound
from aiosvc.events import EventType
from aiosvc.history import Histories
from aiosvc.models import (
    Approval,
    Command,
    Event,
    Message,
    MessageStatus,
    Session,
    is_valid_id,
)
from aiosvc.paging import Page, Window
from aiosvc.store import Span, Store

T = TypeVar("T")

#: What a session list may be filtered by: its status, project and computer.
Filters = Mapping[str, str]


class Cache:
    """In-memory snapshots kept current from the bus."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        max_bytes: int = 64 << 20,
        commands_kept: int = 1_000,
    ) -> None:
        self._store = store
        self._bus = bus
        self._commands_kept = commands_kept
        self._sessions: dict[str, Session] = {}  # oldest first
        # The JSON of each session beside the snapshot it encodes (right-sized: the bus
        # serialised it once at publication, so reads need not do it again).
        self._json: dict[str, tuple[Session, bytes]] = {}
        # Sessions by (status, project, computer): the total of any filtered list.
        self._counts: Counter[tuple[str, str | None, str]] = Counter()
        #: How many times the sessions changed: what is built from them is current while
        #: this stays the same.
        self.sessions_changed = 0
        # Streaming replies by message id: their session and their deltas so far.
        self._live: dict[str, tuple[str, list[str]]] = {}
        # Replies that ended in memory while the database could not record it (yet).
        self._unsaved: dict[str, Message] = {}
        self.histories = Histories(store, self._shown, max_bytes=max_bytes)
        # Commands are read back from the store once they leave this window.
        self._commands: OrderedDict[str, Command] = OrderedDict()
        self._approvals: dict[str, Approval] = {}
        self._subscription: Subscription | None = None
        self._unlisten: Callable[[], None] | None = None

    async def load(self) -> None:
        """Load sessions and approvals from the store and start following the bus."""
        await self._load_snapshots()
        # (the cache is not a client: its interest in everything starts no peer's relay)
        self._subscription = self._bus.subscribe(self._apply, [ALL], interested=False)
        self._unlisten = self._bus.listen(COMMAND_CHANGED, self._put_command)

    def reconfigure(self, max_bytes: int) -> None:
        """Keep history pages within ``max_bytes`` from now on."""
        self.histories.resize(max_bytes)

    async def reload(self) -> None:
        """Forget everything and load it again from the store (once startup has settled what
        the previous run left, which changed rows without publishing events)."""
        await self._load_snapshots()
        self.histories.clear()
        self._live.clear()
        self._commands.clear()

    async def _load_snapshots(self) -> None:
        sessions = await self._store.sessions()
        approvals = await self._store.approvals()
        self._json = {session.id: (session, dumps_kept(session)) for session in sessions}
        self._sessions = {s.id: s for s in reversed(sessions)}
        self._counts = Counter(_facets(s) for s in sessions)
        self.sessions_changed += 1
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

    def count(self, filters: Filters) -> int:
        """How many sessions match every filter (``status``, ``project``, ``computer``)."""
        if not filters:
            return len(self._sessions)
        wanted = [(_FACETS.index(name), value) for name, value in filters.items()]
        return sum(
            n for facets, n in self._counts.items() if all(facets[i] == v for i, v in wanted)
        )

    def newest_sessions(self, limit: int) -> Page:
        """The unfiltered first page of ``limit`` sessions, newest first, from memory."""
        shown = list(itertools.islice(reversed(self._sessions), limit))
        total = len(self._sessions)
        return Page(
            items=[self._json[i][1] for i in shown],
            total=total,
            offset=0,
            next=shown[-1] if total > limit else None,
            prev=None,
        )

    def newest_first(self) -> Iterator[tuple[Session, bytes]]:
        """Every session, newest first, with its JSON (for lists merged with peers')."""
        json = self._json
        return (json[session_id] for session_id in reversed(self._sessions))

    async def sessions_page(self, filters: Filters, window: Window) -> Page:
        """A page of sessions, newest first, matching every filter.

        A cursor that names no session is ``400 invalid_parameter``.
        """
        total = self.count(filters)
        span = await self._session_span(window, total)
        found = await self._store.session_rows(filters.items(), span)
        ids = [row["id"] for row in found.rows if row["id"] in self._json]
        # (a row not in memory was created or deleted by a write not yet answered: left out)
        return Page(
            items=[self._json[i][1] for i in ids],
            total=total,
            offset=None if window.by_cursor else window.offset,
            next=ids[-1] if ids and found.more_after else None,
            prev=ids[0] if ids and found.more_before else None,
        )

    async def _session_span(self, window: Window, total: int) -> Span:
        cursor = window.after if window.after is not None else window.before
        if cursor is None:
            return Span(limit=window.limit, offset=window.offset, total=total)
        name = "after" if window.after is not None else "before"
        seq = await self._store.session_seq(cursor) if cursor in self._sessions else None
        if seq is None:
            raise InvalidParameter(name, f"no session {cursor!r}")
        if window.after is not None:
            return Span(limit=window.limit, after=seq)
        return Span(limit=window.limit, before=seq)

    def json(self, session: Session) -> bytes:
        """The JSON of a session snapshot read from this cache."""
        cached = self._json.get(session.id)
        if cached is not None and cached[0] is session:
            return cached[1]
        return dumps(session)

    # Histories ---------------------------------------------------------------------------------

    async def history_page(self, session: Session, window: Window) -> Page:
        """One page of a session's history, oldest first (see :mod:`aiosvc.history`)."""
        return await self.histories.page(session.id, session.message_count, window)

    async def history(self, session_id: str) -> list[Message]:
        """A session's whole history, oldest first, read a page at a time (for an agent that
        needs the conversation); a streaming reply shows its text so far."""
        return await self.histories.messages(session_id)

    def live_text(self, message_id: str) -> str | None:
        """A streaming reply's text so far, or None if it is not streaming."""
        live = self._live.get(message_id)
        return "".join(live[1]) if live is not None else None

    def unsaved(self, message: Message) -> None:
        """Show ``message`` in histories although its row says it still streams: its end
        could not be written yet (see :mod:`aiosvc.commands.endings`), until :meth:`saved`."""
        self._unsaved[message.id] = message
        self.histories.changed(message.session_id)

    def saved(self, message_id: str) -> None:
        """The database now says what :meth:`unsaved` showed (or never will: stopping)."""
        message = self._unsaved.pop(message_id, None)
        if message is not None:
            self.histories.changed(message.session_id)

    def _shown(self, message_id: str) -> str | Message | None:
        """What memory knows beyond a streaming row: its text so far, or how it ended."""
        text = self.live_text(message_id)
        return text if text is not None else self._unsaved.get(message_id)

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
        if event.relayed:
            return  # another computer's: its sessions are kept by its peer link
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event)

    def _on_session(self, event: Event) -> None:
        session: Session = event.obj
        previous = self._sessions.get(session.id)
        if previous is not None:
            self._uncount(previous)
        self._sessions[session.id] = session
        self._json[session.id] = (session, event.data_json)
        self._counts[_facets(session)] += 1
        self.sessions_changed += 1

    def _uncount(self, session: Session) -> None:
        facets = _facets(session)
        self._counts[facets] -= 1
        if self._counts[facets] <= 0:
            del self._counts[facets]

    def _on_session_deleted(self, event: Event) -> None:
        session_id = event.obj["id"]
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._uncount(session)
        self._json.pop(session_id, None)
        self.sessions_changed += 1
        self.histories.changed(session_id)
        for message_id in [m for m, (s, _) in self._live.items() if s == session_id]:
            del self._live[message_id]
        for approval in [a for a in self._approvals.values() if a.session_id == session_id]:
            del self._approvals[approval.id]

    def _on_message(self, event: Event) -> None:
        message: Message = event.obj
        if message.status is MessageStatus.STREAMING:
            self._live.setdefault(message.id, (message.session_id, []))
        elif message.status is not MessageStatus.PENDING:
            self._live.pop(message.id, None)
        self.histories.changed(message.session_id)

    def _on_delta(self, event: Event) -> None:
        live = self._live.get(event.obj["message_id"])
        if live is not None:
            live[1].append(event.obj["delta"])

    def _on_approval(self, event: Event) -> None:
        approval: Approval = event.obj
        self._approvals[approval.id] = approval


_FACETS = ("status", "project", "computer")


def _facets(session: Session) -> tuple[str, str | None, str]:
    """What a session list may be filtered by, in the order of :data:`_FACETS`."""
    return (session.status.value, session.project, session.computer)


def _require(found: Mapping[str, T], kind: str, item_id: str) -> T:
    """The ``kind`` named ``item_id``, or :class:`NotFound` (a malformed id too)."""
    item = found.get(item_id) if is_valid_id(item_id) else None
    if item is None:
        raise NotFound.of(kind, item_id)
    return item


_HANDLERS: dict[str, Callable[[Cache, Event], None]] = {
    EventType.SESSION_CREATED: Cache._on_session,
    EventType.SESSION_UPDATED: Cache._on_session,
    EventType.SESSION_ENDED: Cache._on_session,
    EventType.SESSION_DELETED: Cache._on_session_deleted,
    EventType.MESSAGE_CREATED: Cache._on_message,
    EventType.MESSAGE_STARTED: Cache._on_message,
    EventType.MESSAGE_COMPLETED: Cache._on_message,
    EventType.MESSAGE_FAILED: Cache._on_message,
    EventType.MESSAGE_CANCELLED: Cache._on_message,
    EventType.MESSAGE_DELTA: Cache._on_delta,
    EventType.APPROVAL_REQUESTED: Cache._on_approval,
    EventType.APPROVAL_RESOLVED: Cache._on_approval,
}
