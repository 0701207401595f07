"""Rows to messages for the knowledge domain (like chat's and flow's convert.py): bases, files, chunks, rules,
stored errors; and the enum tables between stored names and proto values."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from typecase.server.knowledge.chunking import Rule
from typecase.server.knowledge.models import (
    KIND_DOCUMENTS,
    KIND_QA,
    STATUS_DONE,
    STATUS_EMBEDDING,
    STATUS_FAILED,
    STATUS_INDEXING,
    STATUS_PARSING,
    STATUS_QUEUED,
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
)
from typecase.server.knowledge.search import MODE_HYBRID, MODE_KEYWORD, MODE_VECTOR
from typecase.server.rpc.convert import to_timestamp
from typecase.v1 import knowledge_pb2 as pb

STATUS_TO_PROTO = {
    STATUS_QUEUED: pb.FILE_STATUS_QUEUED,
    STATUS_PARSING: pb.FILE_STATUS_PARSING,
    STATUS_EMBEDDING: pb.FILE_STATUS_EMBEDDING,
    STATUS_INDEXING: pb.FILE_STATUS_INDEXING,
    STATUS_DONE: pb.FILE_STATUS_DONE,
    STATUS_FAILED: pb.FILE_STATUS_FAILED,
}
PROTO_TO_STATUS = {v: k for k, v in STATUS_TO_PROTO.items()}
MODES = {
    pb.SEARCH_MODE_UNSPECIFIED: MODE_HYBRID,
    pb.SEARCH_MODE_HYBRID: MODE_HYBRID,
    pb.SEARCH_MODE_VECTOR: MODE_VECTOR,
    pb.SEARCH_MODE_KEYWORD: MODE_KEYWORD,
}
KIND_TO_PROTO = {KIND_DOCUMENTS: pb.KNOWLEDGE_BASE_KIND_DOCUMENTS, KIND_QA: pb.KNOWLEDGE_BASE_KIND_QA}
PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}


def rule_message(data: dict | None) -> pb.ChunkingRule:
    rule = Rule.from_dict(data)
    return pb.ChunkingRule(
        separators=list(rule.separators),
        separator_rule=pb.SEPARATOR_RULE_BEFORE if rule.separator_before else pb.SEPARATOR_RULE_AFTER,
        chunk_size=rule.chunk_size,
        chunk_overlap=rule.chunk_overlap,
        normalize_whitespace=rule.normalize_whitespace,
        remove_urls_emails=rule.remove_urls_emails,
    )


def error_status(error: dict | None) -> status_pb2.Status | None:
    if not error:
        return None
    info = error_details_pb2.ErrorInfo(
        reason=error.get("reason", "INTERNAL"),
        domain="typecase",
        metadata={k: str(v) for k, v in (error.get("metadata") or {}).items()},
    )
    status = status_pb2.Status(
        code=int(error.get("code", grpc.StatusCode.INTERNAL.value[0])), message=error.get("message", "")
    )
    status.details.add().Pack(info)
    return status


def struct_of(data: dict[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if data:
        s.update(data)
    return s


def file_message(row: KnowledgeFileRow) -> pb.KnowledgeFile:
    return pb.KnowledgeFile(
        id=row.id,
        kb_id=row.kb_id,
        owner_id=row.owner_id,
        name=row.name,
        size_bytes=row.size_bytes,
        md5=row.md5,
        mime_type=row.mime_type,
        status=STATUS_TO_PROTO.get(row.status, pb.FILE_STATUS_UNSPECIFIED),
        progress_percent=row.progress,
        chunk_count=row.chunk_count,
        error=error_status(row.error),
        chunking_rule=rule_message(row.chunking_rule),
        tags=list(row.tags or []),
        metadata=struct_of(row.user_metadata),
        page_count=row.page_count,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        process_time=to_timestamp(row.process_time),
    )


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def chunk_message(row: KnowledgeChunkRow, file_name: str) -> pb.Chunk:
    return pb.Chunk(
        id=row.id,
        kb_id=row.kb_id,
        file_id=row.file_id,
        index=row.chunk_index,
        text=row.text,
        page=row.page,
        start_offset=row.start_offset or 0,
        end_offset=row.end_offset or 0,
        token_count=row.token_count or 0,
        edited=bool(row.edited),
        added=bool(row.added),
        file_name=file_name,
    )


def kb_message(row: KnowledgeBaseRow, counts: tuple[int, int, int]) -> pb.KnowledgeBase:
    return pb.KnowledgeBase(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        description=row.description,
        embedding_model_id=row.embedding_model_id,
        chunking_rule=rule_message(row.chunking_rule),
        file_count=counts[0],
        chunk_count=counts[1],
        total_size_bytes=counts[2],
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        kind=KIND_TO_PROTO.get(row.kind, pb.KNOWLEDGE_BASE_KIND_DOCUMENTS),
    )
