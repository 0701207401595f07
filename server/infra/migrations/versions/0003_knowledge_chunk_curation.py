"""knowledge: chunks carry their character offsets in the extracted text and whether they were edited by hand

Revision ID: 0003_knowledge_chunk_curation
Revises: 0002_knowledge
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_knowledge_chunk_curation"
down_revision: str | Sequence[str] | None = "0002_knowledge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Chunks indexed before this revision get 0/0: their offsets are unknown until the file is reprocessed.
    op.add_column("knowledge_chunks", sa.Column("start_offset", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("knowledge_chunks", sa.Column("end_offset", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("knowledge_chunks", sa.Column("edited", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("knowledge_chunks", "edited")
    op.drop_column("knowledge_chunks", "end_offset")
    op.drop_column("knowledge_chunks", "start_offset")
