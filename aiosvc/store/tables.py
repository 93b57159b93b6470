"""Mapping between the attrs models and their tables: one generic mapper, four tables."""

from __future__ import annotations

import sqlite3
from typing import Any, Generic, TypeVar

import attrs
import orjson

from aiosvc.convert import converter
from aiosvc.models import Approval, Command, Message, Session
from aiosvc.store.db import Statement

T = TypeVar("T")


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
        return converter.structure(data, self.model)

    def delete(self, ident: str) -> Statement:
        """Return the statement that deletes the row with this id."""
        return f"DELETE FROM {self.name} WHERE id = ?", [ident]


SESSIONS = Table("sessions", Session)
MESSAGES = Table("messages", Message, frozenset({"error"}))
COMMANDS = Table("commands", Command, frozenset({"result", "error"}), insert_only=("payload",))
APPROVALS = Table("approvals", Approval, frozenset({"input"}))
