"""SQLite statements in one hop to aiosqlite's worker thread instead of four.

SQLAlchemy's aiosqlite adapter makes an aiosqlite cursor per statement, then executes, fetches and closes it: four
round trips to the connection's thread (a future, a queue put, a thread wake-up and a loop wake-up each) around
what sqlite3 does in microseconds; a chat turn start's two reads paid eight. Here a statement (cursor, execute,
fetchall, close) is one function run in that thread, and the adapter keeps the rows, description, rowcount and
lastrowid as plain values; commit and rollback skip the thread when no transaction is open. infra/sql.py switches
each SQLite connection it opens to this (a connect hook), so only Typecase's engines use it. It builds on SQLAlchemy 2.1's adapter classes (AsyncAdapt_aiosqlite_connection and its
cursor: their slots and `_execute_async`), which pyproject.toml pins (sqlalchemy==2.1.9).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import Select
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_ss_cursor,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import EMPTY_DICT

from .compiled_select import Statements


class _Done:
    """What a finished statement leaves for DB-API readers of the cursor (its sqlite3 cursor is closed)."""

    __slots__ = ("description", "rowcount", "lastrowid", "arraysize")

    def __init__(self, description: Any = None, rowcount: int = -1, lastrowid: int | None = None):
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.arraysize = 1

    def close(self) -> None:
        pass


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> tuple[list[Any] | None, _Done, bool]:
    """In the connection's thread: the whole statement, and whether a transaction is open after it."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return rows, _Done(description, cursor.rowcount, cursor.lastrowid), conn.in_transaction
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # nothing is left open in the thread

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection):  # no aiosqlite cursor: no hop
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _Done()  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._in_thread(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._in_thread(operation, seq_of_parameters, True)

    async def _in_thread(self, operation: Any, parameters: Any, many: bool) -> None:
        connection: Any = self._connection  # aiosqlite.Connection: `_execute` queues a function for its thread
        async with self._adapt_connection._execute_mutex:
            connection.typecase_idle = False  # unknown until the statement returns (a failed one may leave a BEGIN)
            rows, self._cursor, in_transaction = await connection._execute(
                _run, connection._conn, operation, parameters, many
            )
            connection.typecase_idle = not in_transaction
        if rows is not None:
            self._rows = collections.deque(rows)


class _ServerSideCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """The adapter's own streaming cursor (rows fetched as read), which cannot tell whether it left a transaction
    open: the next commit or rollback takes its trip."""

    __slots__ = ()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        self._connection.typecase_idle = False
        return await super()._execute_async(operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._connection.typecase_idle = False
        return await super()._executemany_async(operation, seq_of_parameters)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Commit and rollback skip their trip to the thread when the last statement left no transaction open: sqlite3
    begins one only before a write, so a unit of work that only read (a turn start's) has nothing to end, and
    SQLAlchemy ends every unit of work with one or the other."""

    __slots__ = ()
    _cursor_cls = OneHopCursor  # type: ignore[assignment]  # a subclass of the base's cursor class
    _ss_cursor_cls = _ServerSideCursor

    def rollback(self) -> None:
        if not getattr(self._connection, "typecase_idle", False):
            super().rollback()
            self._connection.typecase_idle = True

    def commit(self) -> None:
        if not getattr(self._connection, "typecase_idle", False):
            super().commit()
            self._connection.typecase_idle = True


def use_one_hop(dbapi_connection: Any) -> None:
    """Switch an aiosqlite connection SQLAlchemy just opened to one-hop statements (its layout is unchanged)."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneHopConnection


def _selects(conn: sqlite3.Connection, jobs: list[tuple[str, tuple[Any, ...]]]) -> list[list[Any]]:
    """In the reader's thread: every SELECT's rows."""
    out = []
    for sql, params in jobs:
        cursor = conn.execute(sql, params)
        try:
            out.append(cursor.fetchall())
        finally:
            cursor.close()  # its read snapshot ends with it
    return out


class Reader:
    """A connection of its own, outside the pool, for reads that come together (`read`): a chat turn start's
    session row, retried turn and history window. They run in one trip to its thread with plain sqlite3, the
    statements compiled once and the values converted by their column types as SQLAlchemy would; through the pool
    the same reads cost a session, a checkout and check-in, and two trips through SQLAlchemy's execution (about a
    tenth of a 1-token turn's sampled CPU). One thread for every such read: calls queued while it works run back to
    back without waking it, and a read (microseconds in SQLite under WAL) never waits for a writer. Opened on first
    use; SELECTs only (no transaction is ever left open on it)."""

    def __init__(self, path: Path, dialect: Dialect, timeout: float):
        self.path, self.dialect, self.timeout = path, dialect, timeout
        self._worker: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()
        self._statements = Statements(dialect)

    async def _open(self) -> aiosqlite.Connection:
        async with self._opening:
            if self._worker is None:
                worker = aiosqlite.connect(self.path, timeout=self.timeout)  # the pool's busy timeout, too
                await worker
                self._worker = worker
        return self._worker

    async def read(self, queries: list[tuple[Select[Any], dict[str, Any]]]) -> list[list[Any]]:
        prepared = [(self._statements.get(statement), values) for statement, values in queries]
        jobs = [(c.sql, c.parameters(values)) for c, values in prepared]
        worker = self._worker or await self._open()
        try:
            raws = await worker._execute(_selects, worker._conn, jobs)
        except sqlite3.Error as error:  # as SQLAlchemy would raise it (an OperationalError: the database's outage)
            raise DBAPIError.instance(jobs[0][0], jobs[0][1], error, sqlite3.Error) from error
        return [c.rows(raw) for (c, _), raw in zip(prepared, raws, strict=True)]

    async def close(self) -> None:
        async with self._opening:
            if self._worker is not None:
                await self._worker.close()
                self._worker = None
