"""llm: providers, models and default models

Revision ID: 0002_llm
Revises: 0001_foundation
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0002_llm"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = ("llm",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_providers",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("base_url", sa.String(1024), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("api_key_hint", sa.String(64), nullable=False),
        sa.Column("extra_headers", sql.JSONType, nullable=False),
        sa.Column("connect_timeout_ms", sa.Integer(), nullable=True),
        sa.Column("first_token_timeout_ms", sa.Integer(), nullable=True),
        sa.Column("idle_timeout_ms", sa.Integer(), nullable=True),
        sa.Column("max_retries", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config", sql.JSONType, nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_providers")),
        sa.UniqueConstraint("name", name=op.f("uq_llm_providers_name")),
    )
    op.create_table(
        "llm_models",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("provider_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("upstream_name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("context_length", sa.Integer(), nullable=False),
        sa.Column("max_output_tokens", sa.Integer(), nullable=False),
        sa.Column("embedding_dimensions", sa.Integer(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("tokens_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("fallback_model_ids", sql.JSONType, nullable=False),
        sa.Column("config", sql.JSONType, nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["llm_providers.id"], name=op.f("fk_llm_models_provider_id_llm_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_models")),
        sa.UniqueConstraint("name", name=op.f("uq_llm_models_name")),
    )
    op.create_index(op.f("ix_llm_models_provider_id"), "llm_models", ["provider_id"])
    op.create_table(
        "llm_defaults",
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(26), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("purpose", name=op.f("pk_llm_defaults")),
    )


def downgrade() -> None:
    op.drop_table("llm_defaults")
    op.drop_table("llm_models")  # drops its index too (MySQL refuses to drop an index a foreign key needs)
    op.drop_table("llm_providers")
