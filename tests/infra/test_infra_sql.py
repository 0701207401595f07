"""Contract tests for the SQL store and migrations on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, literal, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from typecase.server.infra import schema
from typecase.server.infra.schema import alembic_config, head_revisions, migrate, schema_revisions
from typecase.server.infra.sql import (
    Base,
    Database,
    MetaEntry,
    create_database,
    new_id,
    normalize_url,
    transient,
    utcnow,
)

from .infra_support import mysql_exec, pg_exec

CHILD = Path(__file__).with_name("migrate_child.py")
ALL_REVISIONS = sorted(r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def _url_for(request: pytest.FixtureRequest, dialect: str, tmp_path: Path) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'typecase.db'}"
    return request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")


async def _reset(dialect: str, url: str) -> None:
    """Leave the session database empty for the next test."""
    if dialect == "postgresql":
        await pg_exec(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    elif dialect == "mysql":
        name = make_url(url).database
        await mysql_exec(url, f"DROP DATABASE `{name}`", f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = _url_for(request, request.param, tmp_path)
    database = Database(url, pool_size=3)
    await database.start()
    try:
        yield database
    finally:
        await database.stop()
        await _reset(request.param, url)


# ----------------------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@h/d", "postgresql+asyncpg"),
        ("postgres://u:p@h/d", "postgresql+asyncpg"),
        ("mysql://u:p@h/d", "mysql+aiomysql"),
        ("mariadb://u:p@h/d", "mysql+aiomysql"),
        ("postgresql+psycopg://u:p@h/d", "postgresql+psycopg"),
        ("mysql+asyncmy://u:p@h/d", "mysql+asyncmy"),
    ],
)
def test_url_normalisation(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


def test_url_rejects_unknown_scheme_and_masks_password() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("oracle://u:p@h/d")
    db = Database("postgres://alice:s3cr3t-pw@db.internal:5432/app")
    assert db.dialect == "postgresql" and db.name == "sql/postgresql"
    assert "s3cr3t-pw" not in repr(db) and "s3cr3t-pw" not in db.display_url
    assert "alice" in repr(db)
    assert normalize_url("mysql://u@h/d").query["charset"] == "utf8mb4"


def test_create_database_defaults_to_sqlite_under_data_dir(tmp_path: Path) -> None:
    db = create_database(None, tmp_path)
    assert db.dialect == "sqlite" and db.sqlite_path == tmp_path.resolve() / "typecase.db"


def test_ids_are_sortable_ulids() -> None:
    ids = [new_id() for _ in range(50)]
    assert all(len(i) == 26 for i in ids) and len(set(ids)) == 50
    assert ids[0] < new_id()  # later ids sort after earlier ones (millisecond resolution)


# ----------------------------------------------------------------------------------------- behaviour


async def test_sqlite_pragmas_and_parent_dir(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "t.db"
    db = Database(f"sqlite:///{path}")
    await db.start()
    try:
        assert path.parent.is_dir()
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() >= 1000
    finally:
        await db.stop()


async def test_migrate_applies_once_then_reports_current(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    assert await schema_revisions(db) == ()
    with caplog.at_level(logging.INFO, logger="typecase.server.infra.schema"):
        applied = await migrate(db)
        assert await migrate(db) == []
    assert applied[0] == "0001_foundation" and sorted(applied) == ALL_REVISIONS  # every domain branch
    messages = [r.getMessage() for r in caplog.records if r.name == "typecase.server.infra.schema"]
    assert messages == [
        f"applied migrations: {', '.join(applied)}",
        f"schema up to date at {', '.join(head_revisions())}",
    ]
    assert await schema_revisions(db) == head_revisions()
    async with db.session() as s:
        installed = await s.get(MetaEntry, "schema_installed_at")
    assert installed is not None and abs(installed.update_time - utcnow()) < timedelta(minutes=5)


async def test_session_commits_or_rolls_back(db: Database) -> None:
    await migrate(db)
    async with db.session() as s:
        s.add(MetaEntry(key="k1", value="v1"))
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            s.add(MetaEntry(key="k2", value="v2"))
            await s.flush()
            raise RuntimeError("boom")
    async with db.session() as s:
        keys = set((await s.execute(select(MetaEntry.key))).scalars())
    assert "k1" in keys and "k2" not in keys


async def test_utc_datetimes_round_trip_with_microseconds(db: Database) -> None:
    await migrate(db)
    local = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5)))
    async with db.session() as s:
        s.add(MetaEntry(key="t", value="x", update_time=local))
    async with db.session() as s:
        got = (await s.execute(select(MetaEntry.update_time).where(MetaEntry.key == "t"))).scalar_one()
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got == local  # same instant, microseconds kept (MySQL DATETIME defaults to whole seconds)
    assert got.hour == 2


async def test_health_reports_ok_and_never_raises(db: Database) -> None:
    ok, detail = await db.health()
    assert ok and db.dialect in detail


@pytest.mark.parametrize(
    "url", ["postgresql://u:hunter2@127.0.0.1:1/x", "mysql://u:hunter2@127.0.0.1:1/x"], ids=["postgresql", "mysql"]
)
async def test_health_of_unreachable_server(url: str) -> None:
    db = Database(url, connect_timeout=2)
    try:
        ok, detail = await asyncio.wait_for(db.health(), 10)
    finally:
        await db.stop()
    assert not ok and "unreachable" in detail and "hunter2" not in detail


async def test_a_transient_instance_reads_and_writes_like_a_constructed_one(db: Database) -> None:
    await migrate(db)
    now = utcnow()
    made = transient(MetaEntry, {"key": "fast", "value": "1", "update_time": now})
    assert (made.key, made.value, made.update_time) == ("fast", "1", now)
    assert inspect(made).transient
    made.value = "2"  # instrumented setters work on it
    assert made.value == "2" and inspect(made).attrs.value.history.added == ["2"]
    async with db.session() as session:  # and it is a mapped instance like any other
        session.add(made)
    async with db.session() as session:
        assert (await session.get(MetaEntry, "fast")).value == "2"


async def test_a_reading_unit_of_work_sees_what_is_committed(db: Database) -> None:
    await migrate(db)
    async with db.session() as session:
        session.add(MetaEntry(key="read-me", value="1"))
    async with db.reading() as reader:
        assert await reader.scalar(select(MetaEntry.value).where(MetaEntry.key == "read-me")) == "1"
        async with db.session() as session:  # committed by another unit of work meanwhile
            (await session.get(MetaEntry, "read-me")).value = "2"
        again = (await reader.execute(select(MetaEntry.value).where(MetaEntry.key == "read-me"))).scalar()
        # MySQL's REPEATABLE READ keeps the first read's snapshot, in session() as here.
        assert again == ("1" if db.dialect == "mysql" else "2")


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_pool_recovers_after_server_drops_connections(
    request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    url = _url_for(request, dialect, tmp_path)
    db = Database(url, pool_size=1, ping_idle_seconds=0.1)
    await db.start()
    try:
        query = "SELECT pg_backend_pid()" if dialect == "postgresql" else "SELECT CONNECTION_ID()"
        backend = await _drop_pooled_connection(db, url, query)
        await asyncio.sleep(0.2)  # idle longer than ping_idle_seconds: pinged at checkout
        async with db.engine.connect() as conn:  # the ping notices and replaces the dead connection
            assert (await conn.execute(text(query))).scalar() != backend
    finally:
        await db.stop()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_a_busy_connection_is_not_pinged_and_a_dropped_one_fails_once(
    request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    """Within ping_idle_seconds of its last use a connection is handed out without a ping (no round trip on a busy
    pool); if the server dropped it meanwhile, that statement fails and the next unit of work gets a new one."""
    url = _url_for(request, dialect, tmp_path)
    db = Database(url, pool_size=1, ping_idle_seconds=60)
    await db.start()
    try:
        query = "SELECT pg_backend_pid()" if dialect == "postgresql" else "SELECT CONNECTION_ID()"
        backend = await _drop_pooled_connection(db, url, query)
        await asyncio.sleep(0.2)
        with pytest.raises(DBAPIError) as failed:
            async with db.engine.connect() as conn:
                await conn.execute(text(query))
        assert failed.value.connection_invalidated
        async with db.engine.connect() as conn:
            assert (await conn.execute(text(query))).scalar() != backend
    finally:
        await db.stop()


async def _drop_pooled_connection(db: Database, url: str, query: str) -> int:
    """Use the pool's one connection, then kill it on the server side, as a server restart would; its backend id."""
    async with db.engine.connect() as conn:
        backend = (await conn.execute(text(query))).scalar()
    if db.dialect == "postgresql":
        await pg_exec(url, f"SELECT pg_terminate_backend({backend})")
    else:
        await mysql_exec(url, f"KILL {backend}")
    return backend


# ----------------------------------------------------------------------------------------- migration lock


async def test_migrate_waits_for_the_lock_and_times_out(db: Database) -> None:
    """While another session holds the migration lock, migrate() waits (and gives up after lock_timeout)."""
    holder = await _hold_lock(db)
    try:
        with pytest.raises(TimeoutError):
            await migrate(db, lock_timeout=1)
        task = asyncio.create_task(migrate(db))
        await asyncio.sleep(0.5)
        assert not task.done()
        assert await schema_revisions(db) == ()
    finally:
        await holder()
    assert sorted(await asyncio.wait_for(task, 30)) == ALL_REVISIONS


async def _hold_lock(db: Database):
    """Take the migration lock the way another process would; returns the release coroutine function."""
    if db.dialect == "sqlite":
        fd = os.open(schema.sqlite_lock_path(db.sqlite_path), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)

        async def release() -> None:
            os.close(fd)

        return release
    other = Database(db.url, pool_size=1)
    conn = await other.engine.connect()
    if db.dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_lock(:k)").bindparams(k=schema.PG_LOCK_KEY))
    else:
        name = schema.mysql_lock_name(db.url.database)
        assert (await conn.execute(text("SELECT GET_LOCK(:n, 5)").bindparams(n=name))).scalar() == 1
    await conn.commit()

    async def release() -> None:
        await conn.close()  # session locks die with the session
        await other.stop()

    return release


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
async def test_concurrent_migrate_from_two_processes(
    request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    url = _url_for(request, dialect, tmp_path)
    if dialect == "sqlite":
        Path(make_url(url).database).parent.mkdir(parents=True)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert await asyncio.wait_for(p.stdout.readline(), 60) == b"ready\n"
        for p in procs:  # release both at once so they race for the lock
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()[-2000:]
    applied = sorted((sorted(json.loads(out.decode().strip().splitlines()[-1])) for out, _ in results), key=len)
    assert applied == [[], ALL_REVISIONS]  # one process applied everything, the other found it done

    db = Database(url)
    try:
        assert await schema_revisions(db) == head_revisions()
        async with db.session() as s:
            rows = (await s.execute(select(MetaEntry))).scalars().all()
        assert "schema_installed_at" in [r.key for r in rows]
    finally:
        await db.stop()
        await _reset(dialect, url)


def test_base_uses_portable_constraint_names() -> None:
    from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, UniqueConstraint
    from sqlalchemy.schema import CreateTable

    md = MetaData(naming_convention=Base.metadata.naming_convention)
    Table("parent", md, Column("id", Integer, primary_key=True))
    child = Table(
        "child",
        md,
        Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey("parent.id")),
        UniqueConstraint("parent_id"),
    )
    ddl = str(CreateTable(child))
    assert "CONSTRAINT pk_child" in ddl
    assert "CONSTRAINT uq_child_parent_id" in ddl
    assert "CONSTRAINT fk_child_parent_id_parent" in ddl


async def test_read_together_on_a_dropped_connection_reads_again_on_a_new_one(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL's direct reads (Database.read_together on asyncpg) are not pinged at checkout; a connection the
    server dropped between two turns (killed by pg_terminate_backend) is replaced unseen, pinged or not: the read
    finds it closed, invalidates the pool's connections and reads again on a new one."""
    url = _url_for(request, "postgresql", tmp_path)
    who = select(func.pg_backend_pid().label("pid"))
    for idle in (0.0, 60.0):
        db = Database(url, pool_size=1, ping_idle_seconds=idle)
        await db.start()
        try:
            backend = await _drop_pooled_connection(db, url, "SELECT pg_backend_pid()")
            await asyncio.sleep(0.2)
            [[row]] = await db.read_together([(who, {})])
            assert row.pid != backend
            [[again]] = await db.read_together([(who, {})])  # and the new connection is the pool's now
            assert again.pid == row.pid
            assert db.engine.sync_engine.pool.checkedout() == 0
        finally:
            await db.stop()


async def test_read_together_sends_only_its_reads_and_a_checkout_ping_is_one_statement(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round trips on PostgreSQL: a direct read's checkout sends no ping and no reset, only its SELECTs; any other
    checkout of a connection (pinged: ping_idle_seconds is 0) pings with one statement, with no BEGIN and
    ROLLBACK around it."""
    import asyncpg

    sent: list[str] = []
    for method in ("execute", "fetch", "fetchrow", "fetchval", "prepare"):
        real = getattr(asyncpg.Connection, method)

        def counted(self, query, *args, _real=real, _method=method, **kwargs):
            sent.append(f"{_method} {query.split()[0] if query.split() else query}")
            return _real(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, method, counted)
    url = _url_for(request, "postgresql", tmp_path)
    db = Database(url, pool_size=1)
    await db.start()
    try:
        who = select(func.pg_backend_pid().label("pid"))
        [[row]] = await db.read_together([(who, {})])  # the connection is pooled (and its statement prepared)
        sent.clear()
        await db.read_together([(who, {}), (select(literal(7).label("n")), {})])
        assert sent == ["fetch SELECT", "fetch SELECT"]
        sent.clear()
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar() == row.pid  # not replaced
        assert sent[0] == "execute SELECT" and sent[1].startswith("execute BEGIN")
        assert db.engine.sync_engine.pool.checkedout() == 0
    finally:
        await db.stop()


async def test_a_cancelled_read_together_leaves_the_pool_whole(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A direct read cancelled mid-statement (a caller gone) does not hand its connection back busy."""
    url = _url_for(request, "postgresql", tmp_path)
    db = Database(url, pool_size=1)
    await db.start()
    try:
        slow = asyncio.create_task(db.read_together([(select(func.pg_sleep(5).label("s")), {})]))
        await asyncio.sleep(0.3)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert db.engine.sync_engine.pool.checkedout() == 0
        [[row]] = await db.read_together([(select(func.pg_backend_pid().label("pid")), {})])
        assert row.pid > 0
    finally:
        await db.stop()
