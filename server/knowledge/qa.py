"""Question-answer knowledge bases: the pair RPCs (create, list, get, update, delete) as a servicer mixin.

A pair is a chunk whose text is its questions, one a line (so vector and keyword search match on the question and
its phrasings, never on the answer's wording) and whose `answer` column is what a search hit returns (search.py).
Pairs imported from a csv/xlsx table belong to that file (ingest.py, parsers/qa.py); hand-written pairs belong to
one file per base of format FORMAT_QA_PAIRS, created on the first pair, which has no original and is never parsed:
a rebuild (new embedding model) re-embeds its rows in place. Edits go through curation.py's ChunkEditor, so the
indexes stay exact; the answer is written in the same step as the questions.
"""

from __future__ import annotations

import grpc
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from typecase.server.infra import sharing
from typecase.server.infra.sql import new_id
from typecase.server.knowledge.core import KnowledgeCore, wrong_kind
from typecase.server.knowledge.ingest import qa_text
from typecase.server.knowledge.models import (
    FORMAT_QA_PAIRS,
    KIND_QA,
    STATUS_DONE,
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
)
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.v1 import knowledge_pb2 as pb

PAIRS_FILE_NAME = "Hand-written pairs"
PAIR_FIELDS = {"question", "similar_questions", "answer"}


def pair_message(row: KnowledgeChunkRow, file_name: str) -> pb.QAPair:
    question, _, similar = row.text.partition("\n")
    return pb.QAPair(
        id=row.id,
        kb_id=row.kb_id,
        file_id=row.file_id,
        question=question,
        similar_questions=[s for s in similar.split("\n") if s],
        answer=row.answer or "",
        file_name=file_name,
    )


class QAPairs(KnowledgeCore):
    """The pair RPCs of KnowledgeService, over the state and lookups of KnowledgeCore (as ChunkRPCs is)."""

    def _pair_fields(self, pair: pb.QAPair, paths: set[str], old: KnowledgeChunkRow | None = None):
        s = self.settings
        old_question, _, old_similar = (old.text if old else "").partition("\n")
        question = pair.question.strip() if "question" in paths else old_question
        similar = (
            [q.strip() for q in pair.similar_questions if q.strip()]
            if "similar_questions" in paths
            else [q for q in old_similar.split("\n") if q]
        )
        answer = pair.answer.strip() if "answer" in paths else (old.answer or "" if old else "")
        if not question:
            raise invalid_argument("qa_pair.question", "required")
        if not answer:
            raise invalid_argument("qa_pair.answer", "required")
        for i, q in enumerate([question, *similar]):
            field = "qa_pair.question" if i == 0 else f"qa_pair.similar_questions[{i - 1}]"
            if "\n" in q:
                raise invalid_argument(field, "must be one line")
            if len(q) > s.knowledge_qa_question_max_chars:
                raise invalid_argument(field, f"at most {s.knowledge_qa_question_max_chars} characters")
        if len(similar) > s.knowledge_qa_max_similar_questions:
            raise invalid_argument(
                "qa_pair.similar_questions", f"at most {s.knowledge_qa_max_similar_questions} similar questions"
            )
        if len(answer) > s.knowledge_qa_answer_max_chars:
            raise invalid_argument("qa_pair.answer", f"at most {s.knowledge_qa_answer_max_chars} characters")
        return question, list(dict.fromkeys(similar)), answer

    async def _pairs_file(self, kb: KnowledgeBaseRow) -> KnowledgeFileRow:
        """The base's file of hand-written pairs, created (done, empty) on first use."""
        try:
            return await self._find_or_add_pairs_file(kb)
        except IntegrityError:  # a concurrent first pair created it
            return await self._find_or_add_pairs_file(kb)

    async def _find_or_add_pairs_file(self, kb: KnowledgeBaseRow) -> KnowledgeFileRow:
        async with self.db.session() as session:
            row = await session.scalar(
                select(KnowledgeFileRow)
                .where(KnowledgeFileRow.kb_id == kb.id, KnowledgeFileRow.format == FORMAT_QA_PAIRS)
                .order_by(KnowledgeFileRow.id)
                .limit(1)
            )
            if row is None:
                row = KnowledgeFileRow(
                    id=new_id(),
                    kb_id=kb.id,
                    owner_id=caller.current().user_id,
                    name=PAIRS_FILE_NAME,
                    format=FORMAT_QA_PAIRS,
                    mime_type="",
                    object_key="",
                    size_bytes=0,
                    md5="",
                    dedup_key=FORMAT_QA_PAIRS,  # one per base (unique with kb_id)
                    status=STATUS_DONE,
                    progress=100,
                    chunk_count=0,
                    term_total=0,
                    page_count=0,
                    chunking_rule={},
                    tags=[],
                    user_metadata={},
                    generation=1,
                )
                session.add(row)
        return row

    async def _pair(self, session, pair_id: str, level: str = sharing.USE):
        if not pair_id:
            raise invalid_argument("pair_id", "required")
        try:
            row, file, kb = await self._chunk(session, pair_id, level)
        except TypecaseError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise
            raise not_found("question-answer pair", pair_id) from None
        if kb.kind != KIND_QA or row.answer is None:
            raise not_found("question-answer pair", pair_id)
        return row, file, kb

    async def _set_answer(self, chunk_ref: str, answer: str) -> KnowledgeChunkRow:
        async with self.db.session() as session:
            await session.execute(
                update(KnowledgeChunkRow).where(KnowledgeChunkRow.id == chunk_ref).values(answer=answer, edited=True)
            )
            return await session.get(KnowledgeChunkRow, chunk_ref, populate_existing=True)

    async def CreateQAPair(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            kb = await self._kb(session, request.kb_id, sharing.EDIT)
        if kb.kind != KIND_QA:
            raise wrong_kind(kb, "question-answer")
        question, similar, answer = self._pair_fields(request.qa_pair, PAIR_FIELDS)
        file = await self._pairs_file(kb)
        chunk = await self.chunks.add(kb, file, qa_text(question, similar), 0, answer=answer)
        await self.audit.record(
            "knowledge_qa_pair.create",
            actor_id=me.user_id,
            resource_type="knowledge_qa_pair",
            resource_id=chunk.id,
            detail={"kb_id": kb.id},
        )
        return pb.CreateQAPairResponse(qa_pair=pair_message(chunk, file.name))

    async def ListQAPairs(self, request, context):
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        async with self.db.session() as session:
            kb = await self._kb(session, request.kb_id)
            if kb.kind != KIND_QA:
                raise wrong_kind(kb, "question-answer")
            stmt = select(KnowledgeChunkRow).where(
                KnowledgeChunkRow.kb_id == kb.id, KnowledgeChunkRow.answer.is_not(None)
            )
            if request.file_id:
                stmt = stmt.where(KnowledgeChunkRow.file_id == request.file_id)
            if request.keyword:
                word = request.keyword.lower()
                stmt = stmt.where(
                    or_(
                        func.lower(KnowledgeChunkRow.text).contains(word, autoescape=True),
                        func.lower(KnowledgeChunkRow.answer).contains(word, autoescape=True),
                    )
                )
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
            names = dict(
                (
                    await session.execute(
                        select(KnowledgeFileRow.id, KnowledgeFileRow.name).where(
                            KnowledgeFileRow.id.in_({r.file_id for r in rows} or {""})
                        )
                    )
                ).all()
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return pb.ListQAPairsResponse(
            qa_pairs=[pair_message(r, names.get(r.file_id, "")) for r in rows],
            next_page_token=paging.encode_token(f=rows[-1].file_id, i=rows[-1].chunk_index) if more else "",
            total_size=total or 0,
        )

    async def GetQAPair(self, request, context):
        async with self.db.session() as session:
            row, file, _ = await self._pair(session, request.pair_id)
        return pb.GetQAPairResponse(qa_pair=pair_message(row, file.name))

    async def UpdateQAPair(self, request, context):
        me = caller.current()
        pair = request.qa_pair
        paths = set(request.update_mask.paths) if request.update_mask.paths else {f.name for f, _ in pair.ListFields()}
        paths.discard("id")
        unknown = paths - PAIR_FIELDS
        if unknown:
            raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a pair")
        async with self.db.session() as session:
            row, file, kb = await self._pair(session, pair.id, sharing.EDIT)
        self._editable(file)
        question, similar, answer = self._pair_fields(pair, paths, row)
        text = qa_text(question, similar)
        if text != row.text:
            row = await self.chunks.update(kb, file, row, text, None)
        if answer != row.answer:
            row = await self._set_answer(row.id, answer)
        await self.audit.record(
            "knowledge_qa_pair.update",
            actor_id=me.user_id,
            resource_type="knowledge_qa_pair",
            resource_id=row.id,
            detail={"kb_id": kb.id, "fields": sorted(paths)},
        )
        return pb.UpdateQAPairResponse(qa_pair=pair_message(row, file.name))

    async def DeleteQAPair(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row, file, kb = await self._pair(session, request.pair_id, sharing.EDIT)
        self._editable(file)
        await self.chunks.delete(kb, file, row)
        await self.audit.record(
            "knowledge_qa_pair.delete",
            actor_id=me.user_id,
            resource_type="knowledge_qa_pair",
            resource_id=row.id,
            detail={"kb_id": kb.id},
        )
        return pb.DeleteQAPairResponse()
