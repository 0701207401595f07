"""KnowledgeService: knowledge bases, their files (upload, add-text, reprocess, watch), chunk previews and search.

Ingestion runs as background jobs (server/infra/queue.py): in this process when knowledge_worker_in_process is set
(the embedded default), in `typecase worker` processes otherwise. The servicer only stores originals, writes rows
and enqueues; ingest.py does the work; search.py answers queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import unicodedata
import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from typecase.server.infra import sharing
from typecase.server.infra.queue import JobQueue
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.infra.storage import ObjectTooLarge
from typecase.server.knowledge import keyword, parsers
from typecase.server.knowledge.chunking import Rule, RuleError, Section, chunk_sections
from typecase.server.knowledge.curation import ChunkEditor
from typecase.server.knowledge.ingest import (
    JOB_KIND,
    Collections,
    Ingestor,
    IngestSettings,
    collection_name,
    file_channel,
    parse_failure,
)
from typecase.server.knowledge.model_window import Profiles
from typecase.server.knowledge.models import (
    FORMAT_QA_PAIRS,
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
    KnowledgeTermRow,
)
from typecase.server.knowledge.qa import QAPairs, wrong_kind
from typecase.server.knowledge.search import MODE_HYBRID, MODE_KEYWORD, MODE_VECTOR, Filter, Searcher
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.downloads import object_body
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.ports import Embedding
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

log = logging.getLogger("typecase.knowledge")

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
KB_FIELDS = {"name", "description", "chunking_rule", "embedding_model_id"}
QA_FORMATS = {"csv", "xlsx"}  # tables of question-answer pairs (parsers/qa.py)
TEXT_FORMATS = {"txt", "md", "html", "csv", "json"}
MAX_NAME_CHARS = 255
MAX_DESCRIPTION_CHARS = 10_000
MAX_TAGS, MAX_TAG_CHARS = 32, 64
MAX_METADATA_BYTES = 16 * 1024
DEFAULT_PREVIEW_CHUNKS, MAX_PREVIEW_CHUNKS = 50, 500
DEFAULT_TOP_K = 5
EMBEDDING_USE = "knowledge_embedding"


# -- conversions ---------------------------------------------------------------------------------------------------


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


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def clean_name(name: str, field: str) -> str:
    name = PurePosixPath(unicodedata.normalize("NFC", name or "").replace("\\", "/")).name.strip()
    if not name:
        raise invalid_argument(field, "required")
    if name == "..":
        raise invalid_argument(field, "must be a file name, not '..'")
    if len(name) > MAX_NAME_CHARS:
        raise invalid_argument(field, f"at most {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise invalid_argument(field, "must not contain control characters")
    return name


def clean_tags(tags, field: str = "tags") -> list[str]:
    out: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_CHARS or "|" in tag or any(unicodedata.category(c) == "Cc" for c in tag):
            raise invalid_argument(field, f"each tag must be 1 to {MAX_TAG_CHARS} characters, without '|'")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise invalid_argument(field, f"at most {MAX_TAGS} tags")
    return out


def clean_metadata(message, present: bool, field: str = "metadata") -> dict[str, Any]:
    if not present:
        return {}
    data = json_format.MessageToDict(message)
    if len(json.dumps(data, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise invalid_argument(field, f"at most {MAX_METADATA_BYTES} bytes of JSON")
    return data


def tags_index(tags: list[str]) -> str:
    return "|" + "|".join(tags) + "|" if tags else ""


def file_too_large(limit: int) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "FILE_TOO_LARGE",
        f"the file exceeds the maximum size of {limit} bytes",
        {"max_bytes": str(limit)},
    )


def unsupported(message: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_FILE_TYPE",
        message,
        {"supported": ",".join(parsers.SUPPORTED_EXTENSIONS)},
    )


def duplicate(existing: KnowledgeFileRow) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.ALREADY_EXISTS,
        "DUPLICATE_FILE",
        f"the knowledge base already has this content as {existing.name!r} ({existing.id})",
        {"file_id": existing.id, "md5": existing.md5},
    )


class KnowledgeService(QAPairs, knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, resources, llm: Embedding | None, audit, settings):
        self.settings = settings
        self.db = resources.db
        self.storage = resources.storage
        self.vectors = resources.vectors
        self.cache = resources.cache
        self.llm = llm
        self.audit = audit
        self.queue = JobQueue(
            self.db,
            redis_url=settings.secret("redis_url"),
            stream=settings.jobs_stream,
            lease_seconds=settings.jobs_lease_seconds,
            max_attempts=settings.jobs_max_attempts,
            retry_backoff_seconds=settings.jobs_retry_backoff_seconds,
            poll_seconds=settings.jobs_poll_seconds,
            rekick_seconds=settings.jobs_rekick_seconds,
            concurrency=settings.jobs_concurrency,
            shutdown_grace_seconds=settings.jobs_shutdown_grace_seconds,
        )
        self.collections = Collections(
            self.vectors, settings.knowledge_vector_flush_rows, settings.knowledge_vector_flush_delay_seconds
        )
        self.profiles = Profiles(llm, settings.knowledge_embedding_window_tokens)
        self.ingestor = Ingestor(
            self.db,
            self.storage,
            self.vectors,
            self.cache,
            llm,
            IngestSettings.from_settings(settings),
            self.collections,
            self.profiles,
        )
        self.queue.register(
            JOB_KIND, self.ingestor.run, on_failed=self.ingestor.on_failed, on_retry=self.ingestor.on_retry
        )
        self.searcher = Searcher(
            self.db,
            self.vectors,
            llm,
            rrf_k=settings.knowledge_rrf_k,
            candidates=settings.knowledge_search_candidates,
            collections=self.collections,
            fusion=settings.knowledge_search_fusion,
            vector_weight=settings.knowledge_search_vector_weight,
            uncovered_vector_weight=settings.knowledge_search_uncovered_vector_weight,
            profiles=self.profiles,
        )
        self.chunks = ChunkEditor(
            self.db, self.vectors, self.collections, llm, self.profiles, settings.knowledge_keyword_block_chunks
        )
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self, *, worker: bool | None = None) -> None:
        """Connect the job engine; run ingestion here too when `worker` (default: knowledge_worker_in_process)."""
        run_worker = self.settings.knowledge_worker_in_process if worker is None else worker
        await asyncio.to_thread(keyword.warm_up)
        await self.queue.start(worker=run_worker)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.queue.stop()
            await self.ingestor.embedder.close()
            await self.ingestor.parse_pool.close()
            await self.collections.close()
            self._started = False

    # -- helpers -------------------------------------------------------------------------------------------------
    async def default_chunk_size(self, model_id: str) -> int:
        """knowledge_chunk_size, or (when 0) a share of the embedding model's input window, so that a default
        chunk is read whole by the model (Typecase tokens never outnumber a word-piece tokenizer's)."""
        if self.settings.knowledge_chunk_size:
            return self.settings.knowledge_chunk_size
        profile = await self.profiles.get(model_id)
        return max(int(profile.content_tokens * self.settings.knowledge_chunk_window_share), 16)

    def _rule(
        self, message: pb.ChunkingRule | None, present: bool, fallback: dict | None, field: str, default_size: int = 0
    ) -> dict:
        if not present:
            if fallback:
                return Rule.from_dict(fallback).to_dict()
            message = pb.ChunkingRule()
        s = self.settings
        size = message.chunk_size or default_size or s.knowledge_chunk_size or Rule().chunk_size
        if message.HasField("chunk_overlap"):
            overlap = message.chunk_overlap
        else:
            overlap = min(s.knowledge_chunk_overlap, size // 10, size - 1)
        rule = Rule(
            separators=tuple(message.separators) or Rule().separators,
            separator_before=message.separator_rule == pb.SEPARATOR_RULE_BEFORE,
            chunk_size=size,
            chunk_overlap=overlap,
            normalize_whitespace=message.normalize_whitespace,
            remove_urls_emails=message.remove_urls_emails,
        )
        try:
            rule.validate(s.knowledge_max_chunk_size)
        except RuleError as exc:
            raise invalid_argument(f"{field}.{exc.field}", exc.problem) from None
        return rule.to_dict()

    async def _kb(self, session, kb_id: str, level: str = sharing.USE) -> KnowledgeBaseRow:
        """The base if the caller may act on it at `level` (infra/sharing.py: owner, admin, or a grant to them or
        one of their groups): NOT_FOUND when they cannot see it, SHARE_LEVEL_INSUFFICIENT when they may only use
        it."""
        if not kb_id:
            raise invalid_argument("kb_id", "required")
        me = caller.current()
        rank = sharing.grant_rank(sharing.KNOWLEDGE_BASE, KnowledgeBaseRow.id, me)
        if rank is None:  # an admin
            row = await session.get(KnowledgeBaseRow, kb_id)
        else:
            found = (await session.execute(select(KnowledgeBaseRow, rank).where(KnowledgeBaseRow.id == kb_id))).first()
            row, rank = found if found is not None else (None, None)
        if row is None:
            raise not_found("knowledge base", kb_id)
        held = sharing.level_of(row.owner_id, rank, me)
        sharing.require(held, level, "knowledge base", sharing.KNOWLEDGE_BASE, kb_id)
        caller.check_key_resource(sharing.KNOWLEDGE_BASE, kb_id)
        return row

    async def _file(self, session, file_id: str, level: str = sharing.USE) -> tuple[KnowledgeFileRow, KnowledgeBaseRow]:
        if not file_id:
            raise invalid_argument("file_id", "required")
        row = await session.get(KnowledgeFileRow, file_id)
        kb = await session.get(KnowledgeBaseRow, row.kb_id) if row is not None else None
        if row is None or kb is None:
            raise not_found("file", file_id)
        held = await sharing.access_level(session, sharing.KNOWLEDGE_BASE, kb.id, kb.owner_id, caller.current())
        if held is None:
            raise not_found("file", file_id)
        sharing.require(held, level, "knowledge base", sharing.KNOWLEDGE_BASE, kb.id)
        return row, kb

    async def _counts(self, kb_ids: list[str]) -> dict[str, tuple[int, int, int]]:
        """Per base: (files, chunks of searchable files, stored bytes)."""
        out = {k: (0, 0, 0) for k in kb_ids}
        if not kb_ids:
            return out
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(
                        KnowledgeFileRow.kb_id,
                        func.count(),
                        func.sum(case((KnowledgeFileRow.status == STATUS_DONE, KnowledgeFileRow.chunk_count), else_=0)),
                        func.sum(KnowledgeFileRow.size_bytes),
                    )
                    .where(KnowledgeFileRow.kb_id.in_(kb_ids))
                    .group_by(KnowledgeFileRow.kb_id)
                )
            ).all()
        for kb_id, files, chunks, size in rows:
            out[kb_id] = (int(files or 0), int(chunks or 0), int(size or 0))
        return out

    async def _kb_message(self, row: KnowledgeBaseRow, counts: tuple[int, int, int] | None = None) -> pb.KnowledgeBase:
        if counts is None:
            counts = (await self._counts([row.id]))[row.id]
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

    async def _resolve_model(self, model_id: str, field: str) -> tuple[str, int]:
        if self.llm is None:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "FAILED_PRECONDITION",
                "no LLM service is available to embed documents",
            )
        if not model_id:
            model_id = await self.llm.default_model_id(EMBEDDING_USE) or ""
            if not model_id:
                raise invalid_argument(field, "no default knowledge embedding model is configured")
        dims = await self.llm.embedding_dimensions(model_id)
        return model_id, int(dims)

    @staticmethod
    def _check_format(kb: KnowledgeBaseRow, fmt: parsers.Format) -> None:
        if kb.kind == KIND_QA and fmt.name not in QA_FORMATS:
            raise wrong_kind(kb, "document")

    @staticmethod
    def _has_original(file: KnowledgeFileRow) -> None:
        if file.format == FORMAT_QA_PAIRS:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "FAILED_PRECONDITION",
                "this file holds hand-written question-answer pairs: it has no original to parse or download",
                {"file_id": file.id},
            )

    async def _touch(self, kb_id: str) -> None:
        """Bump a base's update_time in its own transaction (inside a file transaction, MySQL's FK share lock on
        the base row plus this update deadlock concurrent uploads)."""
        async with self.db.session() as session:
            await session.execute(
                update(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id).values(update_time=utcnow())
            )

    async def _enqueue(self, session, file: KnowledgeFileRow) -> str:
        return await self.queue.enqueue(
            JOB_KIND,
            _job_key(file.kb_id, file.id),
            {"file_id": file.id, "generation": file.generation},
            session=session,
        )

    async def _drop_kb_data(self, kb: KnowledgeBaseRow, generations: range | None = None) -> None:
        for gen in generations or [kb.vector_generation]:
            name = f"kb_{kb.id.lower()}_{gen}"
            self.collections.forget(name)
            with contextlib.suppress(Exception):
                if await self.vectors.has_collection(name):
                    await self.vectors.drop_collection(name)

    # -- knowledge bases ---------------------------------------------------------------------------------------------
    async def CreateKnowledgeBase(self, request, context):
        me = caller.require_permission("knowledge.create")
        kb = request.knowledge_base
        name = kb.name.strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise invalid_argument("knowledge_base.name", f"required, at most {MAX_NAME_CHARS} characters")
        if len(kb.description) > MAX_DESCRIPTION_CHARS:
            raise invalid_argument("knowledge_base.description", f"at most {MAX_DESCRIPTION_CHARS} characters")
        model_id, dims = await self._resolve_model(kb.embedding_model_id, "knowledge_base.embedding_model_id")
        rule = self._rule(
            kb.chunking_rule,
            kb.HasField("chunking_rule"),
            None,
            "knowledge_base.chunking_rule",
            await self.default_chunk_size(model_id),
        )
        row = KnowledgeBaseRow(
            owner_id=me.user_id,
            name=name,
            description=kb.description,
            embedding_model_id=model_id,
            embedding_dimensions=dims,
            chunking_rule=rule,
            vector_generation=1,
            kind=PROTO_TO_KIND.get(kb.kind, KIND_DOCUMENTS),
        )
        try:
            async with self.db.session() as session:
                session.add(row)
        except IntegrityError:
            raise TypecaseError(
                grpc.StatusCode.ALREADY_EXISTS,
                "ALREADY_EXISTS",
                f"you already have a knowledge base named {name!r}",
                {"name": name},
            ) from None
        await self.audit.record(
            "knowledge_base.create",
            actor_id=me.user_id,
            resource_type="knowledge_base",
            resource_id=row.id,
            detail={"name": name, "embedding_model_id": model_id},
        )
        return pb.CreateKnowledgeBaseResponse(knowledge_base=await self._kb_message(row, (0, 0, 0)))

    async def ListKnowledgeBases(self, request, context):
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        stmt = select(KnowledgeBaseRow)
        scope = sharing.visible(
            sharing.KNOWLEDGE_BASE, KnowledgeBaseRow.id, KnowledgeBaseRow.owner_id, caller.current()
        )
        if scope is not None:
            stmt = stmt.where(scope)
        if request.owner_id:
            stmt = stmt.where(KnowledgeBaseRow.owner_id == request.owner_id)
        if request.keyword:
            like = f"%{request.keyword.lower()}%"
            stmt = stmt.where(
                or_(func.lower(KnowledgeBaseRow.name).like(like), func.lower(KnowledgeBaseRow.description).like(like))
            )
        me = caller.current()
        ids = sharing.visible_ids(sharing.KNOWLEDGE_BASE, KnowledgeBaseRow.id, KnowledgeBaseRow.owner_id, me)
        counted = stmt if ids is None or request.owner_id or request.keyword else ids
        async with self.db.session() as session:
            total = await session.scalar(select(func.count()).select_from(counted.subquery()))
            if position:
                try:
                    after_time = datetime.fromisoformat(position["t"])
                    after_id = str(position["id"])
                except (KeyError, ValueError, TypeError):
                    raise invalid_argument("page_token", "not a page token returned by this API") from None
                stmt = stmt.where(
                    or_(
                        KnowledgeBaseRow.update_time < after_time,
                        (KnowledgeBaseRow.update_time == after_time) & (KnowledgeBaseRow.id < after_id),
                    )
                )
            stmt = stmt.order_by(KnowledgeBaseRow.update_time.desc(), KnowledgeBaseRow.id.desc()).limit(limit + 1)
            rows = list((await session.scalars(stmt)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        counts = await self._counts([r.id for r in rows])
        return pb.ListKnowledgeBasesResponse(
            knowledge_bases=[await self._kb_message(r, counts[r.id]) for r in rows],
            next_page_token=paging.encode_token(t=rows[-1].update_time.isoformat(), id=rows[-1].id) if more else "",
            total_size=total or 0,
        )

    async def GetKnowledgeBase(self, request, context):
        return pb.GetKnowledgeBaseResponse(knowledge_base=await self.get_knowledge_base(request.kb_id))

    async def get_knowledge_base(self, kb_id: str) -> pb.KnowledgeBase:
        """Python API for other domains (flow, rpc.ports.Knowledge): a base the caller may see."""
        async with self.db.session() as session:
            row = await self._kb(session, kb_id)
        return await self._kb_message(row)

    async def UpdateKnowledgeBase(self, request, context):
        me = caller.current()
        kb = request.knowledge_base
        paths = set(request.update_mask.paths) if request.update_mask.paths else {f.name for f, _ in kb.ListFields()}
        paths.discard("id")
        unknown = paths - KB_FIELDS
        if unknown:
            raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a knowledge base")
        values: dict[str, Any] = {}
        if "name" in paths:
            name = kb.name.strip()
            if not name or len(name) > MAX_NAME_CHARS:
                raise invalid_argument("knowledge_base.name", f"required, at most {MAX_NAME_CHARS} characters")
            values["name"] = name
        if "description" in paths:
            if len(kb.description) > MAX_DESCRIPTION_CHARS:
                raise invalid_argument("knowledge_base.description", f"at most {MAX_DESCRIPTION_CHARS} characters")
            values["description"] = kb.description
        rebuild = False
        async with self.db.session() as session:
            row = await self._kb(session, kb.id, sharing.EDIT)
        if "chunking_rule" in paths:
            values["chunking_rule"] = self._rule(
                kb.chunking_rule,
                True,
                None,
                "knowledge_base.chunking_rule",
                await self.default_chunk_size(row.embedding_model_id),
            )
        if "embedding_model_id" in paths and kb.embedding_model_id != row.embedding_model_id:
            model_id, dims = await self._resolve_model(kb.embedding_model_id, "knowledge_base.embedding_model_id")
            if model_id != row.embedding_model_id:
                values.update(
                    embedding_model_id=model_id, embedding_dimensions=dims, vector_generation=row.vector_generation + 1
                )
                rebuild = True
        old_generation = row.vector_generation
        jobs: list[str] = []
        try:
            async with self.db.session() as session:
                row = await self._kb(session, kb.id, sharing.EDIT)
                for key, value in values.items():
                    setattr(row, key, value)
                row.update_time = utcnow()
                if rebuild:
                    files = (
                        await session.scalars(select(KnowledgeFileRow).where(KnowledgeFileRow.kb_id == row.id))
                    ).all()
                    for f in files:
                        f.generation += 1
                        f.status, f.progress, f.error, f.update_time = STATUS_QUEUED, 0, None, utcnow()
                        jobs.append(await self._enqueue(session, f))
        except IntegrityError:
            raise TypecaseError(
                grpc.StatusCode.ALREADY_EXISTS,
                "ALREADY_EXISTS",
                f"you already have a knowledge base named {values.get('name')!r}",
            ) from None
        if rebuild:
            await self._drop_kb_data(row, range(old_generation, old_generation + 1))
            for job_id in jobs:
                await self.queue.kick(job_id)
        await self.audit.record(
            "knowledge_base.update",
            actor_id=me.user_id,
            resource_type="knowledge_base",
            resource_id=row.id,
            detail={"fields": sorted(paths), "rebuild": rebuild},
        )
        return pb.UpdateKnowledgeBaseResponse(knowledge_base=await self._kb_message(row))

    async def DeleteKnowledgeBase(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row = await self._kb(session, request.kb_id, sharing.OWNER)
            file_ids = list(
                (await session.scalars(select(KnowledgeFileRow.id).where(KnowledgeFileRow.kb_id == row.id))).all()
            )
            await session.execute(delete(KnowledgeTermRow).where(KnowledgeTermRow.kb_id == row.id))
            await session.execute(delete(KnowledgeChunkRow).where(KnowledgeChunkRow.kb_id == row.id))
            await session.execute(delete(KnowledgeFileRow).where(KnowledgeFileRow.kb_id == row.id))
            await sharing.forget(session, sharing.KNOWLEDGE_BASE, row.id)
            await session.delete(row)
        await self.queue.delete_prefix(f"knowledge/{row.id}/")
        await self._drop_kb_data(row, range(1, row.vector_generation + 1))
        await self.storage.delete_prefix(f"knowledge/{row.id}/")
        await self.audit.record(
            "knowledge_base.delete",
            actor_id=me.user_id,
            resource_type="knowledge_base",
            resource_id=row.id,
            detail={"name": row.name, "files": len(file_ids)},
        )
        return pb.DeleteKnowledgeBaseResponse()

    # -- files ---------------------------------------------------------------------------------------------------------
    async def _store_new_file(
        self,
        kb: KnowledgeBaseRow,
        *,
        name: str,
        fmt: parsers.Format,
        data,
        rule: dict,
        tags: list[str],
        metadata: dict,
        allow_duplicate: bool,
        limit: int,
    ) -> KnowledgeFileRow:
        """Stream the bytes to object storage, check for duplicates, then insert the row and queue its job."""
        me = caller.current()
        file_id = new_id()
        key = f"knowledge/{kb.id}/{file_id}/original"
        try:
            info = await self.storage.put(key, data, content_type=fmt.mime_type, max_bytes=limit)
        except ObjectTooLarge:
            raise file_too_large(limit) from None
        stored = True
        try:
            if info.size == 0:
                raise invalid_argument("chunk", "the file is empty")
            async with self.db.session() as session:
                existing = await session.scalar(
                    select(KnowledgeFileRow)
                    .where(KnowledgeFileRow.kb_id == kb.id, KnowledgeFileRow.md5 == info.md5)
                    .limit(1)
                )
            if existing is not None and not allow_duplicate:
                raise duplicate(existing)
            row = KnowledgeFileRow(
                id=file_id,
                kb_id=kb.id,
                owner_id=me.user_id,
                name=name,
                format=fmt.name,
                mime_type=fmt.mime_type,
                object_key=key,
                size_bytes=info.size,
                md5=info.md5 or "",
                dedup_key=None if allow_duplicate else info.md5,
                status=STATUS_QUEUED,
                progress=0,
                chunk_count=0,
                term_total=0,
                page_count=0,
                chunking_rule=rule,
                tags=tags,
                user_metadata=metadata,
                generation=1,
            )
            try:
                async with self.db.session() as session:
                    session.add(row)
                    await session.flush()
                    job_id = await self._enqueue(session, row)
            except IntegrityError:
                async with self.db.session() as session:
                    existing = await session.scalar(
                        select(KnowledgeFileRow)
                        .where(KnowledgeFileRow.kb_id == kb.id, KnowledgeFileRow.md5 == info.md5)
                        .limit(1)
                    )
                if existing is None:
                    raise
                raise duplicate(existing) from None
            stored = False  # the row owns the object now
        finally:
            if stored:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.storage.delete(key))
        await self._touch(kb.id)
        await self.queue.kick(job_id)
        await self.audit.record(
            "knowledge_file.create",
            actor_id=me.user_id,
            resource_type="knowledge_file",
            resource_id=row.id,
            detail={"kb_id": kb.id, "name": name, "size": info.size},
        )
        return row

    async def UploadFile(self, request_iterator, context):
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise invalid_argument("kb_id", "the upload stream was empty")
        name = clean_name(first.file_name, "file_name")
        try:
            fmt = parsers.detect(name, first.content_type)
        except parsers.UnsupportedFileType as exc:
            raise unsupported(str(exc)) from None
        limit = self.settings.knowledge_max_upload_bytes
        if first.size_bytes > limit:
            raise file_too_large(limit)
        if first.size_bytes < 0:
            raise invalid_argument("size_bytes", "must not be negative")
        tags = clean_tags(first.tags)
        metadata = clean_metadata(first.metadata, first.HasField("metadata"))
        async with self.db.session() as session:
            kb = await self._kb(session, first.kb_id, sharing.EDIT)
        self._check_format(kb, fmt)
        rule = self._rule(
            first.chunking_rule,
            first.HasField("chunking_rule"),
            kb.chunking_rule,
            "chunking_rule",
            await self.default_chunk_size(kb.embedding_model_id),
        )

        async def body():
            if first.chunk:
                yield first.chunk
            async for message in request_iterator:
                if message.chunk:
                    yield message.chunk

        row = await self._store_new_file(
            kb,
            name=name,
            fmt=fmt,
            data=body(),
            rule=rule,
            tags=tags,
            metadata=metadata,
            allow_duplicate=first.allow_duplicate,
            limit=limit,
        )
        return pb.UploadFileResponse(file=file_message(row))

    async def AddTextFile(self, request, context):
        name = clean_name(request.name, "name")
        if not parsers.extension(name):
            name += ".txt"
        try:
            fmt = parsers.detect(name)
        except parsers.UnsupportedFileType as exc:
            raise unsupported(str(exc)) from None
        if fmt.name not in TEXT_FORMATS:
            raise unsupported(f"text documents can be {', '.join(sorted(TEXT_FORMATS))}, not {fmt.name}")
        data = request.text.encode("utf-8")
        limit = self.settings.knowledge_max_text_bytes
        if len(data) > limit:
            raise file_too_large(limit)
        if not request.text.strip():
            raise invalid_argument("text", "required")
        tags = clean_tags(request.tags)
        metadata = clean_metadata(request.metadata, request.HasField("metadata"))
        async with self.db.session() as session:
            kb = await self._kb(session, request.kb_id, sharing.EDIT)
        self._check_format(kb, fmt)
        rule = self._rule(
            request.chunking_rule,
            request.HasField("chunking_rule"),
            kb.chunking_rule,
            "chunking_rule",
            await self.default_chunk_size(kb.embedding_model_id),
        )
        row = await self._store_new_file(
            kb,
            name=name,
            fmt=fmt,
            data=data,
            rule=rule,
            tags=tags,
            metadata=metadata,
            allow_duplicate=False,
            limit=limit,
        )
        return pb.AddTextFileResponse(file=file_message(row))

    async def ListFiles(self, request, context):
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        async with self.db.session() as session:
            kb = await self._kb(session, request.kb_id)
            stmt = select(KnowledgeFileRow).where(KnowledgeFileRow.kb_id == kb.id)
            if request.status:
                stmt = stmt.where(KnowledgeFileRow.status == PROTO_TO_STATUS.get(request.status, "?"))
            if request.keyword:
                stmt = stmt.where(func.lower(KnowledgeFileRow.name).contains(request.keyword.lower(), autoescape=True))
            ordered = stmt.order_by(KnowledgeFileRow.id.desc())
            if request.tag:  # tags are a JSON list: filtered here (a base holds at most thousands of files)
                matching = [r for r in (await session.scalars(ordered)).all() if request.tag in (r.tags or [])]
                total = len(matching)
                if position:
                    matching = [r for r in matching if r.id < str(position.get("before", ""))]
                rows = matching[: limit + 1]
            else:
                total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
                if position:
                    ordered = ordered.where(KnowledgeFileRow.id < str(position.get("before", "")))
                rows = list((await session.scalars(ordered.limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return pb.ListFilesResponse(
            files=[file_message(r) for r in rows],
            next_page_token=paging.encode_token(before=rows[-1].id) if more and rows else "",
            total_size=total or 0,
        )

    async def GetFile(self, request, context):
        async with self.db.session() as session:
            row, _ = await self._file(session, request.file_id)
        return pb.GetFileResponse(file=file_message(row))

    async def DeleteFile(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row, kb = await self._file(session, request.file_id, sharing.EDIT)
            await session.execute(delete(KnowledgeTermRow).where(KnowledgeTermRow.file_id == row.id))
            await session.execute(delete(KnowledgeChunkRow).where(KnowledgeChunkRow.file_id == row.id))
            await session.delete(row)
        await self._touch(kb.id)
        await self.queue.delete(_job_key(kb.id, row.id))
        name = collection_name(kb)
        if await self.collections.open(name, kb.embedding_dimensions):
            await self.vectors.delete(name, filter=f'file_id == "{row.id}"')
        await self.storage.delete_prefix(f"knowledge/{kb.id}/{row.id}/")
        await self.ingestor.notify(row.id)
        await self.audit.record(
            "knowledge_file.delete",
            actor_id=me.user_id,
            resource_type="knowledge_file",
            resource_id=row.id,
            detail={"kb_id": kb.id, "name": row.name},
        )
        return pb.DeleteFileResponse()

    async def ReprocessFile(self, request, context):
        me = caller.current()
        if request.HasField("chunking_rule"):
            async with self.db.session() as session:
                _, kb = await self._file(session, request.file_id, sharing.EDIT)
            new_rule = self._rule(
                request.chunking_rule, True, None, "chunking_rule", await self.default_chunk_size(kb.embedding_model_id)
            )
        async with self.db.session() as session:
            row, kb = await self._file(session, request.file_id, sharing.EDIT)
            if request.HasField("chunking_rule"):
                row.chunking_rule = new_rule
            row.generation += 1
            row.status, row.progress, row.error, row.update_time = STATUS_QUEUED, 0, None, utcnow()
            job_id = await self._enqueue(session, row)
        await self.queue.kick(job_id)
        await self.ingestor.notify(row.id)
        await self.audit.record(
            "knowledge_file.reprocess",
            actor_id=me.user_id,
            resource_type="knowledge_file",
            resource_id=row.id,
            detail={"kb_id": kb.id, "rule": row.chunking_rule},
        )
        return pb.ReprocessFileResponse(file=file_message(row))

    async def WatchFile(self, request, context):
        async with self.db.session() as session:
            await self._file(session, request.file_id)
        changed = asyncio.Event()

        async def listen() -> None:
            try:
                async with self.cache.subscribe(file_channel(request.file_id)) as messages:
                    subscribed.set()
                    async for _ in messages:
                        changed.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("watch notifications unavailable; polling only", exc_info=True)
            finally:
                subscribed.set()

        subscribed = asyncio.Event()
        listener = asyncio.create_task(listen())
        try:
            await asyncio.wait_for(subscribed.wait(), 5)
        except TimeoutError:
            pass
        seq, last = 0, None
        try:
            while True:
                changed.clear()
                async with self.db.session() as session:
                    row = await session.get(KnowledgeFileRow, request.file_id)
                if row is None:
                    raise not_found("file", request.file_id)
                snapshot = (row.status, row.progress, row.chunk_count, json.dumps(row.error, sort_keys=True))
                if snapshot != last:
                    last = snapshot
                    seq += 1
                    yield pb.WatchFileResponse(
                        seq=seq,
                        file_id=row.id,
                        status=STATUS_TO_PROTO.get(row.status, pb.FILE_STATUS_UNSPECIFIED),
                        progress_percent=row.progress,
                        chunk_count=row.chunk_count,
                        error=error_status(row.error),
                        time=to_timestamp(row.update_time),
                    )
                if row.status in (STATUS_DONE, STATUS_FAILED):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.settings.knowledge_watch_poll_seconds)
        finally:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener

    # -- preview and search ---------------------------------------------------------------------------------------------
    async def PreviewChunks(self, request, context):
        started = time.perf_counter()
        max_chunks = request.max_chunks or DEFAULT_PREVIEW_CHUNKS
        if not 0 < max_chunks <= MAX_PREVIEW_CHUNKS:
            raise invalid_argument("max_chunks", f"must be 1 to {MAX_PREVIEW_CHUNKS}")
        async with self.db.session() as session:
            kb = await self._kb(session, request.kb_id)
            file = None
            if request.WhichOneof("source") == "file_id":
                file, file_kb = await self._file(session, request.file_id)
                if file_kb.id != kb.id:
                    raise not_found("file", request.file_id)
        fallback = (file.chunking_rule if file is not None else None) or kb.chunking_rule
        rule = Rule.from_dict(
            self._rule(
                request.chunking_rule,
                request.HasField("chunking_rule"),
                fallback,
                "chunking_rule",
                await self.default_chunk_size(kb.embedding_model_id),
            )
        )
        profile = await self.profiles.get(kb.embedding_model_id)
        window = self.settings.knowledge_parse_window_chars
        source = request.WhichOneof("source")
        if source == "text":
            if len(request.text.encode("utf-8")) > self.settings.knowledge_max_text_bytes:
                raise file_too_large(self.settings.knowledge_max_text_bytes)

            def run():
                return _collect(chunk_sections([Section(request.text)], rule, window), max_chunks)

            chunks, total = await asyncio.to_thread(run)
        elif source == "file_id":
            if file.size_bytes > self.settings.knowledge_preview_max_bytes:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "FILE_TOO_LARGE",
                    f"previews parse files up to {self.settings.knowledge_preview_max_bytes} bytes",
                    {"max_bytes": str(self.settings.knowledge_preview_max_bytes)},
                )
            chunks, total = await self._preview_file(file, rule, max_chunks)
        else:
            raise invalid_argument("text", "set text or file_id")

        def measure() -> list[tuple[int, int]]:
            return [(profile.count(c.text), len(profile.windows(c.text))) for c in chunks]

        sizes = await asyncio.to_thread(measure)
        return pb.PreviewChunksResponse(
            chunks=[
                pb.PreviewChunk(
                    index=c.index,
                    text=c.text,
                    token_count=c.token_count,
                    page=c.page,
                    model_token_count=n,
                    embedding_windows=w,
                    start_offset=c.start,
                    end_offset=c.end,
                )
                for c, (n, w) in zip(chunks, sizes, strict=True)
            ],
            total_chunks=total,
            elapsed=_duration(time.perf_counter() - started),
            window_tokens=profile.window_tokens,
            model_tokens_exact=profile.exact,
        )

    async def _preview_file(self, file: KnowledgeFileRow, rule: Rule, max_chunks: int):
        self._has_original(file)
        tmp = self.ingestor.tmp_dir
        tmp.mkdir(parents=True, exist_ok=True)
        local = tmp / f"preview-{file.id}-{uuid.uuid4().hex[:8]}{parsers.BY_NAME[file.format].extensions[0]}"
        try:
            await self.ingestor._download(file.object_key, local)
            window = self.settings.knowledge_parse_window_chars
            try:
                async with self.ingestor.parse_pool.parse(
                    local, file.format, self.ingestor.settings.parser_options
                ) as parsed:
                    return await asyncio.to_thread(
                        lambda: _collect(chunk_sections(parsed.sections, rule, window), max_chunks)
                    )
            except (parsers.UnsupportedFileType, parsers.ParseError) as exc:
                failure = parse_failure(exc)
                if failure.reason == "UNSUPPORTED_FILE_TYPE":
                    raise unsupported(str(exc)) from None
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION, "PARSE_FAILED", str(exc), failure.metadata
                ) from None
        finally:
            local.unlink(missing_ok=True)

    async def Search(self, request, context):
        return await self.search(request)

    async def search(self, request: pb.SearchRequest) -> pb.SearchResponse:
        """Python API for other domains (chat, flow, tools; rpc.ports.KnowledgeSearch): Search with the caller
        bound in the current context."""
        started = time.perf_counter()
        s = self.settings
        kb_ids = list(dict.fromkeys(request.kb_ids))
        if not kb_ids:
            raise invalid_argument("kb_ids", "at least one knowledge base")
        if len(kb_ids) > s.knowledge_search_max_kbs:
            raise invalid_argument("kb_ids", f"at most {s.knowledge_search_max_kbs} knowledge bases")
        query = request.query.strip()
        if not query:
            raise invalid_argument("query", "required")
        if len(query) > s.knowledge_search_max_query_chars:
            raise invalid_argument("query", f"at most {s.knowledge_search_max_query_chars} characters")
        top_k = request.top_k or DEFAULT_TOP_K
        if not 0 < top_k <= s.knowledge_search_max_top_k:
            raise invalid_argument("top_k", f"must be 1 to {s.knowledge_search_max_top_k}")
        weight = request.vector_weight if request.HasField("vector_weight") else None
        if weight is not None and not 0 <= weight <= 1:
            raise invalid_argument("vector_weight", "must be 0 to 1")
        if request.score_threshold < 0:
            raise invalid_argument("score_threshold", "must not be negative")
        mode = MODES.get(request.mode)
        if mode is None:
            raise invalid_argument("mode", "unknown search mode")
        async with self.db.session() as session:
            kbs = [await self._kb(session, kb_id) for kb_id in kb_ids]
        if mode != MODE_KEYWORD:
            if len({kb.embedding_model_id for kb in kbs}) > 1:
                raise invalid_argument(
                    "kb_ids",
                    "vector and hybrid search need knowledge bases that share one "
                    "embedding model; search them separately or use keyword mode",
                )
            if self.llm is None:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "FAILED_PRECONDITION",
                    "no LLM service is available to embed the query",
                )
        flt = request.filter
        search_filter = Filter(
            file_ids=set(flt.file_ids),
            tags=set(flt.tags),
            metadata=clean_metadata(flt.metadata, flt.HasField("metadata"), "filter.metadata"),
        )
        result = await self.searcher.search(
            kbs,
            query,
            mode=mode,
            top_k=top_k,
            score_threshold=request.score_threshold,
            vector_weight=weight,
            filter=search_filter,
            rerank_model_id=request.rerank_model_id,
        )
        from typecase.v1 import common_pb2

        return pb.SearchResponse(
            hits=[
                pb.SearchHit(
                    chunk_id=h.chunk_id,
                    kb_id=h.kb_id,
                    file_id=h.file_id,
                    file_name=h.file_name,
                    text=h.text,
                    score=h.score,
                    page=h.page,
                    chunk_index=h.chunk_index,
                    metadata=struct_of(h.metadata),
                    vector_score=h.vector_score,
                    keyword_score=h.keyword_score,
                    start_offset=h.start_offset,
                    end_offset=h.end_offset,
                    qa_pair_id=h.chunk_id if h.answer is not None else "",
                    question=h.question,
                )
                for h in result.hits
            ],
            usage=common_pb2.Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
            elapsed=_duration(time.perf_counter() - started),
        )

    # -- chunks (curation) -----------------------------------------------------------------------------------------------
    async def _chunk(self, session, chunk_ref: str, level: str = sharing.USE):
        if not chunk_ref:
            raise invalid_argument("chunk_id", "required")
        file_id, _, index = chunk_ref.rpartition("-")
        if not file_id or not index.isdigit():
            raise not_found("chunk", chunk_ref)
        try:
            file, kb = await self._file(session, file_id, level)
        except TypecaseError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise
            raise not_found("chunk", chunk_ref) from None
        row = await session.get(KnowledgeChunkRow, chunk_ref)
        if row is None:
            raise not_found("chunk", chunk_ref)
        return row, file, kb

    def _chunk_text(self, text: str, field: str) -> str:
        if not text.strip():
            raise invalid_argument(field, "required")
        limit = self.settings.knowledge_chunk_text_max_chars
        if len(text) > limit:
            raise invalid_argument(field, f"at most {limit} characters")
        return text

    @staticmethod
    def _editable(file: KnowledgeFileRow) -> None:
        if file.status != STATUS_DONE:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "FAILED_PRECONDITION",
                f"the file is {file.status}: chunks can be edited once it is done",
                {"file_id": file.id, "status": file.status},
            )

    async def ListChunks(self, request, context):
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        async with self.db.session() as session:
            kb = await self._kb(session, request.kb_id)
            stmt = select(KnowledgeChunkRow).where(KnowledgeChunkRow.kb_id == kb.id)
            if request.file_id:
                stmt = stmt.where(KnowledgeChunkRow.file_id == request.file_id)
            if request.keyword:
                stmt = stmt.where(func.lower(KnowledgeChunkRow.text).contains(request.keyword.lower(), autoescape=True))
            total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
            if position:
                try:
                    after_file, after_index = str(position["f"]), int(position["i"])
                except (KeyError, ValueError, TypeError):
                    raise invalid_argument("page_token", "not a page token returned by this API") from None
                stmt = stmt.where(
                    or_(
                        KnowledgeChunkRow.file_id > after_file,
                        (KnowledgeChunkRow.file_id == after_file) & (KnowledgeChunkRow.chunk_index > after_index),
                    )
                )
            stmt = stmt.order_by(KnowledgeChunkRow.file_id, KnowledgeChunkRow.chunk_index).limit(limit + 1)
            rows = list((await session.scalars(stmt)).all())
            names = (
                dict(
                    (
                        await session.execute(
                            select(KnowledgeFileRow.id, KnowledgeFileRow.name).where(
                                KnowledgeFileRow.id.in_({r.file_id for r in rows})
                            )
                        )
                    ).all()
                )
                if rows
                else {}
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return pb.ListChunksResponse(
            chunks=[chunk_message(r, names.get(r.file_id, "")) for r in rows],
            next_page_token=paging.encode_token(f=rows[-1].file_id, i=rows[-1].chunk_index) if more else "",
            total_size=total or 0,
        )

    async def GetChunk(self, request, context):
        async with self.db.session() as session:
            row, file, _ = await self._chunk(session, request.chunk_id)
        return pb.GetChunkResponse(chunk=chunk_message(row, file.name))

    async def UpdateChunk(self, request, context):
        me = caller.current()
        chunk = request.chunk
        paths = set(request.update_mask.paths) if request.update_mask.paths else {f.name for f, _ in chunk.ListFields()}
        paths.discard("id")
        unknown = paths - {"text", "page"}
        if unknown:
            raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a chunk")
        text = self._chunk_text(chunk.text, "chunk.text") if "text" in paths else None
        if chunk.page < 0:
            raise invalid_argument("chunk.page", "must not be negative")
        async with self.db.session() as session:
            row, file, kb = await self._chunk(session, chunk.id, sharing.EDIT)
        self._editable(file)
        row = await self.chunks.update(kb, file, row, text, chunk.page if "page" in paths else None)
        await self.audit.record(
            "knowledge_chunk.update",
            actor_id=me.user_id,
            resource_type="knowledge_chunk",
            resource_id=row.id,
            detail={"kb_id": kb.id, "fields": sorted(paths)},
        )
        return pb.UpdateChunkResponse(chunk=chunk_message(row, file.name))

    async def DeleteChunk(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row, file, kb = await self._chunk(session, request.chunk_id, sharing.EDIT)
        self._editable(file)
        await self.chunks.delete(kb, file, row)
        await self.audit.record(
            "knowledge_chunk.delete",
            actor_id=me.user_id,
            resource_type="knowledge_chunk",
            resource_id=row.id,
            detail={"kb_id": kb.id},
        )
        return pb.DeleteChunkResponse()

    async def AddChunk(self, request, context):
        me = caller.current()
        text = self._chunk_text(request.chunk.text, "chunk.text")
        if request.chunk.page < 0:
            raise invalid_argument("chunk.page", "must not be negative")
        async with self.db.session() as session:
            file, kb = await self._file(session, request.file_id, sharing.EDIT)
        self._editable(file)
        row = await self.chunks.add(kb, file, text, request.chunk.page)
        await self.audit.record(
            "knowledge_chunk.create",
            actor_id=me.user_id,
            resource_type="knowledge_chunk",
            resource_id=row.id,
            detail={"kb_id": kb.id},
        )
        return pb.AddChunkResponse(chunk=chunk_message(row, file.name))

    async def DownloadFile(self, request, context):
        async with self.db.session() as session:
            file, _ = await self._file(session, request.file_id)
        self._has_original(file)
        seconds = self.settings.knowledge_download_redirect_seconds
        redirect = request.redirect if request.HasField("redirect") else seconds > 0
        async for message in object_body(
            self.storage,
            file.object_key,
            size=file.size_bytes,
            mime_type=file.mime_type,
            name=file.name,
            range_spec=request.range,
            inline=request.inline,
            context=context,
            redirect_seconds=(seconds or 300) if redirect else 0,
        ):
            yield message

    # -- worker process ---------------------------------------------------------------------------------------------------
    async def run_worker(self, stop: asyncio.Event) -> None:
        """`typecase worker`: run ingestion jobs until `stop` is set, then release what is still running."""
        await asyncio.to_thread(keyword.warm_up)
        await self.queue.start(worker=True)
        self._started = True
        try:
            await stop.wait()
        finally:
            await self.stop()


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
        file_name=file_name,
    )


def _job_key(kb_id: str, file_id: str) -> str:
    return f"knowledge/{kb_id}/file/{file_id}"


def _collect(chunks, max_chunks: int):
    kept, total = [], 0
    for c in chunks:
        if total < max_chunks:
            kept.append(c)
        total += 1
    return kept, total
