"""tools: tool providers (built-in, OpenAPI, MCP) and their tools

Revision ID: 0002_tools
Revises: 0001_foundation
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0002_tools"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = ("tools",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tool_providers",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("config", sql.JSONType, nullable=False),
        sa.Column("secrets_encrypted", sa.Text(), nullable=True),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("refresh_time", sql.UTCDateTime(), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_providers")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_tool_providers_owner_id")),
    )
    op.create_index(op.f("ix_tool_providers_owner_id"), "tool_providers", ["owner_id"])
    op.create_table(
        "tool_tools",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("provider_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("parameters", sql.JSONType, nullable=False),
        sa.Column("binding", sql.JSONType, nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["tool_providers.id"],
            ondelete="CASCADE",
            name=op.f("fk_tool_tools_provider_id_tool_providers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_tools")),
        sa.UniqueConstraint("provider_id", "name", name=op.f("uq_tool_tools_provider_id")),
    )
    op.create_index(op.f("ix_tool_tools_provider_id"), "tool_tools", ["provider_id"])
    op.create_index(op.f("ix_tool_tools_category"), "tool_tools", ["category"])


def downgrade() -> None:
    op.drop_table("tool_tools")
    op.drop_table("tool_providers")
