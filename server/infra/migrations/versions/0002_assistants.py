"""assistants: tool-using assistants

Revision ID: 0002_assistants
Revises: 0001_foundation
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0002_assistants"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = ("assistants",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "assistants",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("spec", sql.JSONType, nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assistants")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_assistants_owner_id")),
    )
    op.create_index(op.f("ix_assistants_owner_id"), "assistants", ["owner_id"])
    op.create_index(op.f("ix_assistants_status"), "assistants", ["status"])


def downgrade() -> None:
    op.drop_table("assistants")
