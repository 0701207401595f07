"""Search over one or more knowledge bases: vector (Milvus), keyword (BM25) or hybrid (weighted reciprocal rank
fusion), restricted to searchable files that pass the filters, optionally reranked by a rerank model.

Scores, higher is better:
- vector: cosine similarity of the query and chunk embeddings;
- keyword: BM25 divided by the most any chunk could score for the query (0-1);
- hybrid, fusion "rrf": w/(k+rank_vector) + (1-w)/(k+rank_keyword), scaled by (k+1) so a chunk ranked first by
  both scores 1; fusion "score": w*vector + (1-w)*keyword; when the embedding model does not cover the query's
  language (model_window.py), the default w is capped at uncovered_vector_weight, so fusion leans on keyword search
  (a weight the caller sets is kept);
- reranked: the rerank model's relevance score.
score_threshold applies to the final score.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from typecase.server.infra import tracing
from typecase.server.infra.sql import Database
from typecase.server.knowledge import keyword
from typecase.server.knowledge.chunking import count_tokens
from typecase.server.knowledge.ingest import collection_name
from typecase.server.knowledge.model_window import Profiles
from typecase.server.knowledge.models import (
    STATUS_DONE,
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
    KnowledgeTermRow,
    chunk_id,
)

log = logging.getLogger("typecase.knowledge.search")

MODE_VECTOR, MODE_KEYWORD, MODE_HYBRID = "vector", "keyword", "hybrid"
FUSION_RRF, FUSION_SCORE = "rrf", "score"
MAX_IN_FILTER = 2000  # files listed in a Milvus `in` filter; beyond that, over-fetch and filter here


@dataclass
class Filter:
    file_ids: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    metadata: dict[str, Any] = field(default_factory=dict)

    def allows(self, f: _FileInfo) -> bool:
        if self.file_ids and f.id not in self.file_ids:
            return False
        if self.tags and not self.tags.intersection(f.tags):
            return False
        return all(_matches(f.metadata.get(k, _MISSING), want) for k, want in self.metadata.items())


_MISSING = object()


def _matches(have: Any, want: Any) -> bool:
    if have is _MISSING:
        return False
    wants = want if isinstance(want, list) else [want]
    haves = have if isinstance(have, list) else [have]
    return any(_equal(h, w) for h in haves for w in wants)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


@dataclass
class _FileInfo:
    id: str
    kb_id: str
    name: str
    status: str
    tags: list[str]
    metadata: dict[str, Any]
    chunk_count: int
    term_total: int


@dataclass
class Hit:
    chunk_id: str
    kb_id: str
    file_id: str
    chunk_index: int
    page: int = 0
    score: float = 0.0
    vector_score: float = 0.0
    keyword_score: float = 0.0
    vector_rank: int | None = None
    keyword_rank: int | None = None
    text: str = ""
    start_offset: int = 0
    end_offset: int = 0
    file_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None  # question-answer bases: the pair's answer (`text` holds its questions)
    question: str = ""


@dataclass
class SearchResult:
    hits: list[Hit]
    prompt_tokens: int = 0


class Searcher:
    def __init__(
        self,
        db: Database,
        vectors,
        llm,
        *,
        rrf_k: int = 60,
        candidates: int = 50,
        collections=None,
        fusion: str = FUSION_RRF,
        vector_weight: float = 0.7,
        uncovered_vector_weight: float = 0.0,
        profiles=None,
    ):
        from typecase.server.knowledge.ingest import Collections

        self.db = db
        self.vectors = vectors
        self.collections = collections or Collections(vectors)
        self.llm = llm
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.fusion = fusion
        self.vector_weight = vector_weight
        self.uncovered_vector_weight = uncovered_vector_weight
        self.profiles = profiles or Profiles(llm)

    async def search(self, kbs: list[KnowledgeBaseRow], query: str, **options: Any) -> SearchResult:
        with tracing.span(
            "knowledge search",
            {
                "typecase.knowledge.kb_count": len(kbs),
                "typecase.knowledge.mode": options.get("mode", MODE_HYBRID),
                "typecase.knowledge.top_k": options.get("top_k", 5),
            },
        ) as span:
            result = await self._search(kbs, query, **options)
            tracing.set_attributes(span, {"typecase.knowledge.hits": len(result.hits)})
            return result

    async def _search(
        self,
        kbs: list[KnowledgeBaseRow],
        query: str,
        *,
        mode: str = MODE_HYBRID,
        top_k: int = 5,
        score_threshold: float = 0.0,
        vector_weight: float | None = None,
        filter: Filter | None = None,
        rerank_model_id: str = "",
    ) -> SearchResult:
        filter = filter or Filter()
        files = await self._files([kb.id for kb in kbs])
        allowed = {f.id for f in files.values() if f.status == STATUS_DONE and filter.allows(f)}
        if not allowed:
            return SearchResult([])
        n_candidates = max(self.candidates, top_k * 4)
        tokens = 0
        vector_hits: list[Hit] = []
        keyword_hits: list[Hit] = []
        tasks = []
        if mode in (MODE_VECTOR, MODE_HYBRID):
            tokens += count_tokens(query)
            tasks.append(self._vector(kbs, query, files, allowed, n_candidates))
        if mode in (MODE_KEYWORD, MODE_HYBRID):
            tasks.append(self._keyword(kbs, query, files, allowed, n_candidates))
        results = await asyncio.gather(*tasks)
        if mode in (MODE_VECTOR, MODE_HYBRID):
            vector_hits = results[0]
        if mode in (MODE_KEYWORD, MODE_HYBRID):
            keyword_hits = results[-1]

        if mode == MODE_VECTOR:
            fused = vector_hits
            for h in fused:
                h.score = h.vector_score
        elif mode == MODE_KEYWORD:
            fused = keyword_hits
            for h in fused:
                h.score = h.keyword_score
        else:
            if vector_weight is None:
                vector_weight = self.vector_weight
                profile = await self.profiles.get(kbs[0].embedding_model_id)
                if not profile.covers(query):  # the model cannot read the query's language: trust the keywords
                    vector_weight = min(vector_weight, self.uncovered_vector_weight)
            fused = self._fuse(vector_hits, keyword_hits, vector_weight)

        if rerank_model_id and fused:
            pool = fused[: max(top_k * 3, min(len(fused), self.candidates))]
            await self._fill_text(pool, files)
            tokens += await self._rerank(rerank_model_id, query, pool)
            fused = sorted(pool, key=lambda h: -h.score)
        if score_threshold:
            fused = [h for h in fused if h.score >= score_threshold]
        final = fused[:top_k]
        await self._fill_text(final, files)
        for h in final:  # a question-answer pair matched on its questions: the hit is the answer
            if h.answer is not None:
                h.question, h.text = h.text.split("\n", 1)[0], h.answer
        return SearchResult(final, tokens)

    async def _files(self, kb_ids: list[str]) -> dict[str, _FileInfo]:
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(
                        KnowledgeFileRow.id,
                        KnowledgeFileRow.kb_id,
                        KnowledgeFileRow.name,
                        KnowledgeFileRow.status,
                        KnowledgeFileRow.tags,
                        KnowledgeFileRow.user_metadata,
                        KnowledgeFileRow.chunk_count,
                        KnowledgeFileRow.term_total,
                    ).where(KnowledgeFileRow.kb_id.in_(kb_ids))
                )
            ).all()
        return {
            r.id: _FileInfo(
                r.id,
                r.kb_id,
                r.name,
                r.status,
                list(r.tags or []),
                dict(r.user_metadata or {}),
                r.chunk_count or 0,
                r.term_total or 0,
            )
            for r in rows
        }

    async def _vector(self, kbs, query, files, allowed, limit) -> list[Hit]:
        model_id = kbs[0].embedding_model_id
        [vector] = await self.llm.embed_texts([query], model_id)
        hits: list[Hit] = []
        for kb in kbs:
            name = collection_name(kb)
            kb_files = [f.id for f in files.values() if f.kb_id == kb.id]
            kb_allowed = [f for f in kb_files if f in allowed]
            excluded = [f for f in kb_files if f not in allowed]  # filtered out, or not searchable (yet)
            if not kb_allowed or not await self.collections.open(name, kb.embedding_dimensions):
                continue
            # The cheapest exact filter: none, the few excluded files, or the few allowed ones.
            fetch = limit
            if not excluded:
                expr = None
            elif len(excluded) <= min(len(kb_allowed), MAX_IN_FILTER):
                expr = "file_id not in [" + ", ".join(f'"{f}"' for f in excluded) + "]"
            elif len(kb_allowed) <= MAX_IN_FILTER:
                expr = "file_id in [" + ", ".join(f'"{f}"' for f in kb_allowed) + "]"
            else:
                expr, fetch = None, min(limit * 4, 16384)
            rows = (
                await self.vectors.search(
                    name, [list(vector)], top_k=fetch, filter=expr, output_fields=["file_id", "chunk_index", "page"]
                )
            )[0]
            best: dict[str, Hit] = {}
            for r in rows:  # a long chunk has several windows: the chunk scores as its best window
                if r.get("file_id") not in allowed:
                    continue
                cid = chunk_id(r["file_id"], int(r["chunk_index"]))
                if cid not in best or float(r["distance"]) > best[cid].vector_score:
                    best[cid] = Hit(
                        cid,
                        kb.id,
                        r["file_id"],
                        int(r["chunk_index"]),
                        int(r.get("page") or 0),
                        vector_score=float(r["distance"]),
                    )
            hits.extend(best.values())
        hits.sort(key=lambda h: -h.vector_score)
        hits = hits[:limit]
        for rank, h in enumerate(hits, 1):
            h.vector_rank = rank
        return hits

    async def _keyword(self, kbs, query, files, allowed, limit) -> list[Hit]:
        terms = await asyncio.to_thread(keyword.tokenize, query)
        if not terms:
            return []
        done = {f.id for f in files.values() if f.status == STATUS_DONE}
        n_docs = sum(files[f].chunk_count for f in done)
        avg_len = sum(files[f].term_total for f in done) / n_docs if n_docs else 0.0
        postings: dict[str, list] = {}
        async with self.db.session() as session:
            rows = await session.execute(
                select(KnowledgeTermRow.term, KnowledgeTermRow.file_id, KnowledgeTermRow.postings).where(
                    KnowledgeTermRow.kb_id.in_([kb.id for kb in kbs]), KnowledgeTermRow.term.in_(set(terms))
                )
            )
            for term, file_id, blob in rows:
                if file_id in done:
                    postings.setdefault(term, []).append((file_id, keyword.decode(blob)))
        scored = await asyncio.to_thread(keyword.score, terms, postings, n_docs, avg_len, allowed, limit)
        hits = []
        for rank, s in enumerate(scored, 1):
            f = files[s.file_id]
            hits.append(
                Hit(
                    chunk_id(s.file_id, s.chunk_index),
                    f.kb_id,
                    s.file_id,
                    s.chunk_index,
                    keyword_score=s.normalized,
                    keyword_rank=rank,
                )
            )
        return hits

    def _fuse(self, vector_hits: list[Hit], keyword_hits: list[Hit], w: float) -> list[Hit]:
        k = self.rrf_k
        merged: dict[str, Hit] = {}
        for h in vector_hits:
            merged[h.chunk_id] = h
        for h in keyword_hits:
            existing = merged.get(h.chunk_id)
            if existing is None:
                merged[h.chunk_id] = h
            else:
                existing.keyword_score, existing.keyword_rank = h.keyword_score, h.keyword_rank
        for h in merged.values():
            if self.fusion == FUSION_SCORE:
                h.score = w * h.vector_score + (1 - w) * h.keyword_score
                continue
            fused = 0.0
            if h.vector_rank is not None:
                fused += w / (k + h.vector_rank)
            if h.keyword_rank is not None:
                fused += (1 - w) / (k + h.keyword_rank)
            h.score = fused * (k + 1)
        return sorted(merged.values(), key=lambda h: (-h.score, -h.vector_score, -h.keyword_score))

    async def _fill_text(self, hits: list[Hit], files: dict[str, _FileInfo]) -> None:
        missing = [h.chunk_id for h in hits if not h.text]
        if missing:
            async with self.db.session() as session:
                rows = (
                    await session.execute(
                        select(
                            KnowledgeChunkRow.id,
                            KnowledgeChunkRow.text,
                            KnowledgeChunkRow.page,
                            KnowledgeChunkRow.start_offset,
                            KnowledgeChunkRow.end_offset,
                            KnowledgeChunkRow.answer,
                        ).where(KnowledgeChunkRow.id.in_(missing))
                    )
                ).all()
            by_id = {r.id: r for r in rows}
            for h in hits:
                row = by_id.get(h.chunk_id)
                if row is not None and not h.text:
                    h.text, h.page = row.text, row.page
                    h.start_offset, h.end_offset = row.start_offset or 0, row.end_offset or 0
                    h.answer = row.answer
        for h in hits:
            f = files.get(h.file_id)
            if f is not None:
                h.file_name, h.metadata = f.name, f.metadata

    async def _rerank(self, model_id: str, query: str, pool: list[Hit]) -> int:
        from typecase.v1 import llm_pb2

        request = llm_pb2.RerankRequest(model_id=model_id, query=query, documents=[h.text for h in pool])
        response = await self.llm.rerank(request)
        scores = {r.index: r.relevance_score for r in response.results}
        for i, h in enumerate(pool):
            h.score = float(scores.get(i, 0.0))
        return int(response.usage.total_tokens or 0)
