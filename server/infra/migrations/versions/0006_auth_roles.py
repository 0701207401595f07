"""auth: custom roles (a subset of the fixed permissions, auth/permissions.py); users.role and invite_codes.role
widened to hold a custom role's name; accounts that were "user" (today's rights: create knowledge bases, flows,
assistants, tool providers) become "builder", the built-in role with those rights, since the built-in "user" now
only chats, uses what is shared with it and keeps its own knowledge bases.

Revision ID: 0006_auth_roles
Revises: 0005_auth_groups
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision = "0006_auth_roles"
down_revision = "0005_auth_groups"
branch_labels = None
depends_on = None


def _widen(length: int) -> None:
    # Batch mode: an ALTER where the database has one, a copied table on SQLite.
    for table in ("users", "invite_codes"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "role",
                type_=sa.String(length),
                existing_type=sa.String(16 if length == 64 else 64),
                existing_nullable=False,
            )


def upgrade() -> None:
    op.create_table(
        "roles",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("permissions", sql.JSONType, nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_roles")),
    )
    _widen(64)
    for table in ("users", "invite_codes"):
        op.execute(sa.text(f"UPDATE {table} SET role = 'builder' WHERE role = 'user'"))


def downgrade() -> None:
    # Custom and new built-in roles fold back into the two roles that existed before.
    for table in ("users", "invite_codes"):
        op.execute(sa.text(f"UPDATE {table} SET role = 'user' WHERE role <> 'admin'"))
    _widen(16)
    op.drop_table("roles")
