"""chat: a session's retrieval settings (top_k, threshold, mode, vector weight, query rewriting)

Revision ID: 0005_chat_retrieval
Revises: 0004_chat_assistant
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0005_chat_retrieval"
down_revision: str | Sequence[str] | None = "0004_chat_assistant"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # RetrievalSettings as proto JSON; null (every session before this revision) means the server's defaults.
    op.add_column("chat_sessions", sa.Column("retrieval", sql.JSONType, nullable=True))


def downgrade() -> None:
    op.drop_column("chat_sessions", "retrieval")
