"""SQL store: one async SQLAlchemy engine over SQLite (embedded), PostgreSQL or MySQL/MariaDB.

Domains declare their tables on `Base` (models.py) and get sessions from `Database.session()`; the schema is
owned by alembic (see schema.py), never by `create_all`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from greenlet import getcurrent  # type: ignore[import-untyped]
from sqlalchemy import JSON, DateTime, MetaData, Select, String, Text, event, exc, text
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import URL, CursorResult, Result, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_, greenlet_spawn
from ulid import ULID

from .compiled_select import Statements
from .sqlite_one_hop import Reader, use_one_hop
from .urls import error_detail

log = logging.getLogger(__name__)

# Async driver chosen for each bare scheme; an explicit "+driver" in the URL is kept as given.
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}
_DIALECTS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def normalize_url(url: str | URL) -> URL:
    """Map bare schemes to the async driver we ship (sqlite:// -> sqlite+aiosqlite:// ...)."""
    u = make_url(url) if isinstance(url, str) else url
    backend, _, driver = u.drivername.partition("+")
    if backend not in _DIALECTS:
        raise ValueError(f"unsupported database scheme {backend!r} (use sqlite, postgresql or mysql)")
    if not driver:
        u = u.set(drivername=_DRIVERS[backend])
    elif backend in ("postgres", "mariadb"):
        u = u.set(drivername=f"{_DIALECTS[backend]}+{driver}")
    if _DIALECTS[backend] == "mysql" and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})  # MySQL's "utf8" cannot store all of Unicode
    return u


def new_id() -> str:
    """A new resource id: a ULID string (26 chars, sortable by creation time)."""
    return str(ULID())


def affected(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (`session.execute` is typed as returning a plain Result, which has none)."""
    return result.rowcount


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what UTCDateTime columns store and return)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC on every backend and returned as aware UTC.

    PostgreSQL, MySQL and SQLite disagree on time zones; storing naive UTC everywhere is the only behaviour
    all three keep, and returning aware values makes protobuf Timestamp conversion unambiguous.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):  # MySQL DATETIME defaults to whole seconds
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON documents: JSONB on PostgreSQL (indexable, compact), native JSON elsewhere.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")

# Constraint names must be deterministic so migrations can drop/alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every domain's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        str: String(255),  # MySQL needs a VARCHAR length; use Text explicitly for long values
    }


ModelT = TypeVar("ModelT", bound=Base)


def transient(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """An instance of a mapped class holding `values`, made without its instrumented constructor (about 15 times
    cheaper: a chat turn start made two). For objects kept in memory only, never added to a session."""
    mapper = model.__mapper__
    if not mapper.configured:  # what the constructor would have done first (attribute setters need it)
        configure_mappers()
    instance = mapper.class_manager.new_instance()
    instance.__dict__.update(values)
    return instance


def id_column(**kw: Any) -> Mapped[str]:
    """Primary-key column holding a server-generated ULID."""
    return mapped_column(String(26), primary_key=True, default=new_id, **kw)


class MetaEntry(Base):
    """Install facts (schema install time, ...) kept by the platform itself; created by 0001_foundation."""

    __tablename__ = "typecase_meta"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    use_one_hop(dbapi_conn)  # a statement is one trip to aiosqlite's thread, not four (sqlite_one_hop.py)
    # WAL lets readers run beside one writer; busy_timeout makes writers wait instead of failing at once.
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable enough under WAL, much faster commits
    finally:
        cur.close()


def _note_checkin(_dbapi_connection, record) -> None:
    if record is not None:
        record.info["checkin_time"] = time.monotonic()


class Database:
    """The SQL store. `engine` and `session()` are usable right after construction; start() checks reachability."""

    def __init__(
        self,
        url: str | URL,
        *,
        pool_size: int = 20,
        echo: bool = False,
        connect_timeout: float = 10,
        ping_idle_seconds: float = 0.0,
    ):
        self.url = normalize_url(url)
        self.dialect: str = _DIALECTS[self.url.drivername.partition("+")[0]]
        self.name = f"sql/{self.dialect}"
        self.connect_timeout = connect_timeout
        self.ping_idle_seconds = ping_idle_seconds
        self.engine: AsyncEngine = create_async_engine(self.url, **self._engine_args(pool_size, echo))
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
        else:
            event.listen(self.engine.sync_engine.pool, "checkin", _note_checkin)
            event.listen(self.engine.sync_engine.pool, "checkout", self._ping_if_idle)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads without BEGIN and COMMIT on PostgreSQL (two round trips of the three a one-statement read paid;
        # asyncpg switches autocommit on the client side). Not on MySQL, where switching it is a round trip each
        # way, nor SQLite, which begins no transaction for a read anyway.
        autocommit = self.dialect == "postgresql"
        readers = self.engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else self.engine
        self._readers: async_sessionmaker[AsyncSession] = async_sessionmaker(readers, expire_on_commit=False)
        path = self.sqlite_path
        self._reader = None if path is None else Reader(path, self.engine.dialect, connect_timeout)
        direct = self.dialect == "postgresql" and self.url.drivername.endswith("+asyncpg")
        self._statements = Statements(self.engine.dialect) if direct else None
        # The greenlets checking out a connection for direct reads, which _ping_if_idle leaves unpinged.
        self._unpinged: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for file-backed SQLite, else None."""
        if self.dialect != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        return Path(self.url.database)

    def _engine_args(self, pool_size: int, echo: bool) -> dict[str, Any]:
        # No overflow: connections opened beyond pool_size were closed at checkin, so a burst of turns opened (and
        # set up, and prepared its statements on) a dozen new connections every time; the pool opens up to
        # pool_size lazily and keeps them.
        args: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            if self.sqlite_path is None:
                # One shared connection, otherwise every connection would see its own empty memory database.
                args.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                args.update(pool_size=pool_size, connect_args={"timeout": self.connect_timeout})
        elif self.dialect == "postgresql":
            args.update(pool_size=pool_size, max_overflow=0, pool_recycle=1800)
            if self.url.drivername.endswith("+asyncpg"):
                args["connect_args"] = {"timeout": self.connect_timeout}
        else:
            # MySQL closes idle connections after wait_timeout; recycle before that happens.
            args.update(pool_size=pool_size, max_overflow=0, pool_recycle=1800)
            if self.url.drivername.endswith("+aiomysql"):
                args["connect_args"] = {"connect_timeout": self.connect_timeout}
        return args

    def _ping_if_idle(self, dbapi_connection, record, _proxy) -> None:
        """Ping a connection that sat idle in the pool for over ping_idle_seconds before handing it out (a database
        server restart or an idle timeout drops idle connections); one in busy use skips the round trip (SQLAlchemy's
        pool_pre_ping paid it on every checkout: a third of a turn's statements). A busy connection that dropped fails
        its statement once, and SQLAlchemy then invalidates the pool's connections. A checkout for direct reads
        (`_read_on_asyncpg`) is never pinged: those reads are retried once on a new connection instead."""
        returned = record.info.get("checkin_time")
        if returned is None or time.monotonic() - returned <= self.ping_idle_seconds:
            return
        if getcurrent() in self._unpinged:
            return
        try:
            if self._statements is not None:
                # One round trip: a statement in the simple query protocol (no prepared statement, so as safe
                # behind pgbouncer's transaction mode as the asyncpg dialect's ping, which pays BEGIN and ROLLBACK
                # around its statement for that: three round trips). Not ";": asyncpg fails on an empty query.
                await_(dbapi_connection._connection.execute("SELECT 1"))
                alive = True
            else:
                alive = self.engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error
        if not alive:
            raise exc.DisconnectionError("idle connection failed its ping")

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    async def start(self) -> None:
        if (path := self.sqlite_path) is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The file holds password hashes and the token signing key: create it private (SQLite gives its -wal
            # and -shm files the database file's mode).
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        log.info("database connected: %s", self.display_url)

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        await self.engine.dispose()

    async def health(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True, f"{self.dialect} ok"
        except Exception as exc:  # health never raises
            return False, f"{self.dialect} unreachable: {error_detail(exc)}"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block exits cleanly, rolls back when it raises."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A unit of work for reads only. On PostgreSQL its statements run without a transaction around them, each
        seeing what was committed when it ran (as under session()'s READ COMMITTED); elsewhere it is session()
        without the commit."""
        async with self._readers() as session:
            yield session

    async def read_together(self, queries: list[tuple[Select[Any], dict[str, Any]]]) -> list[list[Any]]:
        """The rows of several SELECTs built once (module constants), each row with its columns as attributes and
        `_asdict()`, each statement seeing what was committed when it ran: on a SQLite file in one trip to a reader
        thread of their own (sqlite_one_hop.Reader); on PostgreSQL with asyncpg run directly on the driver connection
        of one pooled checkout (`_read_on_asyncpg`); elsewhere one statement after another in a reading() unit."""
        if self._reader is not None:
            return await self._reader.read(queries)
        if self._statements is not None:
            return await self._read_on_asyncpg(queries)
        async with self.reading() as session:
            return [list((await session.execute(statement, values)).all()) for statement, values in queries]

    async def _read_on_asyncpg(self, queries: list[tuple[Select[Any], dict[str, Any]]]) -> list[list[Any]]:
        """The SELECTs on the asyncpg connection of one pool checkout, outside a transaction (asyncpg's default, as
        reading() has it), without SQLAlchemy's session, Connection and result machinery; asyncpg prepares and
        caches each statement per connection.

        The checkout pays no ping (three round trips with the asyncpg dialect's, one with ours, against the reads'
        one or two) and no reset (no transaction was begun; the reset's rollback has nothing to do). A connection
        the server dropped is noticed by the first read instead: the pool's connections are invalidated as
        SQLAlchemy's execution does, and the reads run once more on a new connection (reads can be repeated). Other
        errors are raised as SQLAlchemy would raise them. Reaches into SQLAlchemy 2.1's asyncpg adapter
        (`_connection`, `_handle_exception`), which pyproject pins."""
        assert self._statements is not None
        prepared = [(self._statements.get(statement), values) for statement, values in queries]
        try:
            return await self._read_once(prepared)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            log.info("database connection found closed by a read; reading again on a new one")
        return await self._read_once(prepared)

    def _checkout_unpinged(self) -> Any:
        current = getcurrent()
        self._unpinged.add(current)
        try:
            return self.engine.sync_engine.raw_connection()
        finally:
            self._unpinged.discard(current)

    async def _read_once(self, prepared: list[tuple[Any, dict[str, Any]]]) -> list[list[Any]]:
        fairy = await greenlet_spawn(self._checkout_unpinged)
        adapted: Any = fairy.dbapi_connection  # sqlalchemy's AsyncAdapt_asyncpg_connection
        driver = adapted._connection  # the asyncpg.Connection
        raws = []
        sql, params = "", ()
        try:
            for compiled, values in prepared:
                sql, params = compiled.sql, compiled.parameters(values)
                raws.append(await driver.fetch(sql, *params))
        except BaseException as error:
            await greenlet_spawn(self._drop_after, fairy, adapted, sql, params, error)
            raise
        fairy.close()  # back to the pool: no transaction to end (its reset's rollback has nothing to do)
        return [compiled.rows(raw) for (compiled, _), raw in zip(prepared, raws, strict=True)]

    def _drop_after(self, fairy: Any, adapted: Any, sql: str, params: Any, error: BaseException) -> None:
        """Return the checkout after a failed read; raise an asyncpg error as SQLAlchemy's execution would."""
        if not isinstance(error, Exception):  # cancelled: the connection may be mid-statement (as SQLAlchemy does)
            adapted._connection.terminate()
            fairy.invalidate(error)
            return
        dialect = self.engine.dialect
        try:
            adapted._handle_exception(error)  # asyncpg's error as the adapter's DB-API error
        except Exception as translated:
            error = translated
        dbapi_error = dialect.loaded_dbapi.Error
        closed = isinstance(error, dbapi_error) and dialect.is_disconnect(cast(Any, error), adapted, None)
        if closed:
            self.engine.sync_engine.pool._invalidate(fairy, error)  # this connection, and those opened before it
        else:
            fairy.close()
        if isinstance(error, dbapi_error):
            raise DBAPIError.instance(
                sql, params, error, dbapi_error, connection_invalidated=closed, dialect=dialect
            ) from error


def create_database(database_url: str | None, data_dir: str | Path, **kw: Any) -> Database:
    """The configured database, or the embedded SQLite file under data_dir when no URL is set."""
    if not database_url:
        database_url = f"sqlite:///{Path(data_dir).resolve() / 'typecase.db'}"
    return Database(database_url, **kw)


def rows_matched(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE run through a Session matched: Session.execute is typed as returning a Result, and
    for these statements the object is a CursorResult, which has the count."""
    return cast(CursorResult[Any], result).rowcount
