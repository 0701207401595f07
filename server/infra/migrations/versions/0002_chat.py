"""chat: sessions, messages and turns

Revision ID: 0002_chat
Revises: 0001_foundation
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from typecase.server.infra import sql

revision: str = "0002_chat"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = ("chat",)
depends_on: str | Sequence[str] | None = None

LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("model_id", sa.String(26), nullable=False),
        sa.Column("flow_id", sa.String(26), nullable=False),
        sa.Column("flow_version_id", sa.String(26), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("kb_ids", sql.JSONType, nullable=False),
        sa.Column("app_name", sa.String(255), nullable=False),
        sa.Column("latest_message_preview", sa.String(255), nullable=False),
        sa.Column("latest_message_time", sql.UTCDateTime(), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("like_count", sa.Integer(), nullable=False),
        sa.Column("dislike_count", sa.Integer(), nullable=False),
        sa.Column("copied_count", sa.Integer(), nullable=False),
        sa.Column("meta", sql.JSONType, nullable=False),
        sa.Column("active_turn_id", sa.String(26), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.Column("delete_time", sql.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_sessions")),
    )
    op.create_index("ix_chat_sessions_owner_update", "chat_sessions", ["owner_id", "update_time"])
    op.create_index("ix_chat_sessions_flow_id", "chat_sessions", ["flow_id"])
    op.create_index("ix_chat_sessions_model_id", "chat_sessions", ["model_id"])

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("session_id", sa.String(26), nullable=False),
        sa.Column("turn_id", sa.String(26), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("content", LongText, nullable=False),
        sa.Column("citations", sql.JSONType, nullable=False),
        sa.Column("attachments", sql.JSONType, nullable=False),
        sa.Column("steps", sql.JSONType, nullable=False),
        sa.Column("input_required", sql.JSONType, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sql.JSONType, nullable=True),
        sa.Column("finish_reason", sa.String(16), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(26), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("feedback_comment", sa.Text(), nullable=False),
        sa.Column("copied_count", sa.Integer(), nullable=False),
        sa.Column("meta", sql.JSONType, nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    op.create_index("ix_chat_messages_session_id_id", "chat_messages", ["session_id", "id"])
    op.create_index(op.f("ix_chat_messages_turn_id"), "chat_messages", ["turn_id"])

    op.create_table(
        "chat_turns",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("session_id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("question_message_id", sa.String(26), nullable=False),
        sa.Column("answer_message_id", sa.String(26), nullable=False),
        sa.Column("model_id", sa.String(26), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("context", sql.JSONType, nullable=False),
        sa.Column("replica", sa.String(128), nullable=False),
        sa.Column("lease_expire_time", sql.UTCDateTime(), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("end_time", sql.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_turns")),
        sa.UniqueConstraint("session_id", "request_id", name="uq_chat_turns_session_id_request_id"),
    )
    op.create_index(op.f("ix_chat_turns_session_id"), "chat_turns", ["session_id"])
    op.create_index("ix_chat_turns_status_lease", "chat_turns", ["status", "lease_expire_time"])


def downgrade() -> None:
    op.drop_table("chat_turns")
    op.drop_table("chat_messages")
    op.drop_table("chat_sessions")
