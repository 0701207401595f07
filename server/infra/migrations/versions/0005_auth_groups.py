"""auth: groups and their members (group admins), sharing grants (infra/sharing.py: read by every domain), and
API keys restricted to named resources and actions with their own rate

Revision ID: 0005_auth_groups
Revises: 0004_auth_registration
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision = "0005_auth_groups"
down_revision = "0004_auth_registration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("resources", sql.JSONType, nullable=True))
    op.add_column("api_keys", sa.Column("actions", sa.String(64), nullable=False, server_default=""))
    op.add_column("api_keys", sa.Column("rate_limit", sa.String(32), nullable=False, server_default=""))
    op.create_table(
        "user_groups",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("name_lower", sa.String(128), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_groups")),
        sa.UniqueConstraint("name_lower", name=op.f("uq_user_groups_name_lower")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("group_admin", sa.Boolean(), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["user_groups.id"], name=op.f("fk_group_members_group_id_user_groups"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_user_id"), "group_members", ["user_id"])
    op.create_table(
        "resource_grants",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("grantee_type", sa.String(8), nullable=False),
        sa.Column("grantee_id", sa.String(26), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("creator_id", sa.String(26), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_grants")),
        sa.UniqueConstraint("resource_type", "resource_id", "grantee_type", "grantee_id", name="uq_resource_grants"),
    )
    op.create_index(
        "ix_resource_grants_grantee",
        "resource_grants",
        ["grantee_type", "grantee_id", "resource_type", "level", "resource_id"],
    )


def downgrade() -> None:
    # Dropping a table drops its indexes (MySQL refuses to drop an index a foreign key needs on its own).
    op.drop_table("resource_grants")
    op.drop_table("group_members")
    op.drop_table("user_groups")
    op.drop_column("api_keys", "rate_limit")
    op.drop_column("api_keys", "actions")
    op.drop_column("api_keys", "resources")
