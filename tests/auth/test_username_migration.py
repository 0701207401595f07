"""0003_auth_hardening on SQLite, PostgreSQL and MariaDB: usernames become unique in any letter case, existing
users are found by either case, and names that already clash stop the upgrade with a message naming them."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from typecase.server.auth.models import UserRow
from typecase.server.infra.schema import alembic_config, migrate

INSERT_USER = text(
    "INSERT INTO users (id, username, display_name, role, disabled, create_time, update_time) "
    "VALUES (:id, :name, '', 'user', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


async def upgrade_to(db, revision: str) -> None:
    async with db.engine.begin() as conn:

        def run(sync_conn) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        await conn.run_sync(run)


async def add_users_the_old_way(db, *names: str) -> None:
    async with db.engine.begin() as conn:
        for i, name in enumerate(names):
            await conn.execute(INSERT_USER, {"id": f"01OLDUSER{i:017d}", "name": name})


async def test_existing_users_are_folded_and_new_case_twins_are_refused(fresh_database):
    await upgrade_to(fresh_database, "0002_auth")
    await add_users_the_old_way(fresh_database, "Carol", "dave")
    await migrate(fresh_database)
    async with fresh_database.session() as session:
        carol = (await session.scalars(select(UserRow).where(UserRow.username_lower == "carol"))).one()
        assert carol.username == "Carol"
    for twin in ("carol", "DAVE"):
        with pytest.raises(IntegrityError):
            async with fresh_database.session() as session:
                session.add(UserRow(username=twin))


async def test_usernames_that_already_clash_stop_the_upgrade_by_name(fresh_database):
    if fresh_database.dialect == "mysql":
        pytest.skip("MariaDB's default collation (utf8mb4_general_ci) never let 'Erin' and 'erin' both exist")
    await upgrade_to(fresh_database, "0002_auth")
    await add_users_the_old_way(fresh_database, "Erin", "erin", "frank")
    with pytest.raises(RuntimeError, match=r"differ only in case: Erin, erin\. Rename"):
        await migrate(fresh_database)
