"""foundation: the typecase_meta table for install facts

Revision ID: 0001_foundation
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0001_foundation"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    meta = op.create_table(
        "typecase_meta",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_typecase_meta")),
    )
    now = sql.utcnow()
    op.bulk_insert(meta, [{"key": "schema_installed_at", "value": now.isoformat(), "update_time": now}])


def downgrade() -> None:
    op.drop_table("typecase_meta")
