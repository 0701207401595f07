"""Chunk curation: edit, delete and add chunks of an indexed file, keeping the vector and keyword indexes exact.

An edit is applied in an order that never leaves a half-edited chunk searchable:
1. the new text is embedded first (a model failure changes nothing);
2. the old vectors of the chunk (one per window) are replaced by the new ones;
3. one SQL transaction writes the chunk row, rebuilds the keyword postings of the chunk's block (postings pack a
   whole block of chunks per term, see keyword.py) and moves the file's BM25 counters;
4. if step 3 fails, the old text's vectors are written back.
A search running between 2 and 3 may see the new vector beside the old keyword postings for a moment; it never
sees a chunk without text. Edits of one file are serialised in this process (an edit rebuilds its whole block).
Edited and added chunks are marked (`edited`, `added`) and survive reprocessing the file (hand_edits.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from typecase.server.infra.sql import Database
from typecase.server.knowledge import keyword
from typecase.server.knowledge.chunking import count_tokens
from typecase.server.knowledge.ingest import Collections, collection_name, window_records
from typecase.server.knowledge.model_window import Profiles
from typecase.server.knowledge.models import (
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
    KnowledgeTermRow,
    chunk_id,
)
from typecase.server.rpc.errors import not_found


@dataclass
class _Row:
    """What window_records needs of a chunk."""

    file_id: str
    chunk_index: int
    page: int
    text: str


class ChunkEditor:
    def __init__(self, db: Database, vectors, collections: Collections, llm, profiles: Profiles, keyword_block: int):
        self.db = db
        self.vectors = vectors
        self.collections = collections
        self.llm = llm
        self.profiles = profiles
        self.keyword_block = keyword_block
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def _vectors(self, kb: KnowledgeBaseRow, file: KnowledgeFileRow, row: _Row) -> list[dict[str, Any]]:
        profile = await self.profiles.get(kb.embedding_model_id)
        records = await asyncio.to_thread(window_records, profile, [row])
        vectors = await self.llm.embed_texts([t for _, _, t in records], kb.embedding_model_id)
        meta = {"tags": list(file.tags or []), "metadata": dict(file.user_metadata or {})}
        return [
            {
                "id": vid,
                "vector": list(v),
                "kb_id": kb.id,
                "file_id": file.id,
                "chunk_index": r.chunk_index,
                "page": r.page,
                "metadata": meta,
            }
            for (vid, r, _), v in zip(records, vectors, strict=True)
        ]

    async def _old_ids(self, kb: KnowledgeBaseRow, row: _Row) -> list[str]:
        profile = await self.profiles.get(kb.embedding_model_id)
        return [vid for vid, _, _ in await asyncio.to_thread(window_records, profile, [row])]

    async def _replace_vectors(self, kb: KnowledgeBaseRow, old: list[str], new: list[dict[str, Any]]) -> None:
        name = collection_name(kb)
        await self.collections.create(name, len(new[0]["vector"]) if new else kb.embedding_dimensions)
        stale = [i for i in old if i not in {v["id"] for v in new}]
        if stale:
            await self.vectors.delete(name, ids=stale)
        if new:
            await self.vectors.upsert(name, new)
            await self.collections.flush(name)  # an edit must be searchable at once, not after the flush delay

    async def _rebuild_block(self, session, file: KnowledgeFileRow, block: int) -> None:
        size = self.keyword_block
        rows = (
            await session.execute(
                select(KnowledgeChunkRow.chunk_index, KnowledgeChunkRow.text).where(
                    KnowledgeChunkRow.file_id == file.id,
                    KnowledgeChunkRow.chunk_index >= block * size,
                    KnowledgeChunkRow.chunk_index < (block + 1) * size,
                )
            )
        ).all()

        def build() -> list[tuple[str, bytes]]:
            builder = keyword.PostingsBuilder()
            for r in rows:
                builder.add(r.chunk_index, r.text)
            return list(builder.rows())

        postings = await asyncio.to_thread(build)
        await session.execute(
            delete(KnowledgeTermRow).where(KnowledgeTermRow.file_id == file.id, KnowledgeTermRow.block == block)
        )
        if postings:
            await session.execute(
                insert(KnowledgeTermRow),
                [
                    {"file_id": file.id, "block": block, "term": term, "kb_id": file.kb_id, "postings": blob}
                    for term, blob in postings
                ],
            )

    async def update(
        self, kb: KnowledgeBaseRow, file: KnowledgeFileRow, chunk: KnowledgeChunkRow, text: str | None, page: int | None
    ) -> KnowledgeChunkRow:
        async with self._locks[file.id]:
            old = _Row(file.id, chunk.chunk_index, chunk.page, chunk.text)
            new = _Row(
                file.id, chunk.chunk_index, chunk.page if page is None else page, chunk.text if text is None else text
            )
            new_vectors = await self._vectors(kb, file, new)
            old_ids = await self._old_ids(kb, old)
            await self._replace_vectors(kb, old_ids, new_vectors)
            try:
                delta = len(await asyncio.to_thread(keyword.tokenize, new.text)) - len(
                    await asyncio.to_thread(keyword.tokenize, old.text)
                )
                async with self.db.session() as session:
                    await session.execute(
                        update(KnowledgeChunkRow)
                        .where(KnowledgeChunkRow.id == chunk.id)
                        .values(text=new.text, page=new.page, token_count=count_tokens(new.text), edited=True)
                    )
                    await self._rebuild_block(session, file, chunk.chunk_index // self.keyword_block)
                    await session.execute(
                        update(KnowledgeFileRow)
                        .where(KnowledgeFileRow.id == file.id)
                        .values(term_total=KnowledgeFileRow.term_total + delta)
                    )
                    row = await session.get(KnowledgeChunkRow, chunk.id, populate_existing=True)
                    if row is None:  # deleted by another call since it was read
                        raise not_found("chunk", chunk.id)
            except BaseException:
                await asyncio.shield(
                    self._replace_vectors(kb, [v["id"] for v in new_vectors], await self._vectors(kb, file, old))
                )
                raise
            return row

    async def delete(self, kb: KnowledgeBaseRow, file: KnowledgeFileRow, chunk: KnowledgeChunkRow) -> None:
        async with self._locks[file.id]:
            old = _Row(file.id, chunk.chunk_index, chunk.page, chunk.text)
            length = len(await asyncio.to_thread(keyword.tokenize, chunk.text))
            async with self.db.session() as session:
                await session.execute(delete(KnowledgeChunkRow).where(KnowledgeChunkRow.id == chunk.id))
                await self._rebuild_block(session, file, chunk.chunk_index // self.keyword_block)
                await session.execute(
                    update(KnowledgeFileRow)
                    .where(KnowledgeFileRow.id == file.id)
                    .values(
                        term_total=KnowledgeFileRow.term_total - length, chunk_count=KnowledgeFileRow.chunk_count - 1
                    )
                )
            name = collection_name(kb)
            if await self.collections.open(name, kb.embedding_dimensions):
                await self.vectors.delete(name, ids=await self._old_ids(kb, old))
                await self.collections.flush(name)

    async def add(
        self, kb: KnowledgeBaseRow, file: KnowledgeFileRow, text: str, page: int, answer: str | None = None
    ) -> KnowledgeChunkRow:
        async with self._locks[file.id]:
            async with self.db.session() as session:
                last = await session.scalar(
                    select(func.max(KnowledgeChunkRow.chunk_index)).where(KnowledgeChunkRow.file_id == file.id)
                )
            index = -1 if last is None else int(last)
            index += 1
            row = _Row(file.id, index, page, text)
            new_vectors = await self._vectors(kb, file, row)
            await self._replace_vectors(kb, [], new_vectors)
            try:
                length = len(await asyncio.to_thread(keyword.tokenize, text))
                async with self.db.session() as session:
                    added = KnowledgeChunkRow(
                        id=chunk_id(file.id, index),
                        kb_id=kb.id,
                        file_id=file.id,
                        chunk_index=index,
                        page=page,
                        text=text,
                        token_count=count_tokens(text),
                        start_offset=0,
                        end_offset=0,
                        edited=True,
                        added=True,
                        answer=answer,
                    )
                    session.add(added)
                    await session.flush()
                    await self._rebuild_block(session, file, index // self.keyword_block)
                    await session.execute(
                        update(KnowledgeFileRow)
                        .where(KnowledgeFileRow.id == file.id)
                        .values(
                            term_total=KnowledgeFileRow.term_total + length,
                            chunk_count=KnowledgeFileRow.chunk_count + 1,
                        )
                    )
            except BaseException:
                await asyncio.shield(self._replace_vectors(kb, [v["id"] for v in new_vectors], []))
                raise
            return added
