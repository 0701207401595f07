"""knowledge: chunks added by hand are marked, so that reprocessing a file keeps them after its parsed chunks

Revision ID: 0005_knowledge_edits
Revises: 0004_knowledge_qa
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_knowledge_edits"
down_revision: str | Sequence[str] | None = "0004_knowledge_qa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("knowledge_chunks", sa.Column("added", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Before this revision an added chunk was an edited one without offsets into the text (AddChunk wrote 0/0).
    chunks = sa.table(
        "knowledge_chunks",
        sa.column("added", sa.Boolean()),
        sa.column("edited", sa.Boolean()),
        sa.column("start_offset", sa.BigInteger()),
        sa.column("end_offset", sa.BigInteger()),
        sa.column("answer", sa.Text()),
    )
    op.execute(
        chunks.update()
        .where(chunks.c.edited.is_(sa.true()), chunks.c.end_offset == 0, chunks.c.answer.is_(None))
        .values(added=sa.true())
    )


def downgrade() -> None:
    op.drop_column("knowledge_chunks", "added")
