"""chat: sessions with an assistant (its id and the values of its instruction variables)

Revision ID: 0004_chat_assistant
Revises: 0003_chat_takeover
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0004_chat_assistant"
down_revision: str | Sequence[str] | None = "0003_chat_takeover"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chat_sessions", sa.Column("assistant_id", sa.String(26), nullable=False, server_default=""))
    op.add_column("chat_sessions", sa.Column("variables", sql.JSONType, nullable=True))


def downgrade() -> None:
    op.drop_column("chat_sessions", "variables")
    op.drop_column("chat_sessions", "assistant_id")
