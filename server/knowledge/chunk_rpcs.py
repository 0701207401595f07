"""Search and the chunk RPCs of KnowledgeService (a mixin on core.py's KnowledgeCore): list, get, and the curation
edits (update, delete, add), which go through curation.py's ChunkEditor."""

from __future__ import annotations

import time

import grpc
from sqlalchemy import func, or_, select

from typecase.server.infra import sharing
from typecase.server.knowledge.checks import clean_metadata
from typecase.server.knowledge.convert import MODES, chunk_message, duration, struct_of
from typecase.server.knowledge.core import KnowledgeCore
from typecase.server.knowledge.models import (
    KnowledgeChunkRow,
    KnowledgeFileRow,
)
from typecase.server.knowledge.search import MODE_KEYWORD, Filter
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import knowledge_pb2 as pb

DEFAULT_TOP_K = 5


class ChunkRPCs(KnowledgeCore):
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
            elapsed=duration(time.perf_counter() - started),
        )

    # -- chunks (curation) ---
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
