"""0006_auth_roles on SQLite, PostgreSQL and MariaDB: accounts that were "user" before roles existed become
"builder" (the built-in role with their old rights), admins stay admins, and a custom role's name longer than the
old 16-character column fits."""

from __future__ import annotations

from sqlalchemy import select, text

from tests.auth.test_username_migration import upgrade_to
from typecase.server.auth.models import RoleRow, UserRow
from typecase.server.infra.schema import migrate

INSERT_USER = text(
    "INSERT INTO users (id, username, username_lower, display_name, role, disabled, failed_login_count, "
    "create_time, update_time) VALUES (:id, :name, :name, '', :role, false, 0, CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP)"
)


async def test_old_users_become_builders_and_long_role_names_fit(fresh_database):
    await upgrade_to(fresh_database, "0005_auth_groups")
    async with fresh_database.engine.begin() as conn:
        for i, (name, role) in enumerate((("grace", "user"), ("heidi", "admin"))):
            await conn.execute(INSERT_USER, {"id": f"01OLDUSER{i:017d}", "name": name, "role": role})
    await migrate(fresh_database)
    async with fresh_database.session() as session:
        roles = dict((await session.execute(select(UserRow.username, UserRow.role))).all())
        assert roles == {"grace": "builder", "heidi": "admin"}
        session.add(RoleRow(name="knowledge-curators-emea", permissions=["knowledge.create"]))
        grace = (await session.scalars(select(UserRow).where(UserRow.username == "grace"))).one()
        grace.role = "knowledge-curators-emea"
        await session.commit()
    async with fresh_database.session() as session:
        assert (await session.scalars(select(UserRow.role).where(UserRow.username == "grace"))).one() == (
            "knowledge-curators-emea"
        )
