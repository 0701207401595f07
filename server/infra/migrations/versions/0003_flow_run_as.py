"""flow: whose rights runs search knowledge bases with (run_as: caller | owner)

Revision ID: 0003_flow_run_as
Revises: 0002_flow
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_flow_run_as"
down_revision: str | Sequence[str] | None = "0002_flow"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing flows become "caller" too: searching the owner's bases for anyone is now an explicit choice.
    op.add_column("flows", sa.Column("run_as", sa.String(16), nullable=False, server_default="caller"))
    op.add_column("flow_runs", sa.Column("run_as", sa.String(16), nullable=False, server_default="caller"))


def downgrade() -> None:
    op.drop_column("flow_runs", "run_as")
    op.drop_column("flows", "run_as")
