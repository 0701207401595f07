"""chat: the per-session scratch index of attached documents too large for the prompt

Revision ID: 0006_chat_scratch
Revises: 0005_chat_retrieval
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0006_chat_scratch"
down_revision: str | Sequence[str] | None = "0005_chat_retrieval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_scratch_chunks",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("session_id", sa.String(26), nullable=False),
        sa.Column("message_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("model_id", sa.String(26), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_scratch_chunks")),
    )
    op.create_index(op.f("ix_chat_scratch_chunks_session_id"), "chat_scratch_chunks", ["session_id"])
    op.create_index(op.f("ix_chat_scratch_chunks_message_id"), "chat_scratch_chunks", ["message_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_chat_scratch_chunks_message_id"), table_name="chat_scratch_chunks")
    op.drop_index(op.f("ix_chat_scratch_chunks_session_id"), table_name="chat_scratch_chunks")
    op.drop_table("chat_scratch_chunks")
