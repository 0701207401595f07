"""knowledge: question-answer knowledge bases (a base's kind; a chunk of a QA base carries its pair's answer)

Revision ID: 0004_knowledge_qa
Revises: 0003_knowledge_chunk_curation
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004_knowledge_qa"
down_revision: str | Sequence[str] | None = "0003_knowledge_chunk_curation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("knowledge_bases", sa.Column("kind", sa.String(16), nullable=False, server_default="documents"))
    # The text of a QA chunk is its questions (what is embedded and keyword-indexed); the answer is the hit.
    op.add_column("knowledge_chunks", sa.Column("answer", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")))


def downgrade() -> None:
    op.drop_column("knowledge_chunks", "answer")
    op.drop_column("knowledge_bases", "kind")
