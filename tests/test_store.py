"""The store: migrations, checks that refuse bad files, group commit, recovery after a crash."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from aiosvc.models import (
    Approval,
    ApprovalStatus,
    Command,
    CommandStatus,
    ErrorInfo,
    Message,
    MessageStatus,
    Role,
    Session,
    SessionStatus,
)
from aiosvc.store import Database, Store, StoreError
from aiosvc.store.db import migrations, schema_version
from aiosvc.store.tables import APPROVALS, COMMANDS, MESSAGES, SESSIONS

NOW = "2026-11-22T03:00:00.000Z"


def session(ident: str = "ses_1", status: SessionStatus = SessionStatus.IDLE) -> Session:
    return Session(
        id=ident,
        title="t",
        agent="echo",
        project=None,
        computer="here",
        status=status,
        created_at=NOW,
        updated_at=NOW,
    )


def message(ident: str, status: MessageStatus, role: Role = Role.ASSISTANT) -> Message:
    return Message(
        id=ident, session_id="ses_1", role=role, content="hi", status=status, created_at=NOW
    )


def command(ident: str, status: CommandStatus) -> Command:
    return Command(id=ident, type="send_message", status=status, session_id="ses_1", created_at=NOW)


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    database = Database(db_path)
    await database.open()
    yield Store(database)
    await database.close()


async def test_new_file_is_migrated_to_the_current_version(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_models_round_trip(store: Store) -> None:
    failed = attrs.evolve(
        message("msg_2", MessageStatus.FAILED), error=ErrorInfo(code="x", message="y")
    )
    approval = Approval(
        id="apr_1",
        session_id="ses_1",
        message_id="msg_2",
        tool="shell",
        input={"cmd": ["ls", 1, None]},
        status=ApprovalStatus.PENDING,
        created_at=NOW,
    )
    done = Command(
        id="cmd_1",
        type="send_message",
        status=CommandStatus.SUCCEEDED,
        session_id="ses_1",
        created_at=NOW,
        finished_at=NOW,
        result={"message_id": "msg_2"},
    )
    await store.write([SESSIONS.save(session()), MESSAGES.save(failed), APPROVALS.save(approval)])
    await store.write([COMMANDS.save(done, payload={"reply_id": "msg_2"})])
    assert await store.sessions() == [session()]
    assert await store.messages("ses_1") == [failed]
    assert await store.approvals() == [approval]
    assert await store.command("cmd_1") == done
    assert await store.command("cmd_nope") is None


async def test_sessions_newest_first_and_updates_keep_order(store: Store) -> None:
    await store.write([SESSIONS.save(session("a"))])
    await store.write([SESSIONS.save(session("b"))])
    await store.write([SESSIONS.save(session("a", SessionStatus.RUNNING))])
    assert [(s.id, s.status) for s in await store.sessions()] == [
        ("b", SessionStatus.IDLE),
        ("a", SessionStatus.RUNNING),
    ]


async def test_concurrent_writes_are_grouped_and_a_bad_one_fails_alone(store: Store) -> None:
    await store.write([SESSIONS.save(session())])
    good = [
        store.write([MESSAGES.save(message(f"m{i}", MessageStatus.COMPLETE))]) for i in range(50)
    ]
    orphan = attrs.evolve(message("orphan", MessageStatus.COMPLETE), session_id="ses_missing")
    bad = store.write([MESSAGES.save(orphan)])  # violates the foreign key
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(r is None for r in results[:-1])
    assert isinstance(results[-1], StoreError)
    assert len(await store.messages("ses_1")) == 50


async def test_recover_fails_interrupted_replies_and_requeues_queued(store: Store) -> None:
    await store.write(
        [
            SESSIONS.save(session(status=SessionStatus.WAITING_APPROVAL)),
            MESSAGES.save(message("reply_1", MessageStatus.STREAMING)),
            COMMANDS.save(
                command("cmd_1", CommandStatus.RUNNING),
                payload={"message_id": "u1", "reply_id": "reply_1"},
            ),
            COMMANDS.save(
                command("cmd_2", CommandStatus.QUEUED),
                payload={"message_id": "u2", "reply_id": "reply_2"},
            ),
            APPROVALS.save(
                Approval(
                    id="apr_1",
                    session_id="ses_1",
                    message_id="reply_1",
                    tool="t",
                    input={},
                    status=ApprovalStatus.PENDING,
                    created_at=NOW,
                )
            ),
        ]
    )
    recovery = await store.recover("2026-11-22T04:00:00.000Z")
    assert (recovery.failed_replies, recovery.expired_approvals) == (1, 1)
    assert [(c.id, p) for c, p in recovery.requeued] == [
        ("cmd_2", {"message_id": "u2", "reply_id": "reply_2"})
    ]
    [reply] = await store.messages("ses_1")
    assert reply.status is MessageStatus.FAILED
    assert reply.error == ErrorInfo(
        code="interrupted", message="the server stopped before the reply finished"
    )
    assert reply.completed_at == "2026-11-22T04:00:00.000Z"
    cmd = await store.command("cmd_1")
    assert cmd is not None and cmd.status is CommandStatus.FAILED
    assert [a.status for a in await store.approvals()] == [ApprovalStatus.EXPIRED]
    assert [s.status for s in await store.sessions()] == [SessionStatus.IDLE]


async def test_event_id_blocks_never_overlap(store: Store) -> None:
    assert await store.reserve_event_ids(100) == (1, 100)
    await store.set_event_ids_reserved(250)
    await store.set_event_ids_reserved(200)  # never moves backwards
    assert await store.reserve_event_ids(100) == (251, 350)


async def test_a_database_of_the_first_schema_gets_the_list_indexes_and_keeps_its_rows(
    db_path: Path,
) -> None:
    first = next(sql for number, _, sql in migrations() if number == 1)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(first)
        conn.execute(  # the columns of the first schema
            "INSERT INTO sessions (id, title, agent, project, computer, status, created_at, "
            "updated_at) VALUES ('ses_1', '', 'echo', NULL, 'c', 'idle', 't', 't')"
        )
        conn.execute(
            "INSERT INTO approvals (id, session_id, message_id, tool, input, status, "
            "created_at) VALUES ('apr_1', 'ses_1', 'msg_1', 'ls', '{}', 'denied', 't')"
        )
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    database = Database(db_path)
    await database.open()  # (a missing marker beside an existing file is fine)
    await database.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() == 5
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {"sessions_by_status", "sessions_by_project", "sessions_by_computer"} <= indexes
        assert {"messages_by_created", "replies_by_created", "sessions_by_created"} <= indexes
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq, id FROM sessions WHERE status = 'idle' AND seq < 5 "
            "ORDER BY seq DESC LIMIT 10"
        ).fetchall()
        assert "USING INDEX sessions_by_status" in plan[0][3]
        assert conn.execute("SELECT id, model, system_prompt FROM sessions").fetchall() == [
            ("ses_1", None, None)
        ]
        # The approvals table, rebuilt to take external approvals, kept its rows.
        assert conn.execute(
            "SELECT id, session_id, message_id, status FROM approvals"
        ).fetchall() == [("apr_1", "ses_1", "msg_1", "denied")]
        conn.execute(
            "INSERT INTO approvals (id, session_id, message_id, tool, input, status, "
            "created_at) VALUES ('apr_2', NULL, NULL, 'x', '{}', 'pending', 't')"
        )
    conn.close()


async def test_a_newer_schema_is_refused_not_recreated(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {schema_version() + 1}")
    with pytest.raises(StoreError, match="newer than this aiosvc understands"):
        await Database(db_path).open()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() + 1


async def test_a_file_that_is_not_a_database_is_refused_and_kept(db_path: Path) -> None:
    db_path.write_bytes(b"this is not SQLite " * 1000)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        await Database(db_path).open()
    assert db_path.read_bytes() == b"this is not SQLite " * 1000


async def test_a_corrupt_database_is_refused(db_path: Path) -> None:
    database = Database(db_path)
    await database.open()
    await database.close()
    raw = bytearray(db_path.read_bytes())
    raw[4096 : 4096 * 2] = b"\xff" * 4096  # scribble over the first table's page
    db_path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        await Database(db_path).open()


async def test_an_unreadable_file_is_refused(db_path: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot"):
        await Database(blocker / "sub" / "aiosvc.db").open()
