"""knowledge: knowledge bases, files, chunks, keyword postings, and the generic background-jobs table

Revision ID: 0002_knowledge
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from typecase.server.infra import sql

revision = "0002_knowledge"
down_revision = "0001_foundation"
branch_labels = ("knowledge",)
depends_on = None

LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")
LongBlob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql")
TermString = sa.String(64).with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("payload", sql.JSONType, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expire_time", sql.UTCDateTime(), nullable=True),
        sa.Column("available_time", sql.UTCDateTime(), nullable=False),
        sa.Column("kick_time", sql.UTCDateTime(), nullable=True),
        sa.Column("error", sql.JSONType, nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.Column("finish_time", sql.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("key", name=op.f("uq_jobs_key")),
    )
    op.create_index(op.f("ix_jobs_kind"), "jobs", ["kind"])
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"])
    op.create_index(op.f("ix_jobs_available_time"), "jobs", ["available_time"])

    op.create_table(
        "knowledge_bases",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("embedding_model_id", sa.String(64), nullable=False),
        sa.Column("embedding_dimensions", sa.Integer(), nullable=False),
        sa.Column("chunking_rule", sql.JSONType, nullable=False),
        sa.Column("vector_generation", sa.Integer(), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_bases")),
        sa.UniqueConstraint("owner_id", "name", name="uq_knowledge_bases_owner_id_name"),
    )
    op.create_index(op.f("ix_knowledge_bases_owner_id"), "knowledge_bases", ["owner_id"])
    op.create_index(op.f("ix_knowledge_bases_update_time"), "knowledge_bases", ["update_time"])

    op.create_table(
        "knowledge_files",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("kb_id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("mime_type", sa.String(128), nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("term_total", sa.BigInteger(), nullable=False),
        sa.Column("page_count", sa.Integer(), nullable=False),
        sa.Column("error", sql.JSONType, nullable=True),
        sa.Column("chunking_rule", sql.JSONType, nullable=False),
        sa.Column("tags", sql.JSONType, nullable=False),
        sa.Column("metadata", sql.JSONType, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.Column("process_time", sql.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["kb_id"], ["knowledge_bases.id"], name=op.f("fk_knowledge_files_kb_id_knowledge_bases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_files")),
        sa.UniqueConstraint("kb_id", "dedup_key", name="uq_knowledge_files_kb_id_dedup_key"),
    )
    op.create_index(op.f("ix_knowledge_files_kb_id"), "knowledge_files", ["kb_id"])
    op.create_index(op.f("ix_knowledge_files_status"), "knowledge_files", ["status"])
    op.create_index("ix_knowledge_files_kb_id_md5", "knowledge_files", ["kb_id", "md5"])

    op.create_table(
        "knowledge_chunks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kb_id", sa.String(26), nullable=False),
        sa.Column("file_id", sa.String(26), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("text", LongText, nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["knowledge_files.id"],
            name=op.f("fk_knowledge_chunks_file_id_knowledge_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_chunks")),
        sa.UniqueConstraint("file_id", "chunk_index", name="uq_knowledge_chunks_file_id_chunk_index"),
    )
    op.create_index(op.f("ix_knowledge_chunks_kb_id"), "knowledge_chunks", ["kb_id"])

    op.create_table(
        "knowledge_terms",
        sa.Column("file_id", sa.String(26), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("term", TermString, nullable=False),
        sa.Column("kb_id", sa.String(26), nullable=False),
        sa.Column("postings", LongBlob, nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["knowledge_files.id"],
            name=op.f("fk_knowledge_terms_file_id_knowledge_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "block", "term", name=op.f("pk_knowledge_terms")),
    )
    op.create_index("ix_knowledge_terms_kb_id_term", "knowledge_terms", ["kb_id", "term"])


def downgrade() -> None:
    op.drop_table("knowledge_terms")
    op.drop_table("knowledge_chunks")
    op.drop_table("knowledge_files")
    op.drop_table("knowledge_bases")
    op.drop_table("jobs")
