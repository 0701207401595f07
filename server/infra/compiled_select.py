"""SELECTs compiled once and run without SQLAlchemy's execution: their SQL, bind conversions and result conversions
taken from the compiled statement and the columns' types, so rows come back as SQLAlchemy would return them. Used
where a turn start's reads run directly on a driver (sqlite_one_hop.Reader, sql.Database.read_together on
PostgreSQL): SQLAlchemy's per-statement machinery (a Connection, the cache lookup, a CursorResult) cost more there
than the statements themselves.
"""

from __future__ import annotations

import collections
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect


class CompiledSelect:
    """A SELECT compiled once for a dialect: its SQL, its parameters in order with their bind conversions, and its
    columns' result conversions (what SQLAlchemy's execution applies, done here without its per-statement
    machinery)."""

    __slots__ = ("sql", "compiled", "binds", "results", "row")

    def __init__(self, statement: Select[Any], dialect: Dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.compiled = compiled
        processors: dict[str, Any] = dict(compiled._bind_processors)
        self.binds: list[tuple[str, Any]] = [(name, processors.get(name)) for name in compiled.positiontup or ()]
        self.results: list[Any] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in statement.selected_columns
        ]
        self.row = collections.namedtuple("Row", statement.selected_columns.keys(), rename=True)  # type: ignore[misc]

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        params = self.compiled.construct_params(values)
        return tuple(params[name] if convert is None else convert(params[name]) for name, convert in self.binds)

    def rows(self, raw: list[Any]) -> list[Any]:
        results, row = self.results, self.row
        if not any(results):
            return [row(*values) for values in raw]
        return [row(*[v if f is None else f(v) for f, v in zip(results, values, strict=True)]) for values in raw]


class Statements:
    """CompiledSelect per statement, compiled on first use (the statements are module constants)."""

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self._compiled: dict[int, tuple[Select[Any], CompiledSelect]] = {}

    def get(self, statement: Select[Any]) -> CompiledSelect:
        entry = self._compiled.get(id(statement))
        if entry is None or entry[0] is not statement:  # the statement is kept, so its id is not reused meanwhile
            entry = self._compiled[id(statement)] = (statement, CompiledSelect(statement, self.dialect))
        return entry[1]
