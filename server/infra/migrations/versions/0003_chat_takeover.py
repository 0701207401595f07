"""chat: what a replica needs to continue a turn whose replica died

Revision ID: 0003_chat_takeover
Revises: 0002_chat
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0003_chat_takeover"
down_revision: str | Sequence[str] | None = "0002_chat"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The GenerateRequest (proto JSON) the answer is generated from; null for flow turns, which the flow continues.
    op.add_column("chat_turns", sa.Column("request", sql.JSONType, nullable=True))
    op.add_column("chat_turns", sa.Column("takeovers", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("chat_turns", "takeovers")
    op.drop_column("chat_turns", "request")
