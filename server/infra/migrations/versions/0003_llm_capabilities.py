"""llm: per-model capability overrides (tools, vision, json_schema, reasoning)

Revision ID: 0003_llm_capabilities
Revises: 0002_llm
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0003_llm_capabilities"
down_revision: str | Sequence[str] | None = "0002_llm"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Only what an admin set; null or {} means "the provider type's defaults".
    op.add_column("llm_models", sa.Column("capabilities", sql.JSONType, nullable=True))


def downgrade() -> None:
    op.drop_column("llm_models", "capabilities")
