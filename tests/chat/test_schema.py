"""The chat migration (0002_chat) on SQLite, PostgreSQL and MariaDB: it creates exactly the tables models.py
declares, and the chat branch downgrades and upgrades again on its own."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from tests.infra.infra_support import MYSQL_ADMIN_URL, PG_ADMIN_URL, mysql_exec, pg_exec, unique
from typecase.server.chat import models  # noqa: F401  (registers the chat tables on Base.metadata)
from typecase.server.infra.schema import alembic_config, migrate
from typecase.server.infra.sql import Base, Database

CHAT_TABLES = {"chat_sessions", "chat_messages", "chat_turns"}


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
async def database(request, tmp_path):
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'chat.db'}")
        yield db
        await db.stop()
        return
    name = unique("tc_chat")
    if request.param == "postgresql":
        await pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
        url = make_url(PG_ADMIN_URL).set(database=name)
    else:
        await mysql_exec(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url = make_url(MYSQL_ADMIN_URL).set(database=name)
    db = Database(url)
    try:
        yield db
    finally:
        await db.stop()
        if request.param == "postgresql":
            await pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await mysql_exec(MYSQL_ADMIN_URL, f"DROP DATABASE IF EXISTS `{name}`")


def _chat_diff(sync_conn) -> list:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})

    def chat_only(obj, name, type_, reflected, compare_to) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return (name if type_ == "table" else getattr(table, "name", "")) in CHAT_TABLES

    context.opts["include_object"] = chat_only
    return compare_metadata(context, Base.metadata)


def _tables(sync_conn) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


async def test_migration_matches_the_models_and_the_branch_round_trips(database):
    await migrate(database)
    async with database.engine.connect() as conn:
        assert CHAT_TABLES <= await conn.run_sync(_tables)
        assert await conn.run_sync(_chat_diff) == []

    cfg = alembic_config()
    async with database.engine.begin() as conn:
        def downgrade(sync_conn):
            cfg.attributes["connection"] = sync_conn
            command.downgrade(cfg, "chat@-1")

        await conn.run_sync(downgrade)
    async with database.engine.connect() as conn:
        left = await conn.run_sync(_tables)
        assert not CHAT_TABLES & left and {"typecase_meta", "llm_models"} <= left  # only the chat branch went
    await migrate(database)
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_chat_diff) == []
