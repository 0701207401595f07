"""KnowledgeCore: what every knowledge RPC mixin shares: the engines a KnowledgeService holds (job queue, ingestor,
searcher, chunk editor), its lifecycle, and the access checks and lookups of bases, files and chunks.

The RPCs are mixins on this base (service.py: bases; file_rpcs.py: files and previews; chunk_rpcs.py: search and
chunks; qa.py: question-answer pairs), so that each module holds one group of RPCs and mypy sees what they use.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from sqlalchemy import case, func, select, update

from typecase.server.infra import sharing
from typecase.server.infra.queue import JobQueue
from typecase.server.infra.sql import utcnow
from typecase.server.knowledge import keyword, parsers
from typecase.server.knowledge.chunking import Rule, RuleError
from typecase.server.knowledge.convert import kb_message
from typecase.server.knowledge.curation import ChunkEditor
from typecase.server.knowledge.indexing import Collections
from typecase.server.knowledge.ingest import JOB_KIND, Ingestor, IngestSettings
from typecase.server.knowledge.model_window import Profiles
from typecase.server.knowledge.models import (
    FORMAT_QA_PAIRS,
    KIND_QA,
    STATUS_DONE,
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
)
from typecase.server.knowledge.search import Searcher
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.ports import Embedding
from typecase.v1 import knowledge_pb2 as pb

QA_FORMATS = {"csv", "xlsx"}  # tables of question-answer pairs (parsers/qa.py)
EMBEDDING_USE = "knowledge_embedding"


def wrong_kind(kb: KnowledgeBaseRow, wanted: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "WRONG_KNOWLEDGE_BASE_KIND",
        f"knowledge base {kb.name!r} holds {kb.kind}: this needs a {wanted} knowledge base",
        {"kb_id": kb.id, "kind": kb.kind},
    )


class KnowledgeCore:
    def __init__(self, resources, llm: Embedding | None, audit, settings, *, jobs: JobQueue):
        """`jobs`: the ingestion job queue, built by resources.py (Redis streams or SQL polling)."""
        self.settings = settings
        self.db = resources.db
        self.storage = resources.storage
        self.vectors = resources.vectors
        self.cache = resources.cache
        self.llm = llm
        self.audit = audit
        self.queue = jobs
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
        self, message: pb.ChunkingRule, present: bool, fallback: dict | None, field: str, default_size: int = 0
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
        return kb_message(row, counts)

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
            job_key(file.kb_id, file.id),
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


def job_key(kb_id: str, file_id: str) -> str:
    return f"knowledge/{kb_id}/file/{file_id}"
