"""llm: a model's access setting (everyone | restricted)

Revision ID: 0004_llm_model_access
Revises: 0003_llm_header_secrets
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_llm_model_access"
down_revision: str | Sequence[str] | None = "0003_llm_header_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing models stay open to every user, as before.
    op.add_column("llm_models", sa.Column("access", sa.String(16), nullable=False, server_default="everyone"))


def downgrade() -> None:
    op.drop_column("llm_models", "access")
