"""auth: invite codes for self-registration, the failed-login streak behind the optional account lockout, and
single sign-on accounts (issuer|subject, the last groups claim)

Revision ID: 0004_auth_registration
Revises: 0003_auth_hardening
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision = "0004_auth_registration"
down_revision = "0003_auth_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("failed_login_count", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("users", sa.Column("locked_until", sql.UTCDateTime(), nullable=True))
    op.add_column("users", sa.Column("external_subject", sa.String(512), nullable=True))
    op.add_column("users", sa.Column("external_groups", sql.JSONType, nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.create_unique_constraint(op.f("uq_users_external_subject"), ["external_subject"])
    op.create_table(
        "invite_codes",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("note", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("expire_time", sql.UTCDateTime(), nullable=False),
        sa.Column("creator_id", sa.String(26), nullable=True),
        sa.Column("revoke_time", sql.UTCDateTime(), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["creator_id"], ["users.id"], name=op.f("fk_invite_codes_creator_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite_codes")),
        sa.UniqueConstraint("code_sha256", name=op.f("uq_invite_codes_code_sha256")),
    )


def downgrade() -> None:
    op.drop_table("invite_codes")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_external_subject"), type_="unique")
    op.drop_column("users", "external_groups")
    op.drop_column("users", "external_subject")
    op.drop_column("users", "locked_until")
    op.drop_column("users", "failed_login_count")
