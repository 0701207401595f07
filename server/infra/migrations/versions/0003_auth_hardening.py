"""auth: case-insensitive usernames, login sessions (refresh-token families)

Usernames become unique regardless of case through a lower-cased copy with a unique index: the one form that
works alike on SQLite, PostgreSQL and MariaDB (which has no expression indexes) and that a login lookup uses on all
three. Existing names that differ only in case stop the upgrade with a message naming them: merging or renaming
accounts is a decision for an administrator, not a migration.

Refresh tokens issued before this revision belong to no session and are refused: their users log in again.

Revision ID: 0003_auth_hardening
Revises: 0003_auth_key_scopes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision = "0003_auth_hardening"
down_revision = "0003_auth_key_scopes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("username_lower", sa.String(64), nullable=False, server_default=""))
    op.execute("UPDATE users SET username_lower = lower(username)")
    clashes = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT username FROM users WHERE username_lower IN "
                "(SELECT username_lower FROM users GROUP BY username_lower HAVING count(*) > 1) ORDER BY username"
            )
        )
        .scalars()
        .all()
    )
    if clashes:
        raise RuntimeError(
            "usernames must be unique regardless of case, and these differ only in case: "
            f"{', '.join(clashes)}. Rename all but one of each (UPDATE users SET username = ... WHERE id = ...), "
            "then migrate again."
        )
    op.create_index(op.f("ix_users_username_lower"), "users", ["username_lower"], unique=True)

    op.create_table(
        "login_sessions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("revoke_time", sql.UTCDateTime(), nullable=True),
        sa.Column("revoke_reason", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_login_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_sessions")),
    )
    op.create_index(op.f("ix_login_sessions_user_id"), "login_sessions", ["user_id"])
    op.add_column("refresh_tokens", sa.Column("session_id", sa.String(26), nullable=True))
    op.create_index(op.f("ix_refresh_tokens_session_id"), "refresh_tokens", ["session_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_refresh_tokens_session_id"), table_name="refresh_tokens")
    op.drop_column("refresh_tokens", "session_id")
    op.drop_table("login_sessions")
    op.drop_index(op.f("ix_users_username_lower"), table_name="users")
    op.drop_column("users", "username_lower")
