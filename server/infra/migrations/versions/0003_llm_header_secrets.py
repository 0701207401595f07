"""llm: provider extra headers sealed like API keys

Revision ID: 0003_llm_header_secrets
Revises: 0003_llm_capabilities
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_llm_header_secrets"
down_revision: str | Sequence[str] | None = "0003_llm_capabilities"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Fernet token of the headers; `extra_headers` keeps their names with masked values. Rows stored before this
    # revision hold plaintext values there: the registry seals them at start (the key is not known here).
    op.add_column("llm_providers", sa.Column("extra_headers_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("llm_providers", "extra_headers_encrypted")
