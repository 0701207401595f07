"""SQL tables of the knowledge domain: bases, files, chunks and the keyword (BM25) inverted index.

Vectors live in Milvus (one collection per base), original files in object storage, ingestion jobs in the generic
`jobs` table (server/infra/queue.py, imported here so the schema tooling sees it).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from typecase.server.infra.queue import JobRow  # noqa: F401  (the jobs table ships with 0002_knowledge)
from typecase.server.infra.sql import Base, JSONType, id_column, utcnow

# MySQL's TEXT and BLOB stop at 64 KiB; chunks and postings of large files can be bigger.
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


class Postings(TypeDecorator[bytes]):
    """Packed postings: binary everywhere, LONGBLOB on MySQL, where the value travels base64-encoded because
    aiomysql 0.3 cannot bind bytes with PyMySQL >= 1.2 (its escape_bytes_prefixed import is a poisoned string)."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(mysql.LONGBLOB() if dialect.name == "mysql" else LargeBinary())

    def bind_processor(self, dialect):
        if dialect.name == "mysql":
            return lambda value: None if value is None else base64.b64encode(value).decode("ascii")
        return super().bind_processor(dialect)

    def result_processor(self, dialect, coltype):
        if dialect.name == "mysql":
            return lambda value: None if value is None else base64.b64decode(value)
        return super().result_processor(dialect, coltype)


# Terms compare byte-exact: MySQL's default collations fold case and accents ("résumé" = "resume").
TermString = String(64).with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")

KIND_DOCUMENTS, KIND_QA = "documents", "qa"
FORMAT_QA_PAIRS = "qa"  # the per-base file holding hand-written pairs: no original, never parsed

STATUS_QUEUED, STATUS_PARSING, STATUS_EMBEDDING, STATUS_INDEXING, STATUS_DONE, STATUS_FAILED = (
    "queued",
    "parsing",
    "embedding",
    "indexing",
    "done",
    "failed",
)


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_knowledge_bases_owner_id_name"),)

    id: Mapped[str] = id_column()
    owner_id: Mapped[str] = mapped_column(String(26), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    embedding_model_id: Mapped[str] = mapped_column(String(64), default="")
    embedding_dimensions: Mapped[int] = mapped_column(Integer, default=0)
    chunking_rule: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Bumped when the embedding model changes: the Milvus collection is per (base, generation).
    vector_generation: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(16), default="documents", server_default="documents")  # KIND_*
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class KnowledgeFileRow(Base):
    __tablename__ = "knowledge_files"
    __table_args__ = (
        # NULL dedup_key (duplicates allowed on purpose) never collides; an md5 collides within a base.
        UniqueConstraint("kb_id", "dedup_key", name="uq_knowledge_files_kb_id_dedup_key"),
        Index("ix_knowledge_files_kb_id_md5", "kb_id", "md5"),
    )

    id: Mapped[str] = id_column()
    kb_id: Mapped[str] = mapped_column(String(26), ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(String(26))
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(128), default="")
    object_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    md5: Mapped[str] = mapped_column(String(32), default="")
    dedup_key: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    term_total: Mapped[int] = mapped_column(BigInteger, default=0)  # sum of chunk lengths in terms (BM25 avgdl)
    page_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    chunking_rule: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    user_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    # Bumped by every (re)processing request; a worker's writes to this row are fenced on it.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
    process_time: Mapped[datetime | None] = mapped_column()


class KnowledgeChunkRow(Base):
    __tablename__ = "knowledge_chunks"
    __table_args__ = (UniqueConstraint("file_id", "chunk_index", name="uq_knowledge_chunks_file_id_chunk_index"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "<file id>-<index>": deterministic
    kb_id: Mapped[str] = mapped_column(String(26), index=True)
    file_id: Mapped[str] = mapped_column(String(26), ForeignKey("knowledge_files.id", ondelete="CASCADE"))
    chunk_index: Mapped[int] = mapped_column(Integer)
    page: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(LongText)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    # Character offsets in the file's extracted text; 0/0 for chunks added by hand (or indexed before offsets).
    start_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    end_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    edited: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Added by hand (AddChunk; also edited): kept after the file's parsed chunks when it is reprocessed (hand_edits.py).
    added: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Question-answer bases: `text` holds the questions (one a line: embedded and keyword-indexed), this the answer.
    answer: Mapped[str | None] = mapped_column(LongText)


class KnowledgeTermRow(Base):
    """Keyword postings: chunks of one block of one file containing a term, packed (chunk_index, tf, doc_len)."""

    __tablename__ = "knowledge_terms"
    __table_args__ = (Index("ix_knowledge_terms_kb_id_term", "kb_id", "term"),)

    file_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("knowledge_files.id", ondelete="CASCADE"), primary_key=True
    )
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    term: Mapped[str] = mapped_column(TermString, primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(26))
    postings: Mapped[bytes] = mapped_column(Postings())


def chunk_id(file_id: str, index: int) -> str:
    return f"{file_id}-{index}"
