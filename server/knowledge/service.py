"""KnowledgeService: knowledge bases, their files (upload, add-text, reprocess, watch), chunk previews and search.

Ingestion runs as background jobs (server/infra/queue.py): in this process when knowledge_worker_in_process is set
(the embedded default), in `typecase worker` processes otherwise. The servicer only stores originals, writes rows
and enqueues; ingest.py does the work; search.py answers queries. The servicer is assembled from mixins on
core.py's KnowledgeCore: the base RPCs here, file_rpcs.py (files, previews, downloads), chunk_rpcs.py (search,
chunks) and qa.py (question-answer pairs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from typecase.server.infra import sharing
from typecase.server.infra.sql import utcnow
from typecase.server.knowledge.checks import MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS
from typecase.server.knowledge.chunk_rpcs import ChunkRPCs
from typecase.server.knowledge.convert import PROTO_TO_KIND
from typecase.server.knowledge.file_rpcs import FileRPCs
from typecase.server.knowledge.models import (
    KIND_DOCUMENTS,
    STATUS_QUEUED,
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
    KnowledgeTermRow,
)
from typecase.server.knowledge.qa import QAPairs
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

KB_FIELDS = {"name", "description", "chunking_rule", "embedding_model_id"}


class KnowledgeService(FileRPCs, ChunkRPCs, QAPairs, knowledge_pb2_grpc.KnowledgeServiceServicer):
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
        scope, ids = sharing.visible_and_ids(
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
        counted = stmt if ids is None or request.owner_id or request.keyword else ids
        total_stmt = select(func.count()).select_from(counted.subquery())
        async with self.db.session() as session:
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
            # The total rides on the page's rows: one round trip instead of two (bench/auth/sharing.py), and a
            # second query only when the page is empty.
            page = (await session.execute(stmt.add_columns(total_stmt.scalar_subquery()))).all()
            rows = [row for row, _ in page]
            total = page[0][1] if page else await session.scalar(total_stmt)
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
