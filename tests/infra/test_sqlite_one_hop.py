"""SQLite statements through infra/sqlite_one_hop.py: one trip to aiosqlite's thread per statement, none for ending a
unit of work that wrote nothing, and what DB-API readers of the cursor see is unchanged; several SELECTs in one trip
(Database.read_together) return what SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosqlite
import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    Table,
    bindparam,
    event,
    insert,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from typecase.server.infra.sql import Database, JSONType, UTCDateTime
from typecase.server.infra.sqlite_one_hop import OneHopConnection


@pytest.fixture
async def db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'one-hop.db'}")
    await db.start()
    async with db.session() as s:
        await s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    yield db
    await db.stop()


@pytest.fixture
def trips(monkeypatch) -> list[str]:
    """The functions queued to aiosqlite's thread, by name."""
    seen: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


async def test_statements_keep_their_results(db) -> None:
    async with db.engine.connect() as conn:
        assert type((await conn.get_raw_connection()).dbapi_connection) is OneHopConnection
    async with db.session() as s:
        many = await s.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "a"}, {"v": "b"}])
        assert many.rowcount == 2
        one = await s.execute(text("INSERT INTO t (v) VALUES ('c')"))
        assert one.lastrowid == 3
    async with db.session() as s:
        assert (await s.execute(text("UPDATE t SET v = v || '!' WHERE id < 3"))).rowcount == 2
    async with db.reading() as s:
        assert (await s.execute(text("SELECT id, v FROM t ORDER BY id"))).all() == [(1, "a!"), (2, "b!"), (3, "c")]


async def test_a_failed_write_is_rolled_back(db) -> None:
    with pytest.raises(Exception, match="UNIQUE"):
        async with db.session() as s:
            await s.execute(text("INSERT INTO t (v) VALUES ('x')"))
            await s.execute(text("INSERT INTO t (v) VALUES ('x')"))
    async with db.reading() as s:
        assert (await s.execute(text("SELECT count(*) FROM t"))).scalar() == 0


async def test_a_statement_is_one_trip_and_a_read_only_unit_ends_without_one(db, trips) -> None:
    async with db.reading() as s:
        await s.execute(text("SELECT 1"))
        await s.execute(text("SELECT 2"))
    assert trips == ["_run", "_run"]  # no cursor, fetch or close trips; no rollback of a transaction never begun
    trips.clear()
    async with db.session() as s:
        await s.execute(text("INSERT INTO t (v) VALUES ('y')"))
    assert trips == ["_run", "commit"]


async def test_a_streamed_write_is_still_ended(db) -> None:
    """The adapter's streaming cursor cannot say whether it left a transaction open: the rollback still runs."""
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            await s.execute(text("SELECT 1"))  # the connection is idle after this statement
            rows = await s.stream(text("INSERT INTO t (v) VALUES ('s') RETURNING id"))
            assert [tuple(r) async for r in rows] == [(1,)]
            raise RuntimeError("abandon the unit of work")
    async with db.reading() as s:
        assert (await s.execute(text("SELECT count(*) FROM t"))).scalar() == 0


_MD = MetaData()
_TYPED = Table(
    "typed",
    _MD,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime()),
    Column("doc", JSONType),
    Column("flag", Boolean),
)
_ALL = select(_TYPED, literal(True).label("marked")).where(_TYPED.c.id >= bindparam("low")).order_by(_TYPED.c.id)
_NONE = select(_TYPED.c.id).where(_TYPED.c.id == bindparam("low"))


async def test_read_together_converts_as_sqlalchemy_does_in_one_trip(db, trips) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(_MD.create_all)
    at = datetime(2026, 12, 7, 23, 0, 1, 5, tzinfo=UTC)
    async with db.session() as s:
        await s.execute(
            insert(_TYPED), [{"at": at, "doc": {"a": [1, "x"]}, "flag": True}, {"at": None, "doc": None, "flag": False}]
        )
    async with db.reading() as s:
        expected = [(await s.execute(_ALL, {"low": 1})).all(), (await s.execute(_NONE, {"low": 9})).all()]
    trips.clear()
    got = await db.read_together([(_ALL, {"low": 1}), (_NONE, {"low": 9})])
    assert trips == ["_selects"]  # both statements on the reader's thread; no pool connection, no commit
    assert got == expected
    assert got[0][0].at == at and got[0][0].at.tzinfo is UTC and got[0][0].doc == {"a": [1, "x"]}
    assert got[0][1]._asdict() == {"id": 2, "at": None, "doc": None, "flag": False, "marked": True}
    async with db.session() as s:  # the reader keeps no snapshot: it sees what commits after its last read
        await s.execute(insert(_TYPED), [{"at": None, "doc": [], "flag": None}])
    (again,) = await db.read_together([(_ALL, {"low": 3})])
    assert [tuple(r) for r in again] == [(3, None, [], None, True)]


async def test_read_together_fails_as_sqlalchemy_does(db) -> None:
    missing = select(literal_column("nope")).select_from(text("no_such_table"))
    with pytest.raises(OperationalError, match="no such table"):
        await db.read_together([(missing, {})])


async def test_read_together_on_every_backend(fresh_database) -> None:
    db = fresh_database
    async with db.engine.begin() as conn:
        await conn.run_sync(_MD.create_all)
    at = datetime(2026, 12, 7, 23, 0, 1, 5, tzinfo=UTC)
    async with db.session() as s:
        await s.execute(insert(_TYPED), [{"at": at, "doc": {"a": 1}, "flag": True}])
    got = await db.read_together([(_ALL, {"low": 1}), (_NONE, {"low": 9})])
    assert [[r._asdict() for r in rows] for rows in got] == [
        [{"id": 1, "at": at, "doc": {"a": 1}, "flag": True, "marked": True}],
        [],
    ]


async def test_read_together_fails_as_sqlalchemy_does_on_every_backend(fresh_database) -> None:
    """An error is SQLAlchemy's (the class its execution raises), and the checkout goes back to the pool."""
    db = fresh_database
    missing = select(literal_column("nope")).select_from(text("no_such_table"))
    async with db.reading() as s:
        with pytest.raises(DBAPIError) as expected:
            await s.execute(missing)
    with pytest.raises(DBAPIError) as failed:
        await db.read_together([(missing, {})])
    assert type(failed.value) is type(expected.value) and not failed.value.connection_invalidated
    assert db.engine.sync_engine.pool.checkedout() == 0
    assert await db.read_together([(select(literal(7).label("n")), {})]) == [[(7,)]]


async def test_read_together_sees_commits_outside_sqlalchemys_execution(fresh_database) -> None:
    """On a database server the reads run outside a transaction (each sees what was committed before it); on
    PostgreSQL directly on asyncpg, not through SQLAlchemy's execution."""
    db = fresh_database
    async with db.engine.begin() as conn:
        await conn.run_sync(_MD.create_all)
    executed: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *a: executed.append(a[2]))
    for n in (1, 2):
        async with db.session() as s:
            await s.execute(insert(_TYPED), [{"doc": {"n": n}}])
        (rows,) = await db.read_together([(_ALL, {"low": 1})])
        assert [r.doc for r in rows] == [{"n": i} for i in range(1, n + 1)]
    assert db.engine.sync_engine.pool.checkedout() == 0
    if db.dialect == "postgresql":
        assert not [sql for sql in executed if sql.startswith("SELECT typed")]
