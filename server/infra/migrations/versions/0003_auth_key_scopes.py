"""auth: API-key scopes ("api", "proxy"; space-separated), existing keys keep the API

Revision ID: 0003_auth_key_scopes
Revises: 0002_auth
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_auth_key_scopes"
down_revision: str | Sequence[str] | None = "0002_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scopes", sa.String(64), nullable=False, server_default="api"))


def downgrade() -> None:
    op.drop_column("api_keys", "scopes")
