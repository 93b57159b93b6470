"""Mapping between the attrs models and their tables: one generic mapper, four tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import attrs
import orjson
import structlog
from cattrs.preconf.orjson import make_converter

from aiosvc.convert import converter
from aiosvc.models import Approval, Command, Message, Session
from aiosvc.store.db import Statement

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: Rows are read back with cattrs' plain converter, not the API's strict one: the store must
#: read whatever it wrote (the API refuses NUL in what clients send, for example, and text
#: stored by an older version may not pass today's checks).
_rows = make_converter()


class Table(Generic[T]):
    """Writes a model as a row (insert or update by id) and reads a row back as a model."""

    def __init__(
        self,
        name: str,
        model: type[T],
        json_columns: frozenset[str] = frozenset(),
        insert_only: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.model = model
        self.columns = tuple(f.name for f in attrs.fields(model))  # type: ignore[arg-type]
        self.json_columns = json_columns | frozenset(insert_only)
        # Columns outside the model (a command's journal payload): written when the row is
        # created, never changed by later saves.
        self.insert_only = insert_only
        names = ", ".join(self.columns + insert_only)
        marks = ", ".join("?" for _ in self.columns + insert_only)
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c != "id")
        self._upsert = (
            f"INSERT INTO {name} ({names}) VALUES ({marks}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        self.select = f"SELECT {', '.join(self.columns)} FROM {name}"

    def save(self, obj: T, **insert_only: Any) -> Statement:
        """Return the statement that writes ``obj`` (insert, or update when its id exists)."""
        row = converter.unstructure(obj)
        row.update(insert_only)
        names = self.columns + self.insert_only
        return self._upsert, [self._column(c, row.get(c)) for c in names]

    def _column(self, name: str, value: Any) -> Any:
        if name in self.json_columns and value is not None:
            return orjson.dumps(value).decode()
        return value

    def load(self, row: sqlite3.Row) -> T:
        """Build the model from a row selected with :attr:`select`."""
        data = {c: row[c] for c in self.columns}
        for name in self.json_columns.intersection(self.columns):
            if data[name] is not None:
                data[name] = orjson.loads(data[name])
        return _rows.structure(data, self.model)

    def load_all(self, rows: Iterable[sqlite3.Row]) -> list[T]:
        """Build a model from each row; a row that cannot be read (damaged on disk, or edited
        by hand) is logged and left out rather than making every other row unreadable."""
        loaded = []
        for row in rows:
            try:
                loaded.append(self.load(row))
            except Exception as exc:  # whatever the damage, the rest of the table still reads
                log.error("row_unreadable", table=self.name, id=_row_id(row), error=_describe(exc))
        return loaded

    def delete(self, ident: str) -> Statement:
        """Return the statement that deletes the row with this id."""
        return f"DELETE FROM {self.name} WHERE id = ?", [ident]


def _row_id(row: sqlite3.Row) -> object:
    try:
        return row["id"]
    except (IndexError, KeyError):
        return None


def _describe(exc: Exception) -> str:
    notes = getattr(exc, "exceptions", None)  # cattrs groups the failures of a class
    inner = notes[0] if notes else exc
    return f"{type(inner).__name__}: {inner}"


SESSIONS = Table("sessions", Session)
MESSAGES = Table("messages", Message, frozenset({"error", "usage"}))
COMMANDS = Table("commands", Command, frozenset({"result", "error"}), insert_only=("payload",))
APPROVALS = Table("approvals", Approval, frozenset({"input"}))
