"""Schema migrations: alembic upgrades serialised across processes by a database-side (or file) lock.

Several replicas may run `typecase migrate` at once on deploy; exactly one applies each revision and the
others wait for it, then find the schema current.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from .sql import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Constant key for pg_advisory_lock: "typecase" in ASCII read as a bigint.
PG_LOCK_KEY = 0x7479706563617365
MYSQL_LOCK_PREFIX = "typecase_migrate"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revisions() -> tuple[str, ...]:
    """The newest revision of every branch shipped with this code (domains keep their own branches)."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


# Modules outside the `<domain>/models.py` convention that declare tables.
EXTRA_MODEL_MODULES = ("typecase.server.infra.audit", "typecase.server.infra.sharing")


def import_models() -> None:
    """Import every module declaring tables, so Base.metadata holds the full schema (for autogenerate)."""
    import typecase.server as server_pkg

    found = [p for root in server_pkg.__path__ for p in Path(root).glob("*/models.py")]
    names = [f"typecase.server.{p.parent.name}.models" for p in found]
    for name in sorted(names) + list(EXTRA_MODEL_MODULES):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing optional module is fine; a broken import inside one is not
                raise


def _current(sync_conn) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(sync_conn).get_current_heads()))


async def schema_revisions(db: Database) -> tuple[str, ...]:
    """The revisions the database is at, one per branch (empty when never migrated)."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def migrate(db: Database, *, lock_timeout: float = 300) -> list[str]:
    """Upgrade every branch to its head; returns the revisions this call applied (empty when already current)."""
    if (path := db.sqlite_path) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config()
    applied: list[str] = []
    async with _migration_lock(db, lock_timeout) as conn:
        await conn.run_sync(_upgrade, cfg, applied)
        await conn.commit()
        current = await conn.run_sync(_current)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    else:
        log.info("schema up to date at %s", ", ".join(current))
    return applied


def _upgrade(sync_conn, cfg: Config, applied: list[str]) -> None:
    from alembic import command

    cfg.attributes["connection"] = sync_conn
    cfg.attributes["applied"] = applied
    command.upgrade(cfg, "heads")


@asynccontextmanager
async def _migration_lock(db: Database, timeout: float) -> AsyncIterator[AsyncConnection]:
    """Yield a connection while holding the cross-process migration lock for this database."""
    if db.dialect == "sqlite":
        async with _sqlite_lock(db, timeout):
            async with db.engine.connect() as conn:
                yield conn
        return
    async with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            await _pg_lock(conn, timeout)
            release = text("SELECT pg_advisory_unlock(:k)").bindparams(k=PG_LOCK_KEY)
        else:
            name = await _mysql_lock(conn, timeout)
            release = text("SELECT RELEASE_LOCK(:n)").bindparams(n=name)
        try:
            yield conn
        finally:
            await _release(conn, release)


def mysql_lock_name(database: str | None) -> str:
    # GET_LOCK names are server-wide; scoping by database keeps unrelated schemas from waiting on each other.
    return f"{MYSQL_LOCK_PREFIX}:{database or ''}"[:64]


def sqlite_lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".migrate.lock")


async def _pg_lock(conn: AsyncConnection, timeout: float) -> None:
    # Session-level advisory lock: it outlives the transaction that took it, until unlock or disconnect.
    # SET LOCAL bounds the wait and reverts at commit.
    await conn.execute(text(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'"))
    try:
        await conn.execute(text("SELECT pg_advisory_lock(:k)").bindparams(k=PG_LOCK_KEY))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise TimeoutError(f"could not take the migration lock within {timeout}s") from exc
        raise
    await conn.commit()


async def _mysql_lock(conn: AsyncConnection, timeout: float) -> str:
    name = mysql_lock_name(conn.engine.url.database)
    got = (await conn.execute(text("SELECT GET_LOCK(:n, :t)").bindparams(n=name, t=int(timeout)))).scalar()
    await conn.commit()
    if got != 1:
        raise TimeoutError(f"could not take the migration lock {name!r} within {timeout}s")
    return name


async def _release(conn: AsyncConnection, release) -> None:
    try:
        await conn.rollback()  # a failed migration may leave the transaction aborted
        await conn.execute(release)
        await conn.commit()
    except Exception:
        # The lock dies with the session; drop the connection rather than return it to the pool holding it.
        log.warning("could not release the migration lock; discarding the connection", exc_info=True)
        await conn.invalidate()


@asynccontextmanager
async def _sqlite_lock(db: Database, timeout: float) -> AsyncIterator[None]:
    path = db.sqlite_path
    if path is None:  # in-memory: no other process can see this database
        yield
        return
    lock_path = sqlite_lock_path(path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:  # poll with LOCK_NB so waiting stays cancellable and never blocks the event loop
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"could not take the migration lock {lock_path} within {timeout}s") from None
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
