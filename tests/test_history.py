"""History pages and session lists in the core: keyset and offset pages from the store, kept
pages within their byte budget and dropped on change, live text, and right-sized JSON."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from structlog.testing import capture_logs

from aiosvc.bus import Bus, session_topic
from aiosvc.cache import Cache
from aiosvc.convert import dumps, right_sized
from aiosvc.errors import InvalidParameter
from aiosvc.events import EventType
from aiosvc.history import ITEM_OVERHEAD, PAGE_OVERHEAD
from aiosvc.models import ErrorInfo, Message, MessageStatus, Role, Session, SessionStatus
from aiosvc.paging import Page, Window
from aiosvc.store import Database, Store
from aiosvc.store.tables import MESSAGES, SESSIONS

NOW = "2026-12-01T10:00:00.000Z"


def session(ident: str, **changes: Any) -> Session:
    base = Session(
        id=ident,
        title="t",
        agent="echo",
        project=None,
        computer="here",
        status=SessionStatus.IDLE,
        created_at=NOW,
        updated_at=NOW,
    )
    return attrs.evolve(base, **changes)


def message(session_id: str, n: int, content: str = "", **changes: Any) -> Message:
    base = Message(
        id=f"msg_{session_id}_{n:05d}",
        session_id=session_id,
        role=Role.USER,
        content=content or f"message {n}",
        status=MessageStatus.COMPLETE,
        created_at=NOW,
    )
    return attrs.evolve(base, **changes)


@attrs.define
class Core:
    store: Store
    bus: Bus
    cache: Cache

    async def add_session(self, ident: str, count: int = 0, **changes: Any) -> Session:
        """Store a session with ``count`` messages, publishing as the commands do."""
        created = session(ident, message_count=count, **changes)
        messages = [message(ident, n) for n in range(count)]
        await self.store.write([SESSIONS.save(created), *(MESSAGES.save(m) for m in messages)])
        self.bus.publish(EventType.SESSION_CREATED, ["sessions"], created)
        return created

    async def add_message(self, new: Message) -> None:
        """Store and publish one message (the session's count follows)."""
        before = self.cache.session(new.session_id)
        assert before is not None
        after = attrs.evolve(before, message_count=before.message_count + 1)
        await self.store.write([MESSAGES.save(new), SESSIONS.save(after)])
        self.bus.publish(EventType.MESSAGE_CREATED, [session_topic(new.session_id)], new)
        self.bus.publish(EventType.SESSION_UPDATED, ["sessions"], after)

    async def history(self, session_id: str, **window: object) -> Page:
        """A page of the history, with the page size of 10 unless given."""
        found = self.cache.session(session_id)
        assert found is not None
        return await self.cache.history_page(found, Window(**{"limit": 10, **window}))  # type: ignore[arg-type]


@pytest.fixture
async def core(db_path: Path) -> AsyncIterator[Core]:
    database = Database(db_path)
    await database.open()
    store = Store(database)
    bus = Bus(buffer_size=1000)
    cache = Cache(store, bus, max_bytes=256 * 1024)
    await cache.load()
    yield Core(store, bus, cache)
    cache.close()
    await database.close()


def contents(page: Page) -> list[str]:
    return [orjson.loads(item)["content"] for item in page.items]


# ---- history pages


async def test_pages_by_offset_and_by_cursor_in_both_directions(core: Core) -> None:
    await core.add_session("ses_a", 35)
    first = await core.history("ses_a")
    assert contents(first) == [f"message {n}" for n in range(10)]
    assert (first.total, first.offset, first.prev) == (35, 0, None)
    assert first.next == "msg_ses_a_00009"

    second = await core.history("ses_a", after=first.next)
    assert contents(second) == [f"message {n}" for n in range(10, 20)]
    assert (second.offset, second.prev, second.next) == (None, "msg_ses_a_00010", "msg_ses_a_00019")

    last = await core.history("ses_a", after="msg_ses_a_00029")
    assert contents(last) == [f"message {n}" for n in range(30, 35)]
    assert (last.prev, last.next) == ("msg_ses_a_00030", None)

    back = await core.history("ses_a", before=second.prev)
    assert contents(back) == contents(first)
    assert (back.prev, back.next) == (None, "msg_ses_a_00009")
    newest = await core.history("ses_a", before="msg_ses_a_00034", limit=3)
    assert contents(newest) == ["message 31", "message 32", "message 33"]

    deep = await core.history("ses_a", offset=30)
    assert contents(deep) == contents(last)
    assert (deep.offset, deep.prev, deep.next) == (30, "msg_ses_a_00030", None)
    past = await core.history("ses_a", offset=99)
    assert (past.items, past.total, past.prev, past.next) == ([], 35, None, None)


async def test_a_cursor_from_another_session_or_nowhere_is_invalid(core: Core) -> None:
    await core.add_session("ses_a", 3)
    await core.add_session("ses_b", 3)
    for window in ({"after": "msg_ses_b_00001"}, {"before": "msg_nope"}):
        with pytest.raises(InvalidParameter) as caught:
            await core.history("ses_a", **window)
        name = next(iter(window))
        assert caught.value.details == {"parameter": name}
        assert caught.value.message == (
            f"query parameter {name!r}: no message {window[name]!r} in this session"
        )


async def test_a_change_drops_the_sessions_kept_pages_at_once(core: Core) -> None:
    await core.add_session("ses_a", 5)
    await core.add_session("ses_b", 5)
    await core.history("ses_a")
    await core.history("ses_b")
    assert core.cache.histories.kept[0] == 2
    await core.add_message(message("ses_a", 5, "new"))
    assert core.cache.histories.kept[0] == 1  # ses_b's page stays
    again = await core.history("ses_a")
    assert contents(again)[-1] == "new"
    assert again.total == 6


async def test_a_page_read_while_its_session_changes_is_answered_but_not_kept(
    core: Core,
) -> None:
    await core.add_session("ses_a", 5)
    reading = asyncio.create_task(core.history("ses_a"))
    await asyncio.sleep(0)  # the read has started: it waits for the database
    core.cache.histories.changed("ses_a")  # as a message event would, meanwhile
    assert contents(await reading) == [f"message {n}" for n in range(5)]
    assert core.cache.histories.kept[0] == 0
    await core.history("ses_a")
    assert core.cache.histories.kept[0] == 1


async def test_kept_pages_stay_within_the_budget_least_recently_read_first(
    core: Core,
) -> None:
    core.cache.reconfigure(64 * 1024)
    for n in range(20):
        await core.add_session(f"ses_{n:02d}", 30)
    for n in range(20):
        await core.history(f"ses_{n:02d}", limit=30)
        kept, cost = core.cache.histories.kept
        assert cost <= 64 * 1024
    assert 0 < kept < 20
    # The most recently read are kept; reading one again moves it to the back of the line.
    assert (await core.history("ses_19", limit=30)).items
    core.cache.reconfigure(0)
    assert core.cache.histories.kept == (0, 0)


async def test_a_page_costs_no_more_memory_than_the_budget_counts(core: Core) -> None:
    await core.add_session("ses_a", 200)
    core.cache.reconfigure(0)  # read once keeping nothing: what any read leaves behind
    for offset in range(0, 200, 20):
        await core.history("ses_a", offset=offset, limit=20)
    core.cache.reconfigure(1 << 20)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for offset in range(0, 200, 20):
            await core.history("ses_a", offset=offset, limit=20)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    kept, cost = core.cache.histories.kept
    assert kept == 10
    assert held <= cost, (held, cost)
    # and the count is not wildly above what is held either
    assert cost < 2 * held + 10 * PAGE_OVERHEAD + 200 * ITEM_OVERHEAD


async def test_a_streaming_reply_shows_its_text_so_far_and_its_end(core: Core) -> None:
    await core.add_session("ses_a", 1)
    reply = message("ses_a", 1, "", role=Role.ASSISTANT, status=MessageStatus.STREAMING)
    await core.add_message(reply)
    topic = [session_topic("ses_a")]
    core.bus.publish(EventType.MESSAGE_STARTED, topic, reply)
    for delta in ("hel", "lo"):
        core.bus.publish(EventType.MESSAGE_DELTA, topic, {"message_id": reply.id, "delta": delta})
    page = await core.history("ses_a")
    assert orjson.loads(page.items[-1])["content"] == "hello"
    core.bus.publish(EventType.MESSAGE_DELTA, topic, {"message_id": reply.id, "delta": "!"})
    assert contents(await core.history("ses_a"))[-1] == "hello!"  # kept, shown live
    assert [m.content for m in await core.cache.history("ses_a")][-1] == "hello!"
    # It ended, but the database could not say so yet: memory shows how it ended.
    ended = attrs.evolve(reply, content="", status=MessageStatus.FAILED)
    core.cache.unsaved(ended)
    core.bus.publish(EventType.MESSAGE_FAILED, topic, ended)
    assert orjson.loads((await core.history("ses_a")).items[-1])["status"] == "failed"
    assert (await core.cache.history("ses_a"))[-1] == ended
    core.cache.saved(ended.id)  # (stopping without ever storing it: the row says it all)
    assert orjson.loads((await core.history("ses_a")).items[-1])["status"] == "streaming"


async def test_the_whole_history_is_read_a_page_at_a_time(core: Core) -> None:
    await core.add_session("ses_a", 1201)
    pages = [page async for page in core.store.history("ses_a")]
    assert [len(p) for p in pages] == [200] * 6 + [1]
    history = await core.cache.history("ses_a")
    assert [m.content for m in history] == [f"message {n}" for n in range(1201)]


async def test_the_json_the_database_builds_is_the_models(core: Core) -> None:
    """Pages take each message's JSON from SQLite: it must say what the model's JSON says,
    whatever the text holds, and a damaged row is left out as when it is read as a model."""
    await core.add_session("ses_a", 0)
    odd = 'q " b \\ nl \n tab \t ctl \x01 \x1b[2J \x7f é 漢 😀 \u2028 </script>'
    messages = [
        message("ses_a", 0, odd),
        message(
            "ses_a",
            1,
            "x",
            role=Role.ASSISTANT,
            status=MessageStatus.FAILED,
            error=ErrorInfo(code="agent_error", message=odd),
            completed_at=NOW,
        ),
        message("ses_a", 2, "y", role=Role.TOOL, status=MessageStatus.CANCELLED),
        message("ses_a", 3, "z" * 70_000, role=Role.SYSTEM, status=MessageStatus.PENDING),
    ]
    for new in messages:
        await core.add_message(new)
    page = await core.history("ses_a")
    assert [orjson.loads(item) for item in page.items] == [orjson.loads(dumps(m)) for m in messages]
    assert all(sys.getsizeof(item) - len(item) < 64 for item in page.items)
    await core.store.write(
        [("UPDATE messages SET status = 'bogus' WHERE id = ?", [messages[2].id])]
    )
    core.cache.histories.changed("ses_a")
    with capture_logs() as logs:
        again = await core.history("ses_a")
    assert [orjson.loads(item)["id"] for item in again.items] == [
        messages[0].id,
        messages[1].id,
        messages[3].id,
    ]
    assert [(e["event"], e["id"]) for e in logs] == [("row_unreadable", messages[2].id)]


# ---- session lists


async def test_session_pages_newest_first_with_filters_and_counts(core: Core) -> None:
    for n in range(12):
        await core.add_session(
            f"ses_{n:02d}", project="p" if n % 2 else None, status=SessionStatus.IDLE
        )
    first = await core.cache.sessions_page({}, Window(limit=5))
    ids = [orjson.loads(item)["id"] for item in first.items]
    assert ids == ["ses_11", "ses_10", "ses_09", "ses_08", "ses_07"]
    assert (first.total, first.offset, first.next, first.prev) == (12, 0, "ses_07", None)
    older = await core.cache.sessions_page({}, Window(limit=5, after="ses_07"))
    assert [orjson.loads(i)["id"] for i in older.items] == [
        "ses_06",
        "ses_05",
        "ses_04",
        "ses_03",
        "ses_02",
    ]
    newer = await core.cache.sessions_page({}, Window(limit=3, before="ses_06"))
    assert [orjson.loads(i)["id"] for i in newer.items] == ["ses_09", "ses_08", "ses_07"]
    assert (newer.prev, newer.next) == ("ses_09", "ses_07")

    mine = await core.cache.sessions_page({"project": "p"}, Window(limit=4, after="ses_10"))
    assert [orjson.loads(i)["id"] for i in mine.items] == ["ses_09", "ses_07", "ses_05", "ses_03"]
    assert (mine.total, mine.next) == (6, "ses_03")
    ended = attrs.evolve(session("ses_05", project="p"), status=SessionStatus.ENDED)
    core.bus.publish(EventType.SESSION_ENDED, ["sessions"], ended)
    assert core.cache.count({"project": "p"}) == 6
    assert core.cache.count({"project": "p", "status": "idle"}) == 5
    assert core.cache.count({"status": "ended"}) == 1
    core.bus.publish(EventType.SESSION_DELETED, ["sessions"], {"id": "ses_05"})
    assert core.cache.count({"project": "p"}) == 5
    with pytest.raises(InvalidParameter):
        await core.cache.sessions_page({}, Window(limit=5, after="ses_05"))


# ---- right-sized JSON


def test_kept_json_is_right_sized() -> None:
    value = {"text": "x" * 900_000}
    raw = orjson.dumps(value)
    kept = right_sized(raw)
    assert kept == raw
    assert sys.getsizeof(kept) - len(kept) < 64
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        oversized = orjson.dumps(value)
        with_buffer = tracemalloc.get_traced_memory()[0] - before
        copy = right_sized(orjson.dumps(value))
        held = tracemalloc.get_traced_memory()[0] - before - with_buffer
    finally:
        tracemalloc.stop()
    assert with_buffer > 2 * len(oversized)  # what orjson's own bytes hold (about 9x)
    assert held < len(copy) + 1024
    small = dumps(session("ses_a"))
    assert sys.getsizeof(right_sized(small)) - len(small) < 64


def test_the_bus_keeps_right_sized_json_without_the_publishers_object() -> None:
    bus = Bus(buffer_size=10)
    published = bus.publish_hook("big", ["hooks"], {"text": "x" * 100_000})
    assert published.obj is not None
    [kept] = bus.since(0) or []
    assert kept.obj is None and kept.data_json == published.data_json
    assert sys.getsizeof(kept.data_json) - len(kept.data_json) < 64
