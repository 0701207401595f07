"""SQLite statements through infra/sqlite_one_hop.py: one trip to aiosqlite's thread per statement, none for ending a
unit of work that wrote nothing, and what DB-API readers of the cursor see is unchanged."""

from __future__ import annotations

import aiosqlite
import pytest
from sqlalchemy import text

from typecase.server.infra.sql import Database
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
