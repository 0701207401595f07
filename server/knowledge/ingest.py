"""The ingestion job: stored file -> parsed sections -> chunks -> embeddings + vectors -> keyword postings -> done.

Every step is idempotent so the job engine may run a file again at any time (at-least-once delivery, a worker
killed mid-file): a run first removes whatever an earlier run of the file left (chunk rows, postings, vectors),
chunk ids are deterministic ("<file id>-<index>"), and vectors are upserts. Writes to the file row are fenced on
the file's generation, so a run superseded by a reprocess or a delete cannot overwrite the newer state. A file is
searchable only once DONE; a failure removes everything the run wrote ("never a half-indexed file").

Memory stays bounded on large files: the original streams from object storage to a temp file, parsers yield
sections lazily, chunks are written to SQL in batches during parsing and read back in batches to embed and index.
Parsing itself runs in a capped child process (parse_pool.py): a hostile document fails its file, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import CursorResult

from typecase.server.infra.queue import Job, JobLost, PermanentJobError
from typecase.server.infra.sql import Database, utcnow
from typecase.server.knowledge import hand_edits, keyword, parsers
from typecase.server.knowledge.chunking import Chunk, Rule, chunk_sections, count_tokens
from typecase.server.knowledge.indexing import Collections, EmbedBatcher
from typecase.server.knowledge.model_window import EmbeddingProfile, Profiles
from typecase.server.knowledge.models import (
    FORMAT_QA_PAIRS,
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
    chunk_id,
)
from typecase.server.knowledge.parse_pool import Limits, ParsePool
from typecase.server.knowledge.parsers import qa as qa_parser

log = logging.getLogger("typecase.knowledge.ingest")

JOB_KIND = "knowledge.ingest"
PROGRESS_EVERY_SECONDS = 0.5

# gRPC codes of the reasons an ingestion can fail with (stored in KnowledgeFile.error).
REASON_CODES = {
    "PARSE_FAILED": grpc.StatusCode.FAILED_PRECONDITION,
    "UNSUPPORTED_FILE_TYPE": grpc.StatusCode.INVALID_ARGUMENT,
    "MODEL_UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
}


def collection_name(kb: KnowledgeBaseRow) -> str:
    return f"kb_{kb.id.lower()}_{kb.vector_generation}"


def file_channel(file_id: str) -> str:
    return f"knowledge:file:{file_id}"


def error_dict(reason: str, message: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    code = REASON_CODES.get(reason, grpc.StatusCode.INTERNAL)
    return {"code": code.value[0], "reason": reason, "message": message, "metadata": dict(metadata or {})}


@dataclass(frozen=True)
class IngestSettings:
    data_dir: Path
    write_batch: int = 500
    embed_batch: int = 64
    embed_wait: float = 0.02
    embed_parallel: int = 1
    keyword_block: int = 2000
    window_chars: int = 256 * 1024
    parser_options: parsers.Options = parsers.Options()
    parse_limits: Limits = Limits()
    step_delay: float = 0.0

    @classmethod
    def from_settings(cls, s) -> IngestSettings:
        return cls(
            data_dir=Path(s.data_dir),
            write_batch=s.knowledge_write_batch_size,
            embed_batch=s.knowledge_embed_batch_size,
            embed_wait=s.knowledge_embed_merge_wait_seconds,
            embed_parallel=s.knowledge_embed_parallel_calls,
            keyword_block=s.knowledge_keyword_block_chunks,
            window_chars=s.knowledge_parse_window_chars,
            parser_options=parsers.Options(
                rows_per_chunk=s.knowledge_table_rows_per_chunk,
                max_structured_bytes=s.knowledge_max_structured_bytes,
                zip_max_unpacked_bytes=s.knowledge_zip_max_unpacked_bytes,
                zip_max_ratio=s.knowledge_zip_max_ratio,
                zip_ratio_grace_bytes=s.knowledge_zip_ratio_grace_bytes,
                pdf_max_pages=s.knowledge_pdf_max_pages,
                pdf_max_stream_bytes=s.knowledge_pdf_max_stream_bytes,
                xlsx_max_cells=s.knowledge_xlsx_max_cells,
                ocr_max_pixels=s.knowledge_ocr_max_pixels,
                pdf_ocr=s.knowledge_pdf_ocr,
                qa_max_pairs=s.knowledge_qa_max_pairs,
                qa_question_max_chars=s.knowledge_qa_question_max_chars,
                qa_answer_max_chars=s.knowledge_qa_answer_max_chars,
                qa_max_similar_questions=s.knowledge_qa_max_similar_questions,
            ),
            parse_limits=Limits(
                processes=s.knowledge_parse_processes,
                memory_bytes=s.knowledge_parse_memory_bytes,
                cpu_seconds=s.knowledge_parse_cpu_seconds,
                recycle_rss_bytes=s.knowledge_parse_recycle_rss_bytes,
                ocr_memory_bytes=s.knowledge_ocr_memory_bytes,
            ),
            step_delay=s.knowledge_ingest_step_delay_seconds,
        )


def parse_failure(exc: parsers.ParseError | parsers.UnsupportedFileType) -> PermanentJobError:
    """The job error for a file that cannot be parsed; a broken limit is named in the metadata too."""
    if isinstance(exc, parsers.UnsupportedFileType):
        return PermanentJobError("UNSUPPORTED_FILE_TYPE", str(exc))
    if isinstance(exc, parsers.LimitExceeded):
        value = int(exc.value) if float(exc.value).is_integer() else exc.value
        return PermanentJobError("PARSE_FAILED", str(exc), {"limit": exc.setting, "limit_value": str(value)})
    return PermanentJobError("PARSE_FAILED", str(exc))


def vector_id(file_id: str, index: int, window: int = 0) -> str:
    """The first window's vector has the chunk's id; further windows of a long chunk add "~<n>"."""
    return chunk_id(file_id, index) if window == 0 else f"{chunk_id(file_id, index)}~{window}"


def window_records(profile: EmbeddingProfile, rows) -> list[tuple[str, Any, str]]:
    """(vector id, chunk row, text) per window of each chunk row (which has file_id or is keyed by the caller)."""
    out = []
    for r in rows:
        for w, text in enumerate(profile.windows(r.text)):
            out.append((vector_id(r.file_id, r.chunk_index, w), r, text))
    return out


@dataclass
class QAChunk(Chunk):
    answer: str = ""


def qa_text(question: str, similar: list[str]) -> str:
    """The chunk text of a pair: its questions, one a line (what is embedded and keyword-indexed)."""
    return "\n".join([question, *similar])


def qa_chunks(sections) -> Iterator[Chunk]:
    index = 0
    for section in sections:
        if not section.text:
            continue
        question, similar, answer = qa_parser.decode(section.text)
        text = qa_text(question, similar)
        yield QAChunk(index, text, 0, count_tokens(text), answer=answer)
        index += 1


def _take(iterator: Iterator[Chunk], n: int) -> list[Chunk]:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= n:
            break
    return out


class Ingestor:
    def __init__(
        self,
        db: Database,
        storage,
        vectors,
        cache,
        llm,
        settings: IngestSettings,
        collections: Collections | None = None,
        profiles: Profiles | None = None,
    ):
        self.db = db
        self.profiles = profiles or Profiles(llm)
        self.storage = storage
        self.vectors = vectors
        self.collections = collections or Collections(vectors)
        self.embedder = EmbedBatcher(llm, settings.embed_batch, settings.embed_wait, settings.embed_parallel)
        self.parse_pool = ParsePool(settings.parse_limits)
        self.cache = cache
        self.llm = llm
        self.settings = settings
        self.tmp_dir = settings.data_dir / "tmp" / "knowledge"

    # -- file-row updates ------------------------------------------------------------------------------------
    async def set_file(self, file_id: str, generation: int | None, **values: Any) -> bool:
        """Update a file row (fenced on its generation when given) and tell watchers; False when fenced out."""
        values.setdefault("update_time", utcnow())
        stmt = update(KnowledgeFileRow).where(KnowledgeFileRow.id == file_id)
        if generation is not None:
            stmt = stmt.where(KnowledgeFileRow.generation == generation)
        async with self.db.session() as session:
            result = await session.execute(stmt.values(**values).execution_options(synchronize_session=False))
        if cast(CursorResult, result).rowcount != 1:
            return False
        await self.notify(file_id)
        return True

    async def notify(self, file_id: str) -> None:
        with contextlib.suppress(Exception):  # watchers also poll; a lost notification only delays them
            await self.cache.publish(file_channel(file_id), "changed")

    # -- cleanup ---------------------------------------------------------------------------------------------
    async def purge_file_data(self, file_id: str, kb: KnowledgeBaseRow | None, keep_hand_edits: bool = False) -> None:
        """Remove a file's chunks (but those edited or added by hand, when asked), postings and vectors (not the
        file row or its original)."""
        chunks = [KnowledgeChunkRow.file_id == file_id]
        if keep_hand_edits:
            chunks.append(KnowledgeChunkRow.edited.is_(False))
        async with self.db.session() as session:
            await session.execute(delete(KnowledgeTermRow).where(KnowledgeTermRow.file_id == file_id))
            await session.execute(delete(KnowledgeChunkRow).where(*chunks))
        if kb is not None:
            name = collection_name(kb)
            if await self.collections.open(name, kb.embedding_dimensions):
                await self.vectors.delete(name, filter=f'file_id == "{file_id}"')

    # -- the job -----------------------------------------------------------------------------------------------
    async def run(self, job: Job) -> None:
        file_id, generation = job.payload["file_id"], int(job.payload["generation"])
        async with self.db.session() as session:
            file = await session.get(KnowledgeFileRow, file_id)
            kb = await session.get(KnowledgeBaseRow, file.kb_id) if file is not None else None
        if file is None or kb is None or file.generation != generation:
            return  # deleted or superseded: nothing left to do for this generation
        try:
            await self._run(job, file, kb, generation)
        except (JobLost, asyncio.CancelledError):
            await self._cleanup_if_deleted(file_id, kb)
            raise
        except PermanentJobError:
            raise
        except Exception as exc:
            if await self._cleanup_if_deleted(file_id, kb):
                raise JobLost(job.id) from exc  # deleted under us: not a failure worth retrying
            raise

    async def _cleanup_if_deleted(self, file_id: str, kb: KnowledgeBaseRow) -> bool:
        """A file deleted while we worked on it may have got vectors after its delete ran: remove them."""
        try:
            async with self.db.session() as session:
                exists = await session.get(KnowledgeFileRow, file_id)
                kb_exists = await session.get(KnowledgeBaseRow, kb.id)
            if exists is None:
                if kb_exists is None:  # the whole base went: a collection we (re)created meanwhile goes too
                    name = collection_name(kb)
                    self.collections.forget(name)
                    if await self.vectors.has_collection(name):
                        await asyncio.shield(self.vectors.drop_collection(name))
                else:
                    await asyncio.shield(self.purge_file_data(file_id, kb))
                return True
        except Exception:
            log.warning("cleanup of deleted file %s failed", file_id, exc_info=True)
        return False

    async def _run(self, job: Job, file: KnowledgeFileRow, kb: KnowledgeBaseRow, generation: int) -> None:
        started = time.perf_counter()
        file_id = file.id
        if not await self.set_file(file_id, generation, status=STATUS_PARSING, progress=0, chunk_count=0, error=None):
            raise JobLost(job.id)
        await job.progress(STATUS_PARSING, 0)
        if file.format == FORMAT_QA_PAIRS:  # hand-written pairs have no original: their rows are the source
            total, page_count, count = await self._reindex_rows(file, kb)
        else:  # delete-then-insert: whatever an earlier run left goes first, but hand edits are kept aside
            await hand_edits.set_aside(self.db, file_id)
            await self.purge_file_data(file_id, kb, keep_hand_edits=True)
            total, page_count = await self._parse_file(job, file, kb, generation)
            total, count = await hand_edits.reapply(self.db, file_id, total, by_index=kb.kind == KIND_QA)
        if total == 0 and file.format != FORMAT_QA_PAIRS:
            raise PermanentJobError("PARSE_FAILED", "the document produced no text to index")
        await self._embed(job, file, kb, generation, total)
        term_total = await self._index_keywords(job, file, kb, generation, total)
        job.check()
        done = await self.set_file(
            file_id,
            generation,
            status=STATUS_DONE,
            progress=100,
            chunk_count=count,
            term_total=term_total,
            page_count=page_count,
            error=None,
            process_time=utcnow(),
        )
        if not done:
            raise JobLost(job.id)
        async with self.db.session() as session:
            await session.execute(
                update(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb.id).values(update_time=utcnow())
            )
        log.info("file %s (%s) indexed: %d chunks in %.1fs", file_id, file.name, total, time.perf_counter() - started)

    async def _parse_file(
        self, job: Job, file: KnowledgeFileRow, kb: KnowledgeBaseRow, generation: int
    ) -> tuple[int, int]:
        rule = Rule.from_dict(file.chunking_rule or kb.chunking_rule)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        local = self.tmp_dir / f"{file.id}-{uuid.uuid4().hex[:8]}{parsers.BY_NAME[file.format].extensions[0]}"
        try:
            await self._download(file.object_key, local)
            return await self._parse_and_store(job, file, kb, generation, local, rule)
        finally:
            local.unlink(missing_ok=True)

    async def _reindex_rows(self, file: KnowledgeFileRow, kb: KnowledgeBaseRow) -> tuple[int, int, int]:
        """Drop a file's postings and vectors but keep its chunk rows: (index span, pages, chunks) to rebuild."""
        async with self.db.session() as session:
            await session.execute(delete(KnowledgeTermRow).where(KnowledgeTermRow.file_id == file.id))
            last, count = (
                await session.execute(
                    select(func.max(KnowledgeChunkRow.chunk_index), func.count()).where(
                        KnowledgeChunkRow.file_id == file.id
                    )
                )
            ).one()
        name = collection_name(kb)
        if await self.collections.open(name, kb.embedding_dimensions):
            await self.vectors.delete(name, filter=f'file_id == "{file.id}"')
        return (0 if last is None else int(last) + 1), 0, int(count or 0)

    async def _download(self, key: str, local: Path) -> None:
        f = await asyncio.to_thread(open, local, "wb")
        try:
            async for piece in await self.storage.get(key):
                await asyncio.to_thread(f.write, piece)
        finally:
            await asyncio.to_thread(f.close)

    async def _parse_and_store(
        self, job: Job, file: KnowledgeFileRow, kb: KnowledgeBaseRow, generation: int, local: Path, rule: Rule
    ) -> tuple[int, int]:
        options = self.settings.parser_options
        if kb.kind == KIND_QA:  # a table of question-answer pairs, one chunk each (parsers/qa.py)
            options = dataclasses.replace(options, qa=True)
        try:
            async with self.parse_pool.parse(local, file.format, options) as parsed:
                return await self._store_chunks(job, file, kb, generation, parsed, rule), parsed.page_count
        except (parsers.UnsupportedFileType, parsers.ParseError) as exc:
            raise parse_failure(exc) from exc

    async def _store_chunks(
        self,
        job: Job,
        file: KnowledgeFileRow,
        kb: KnowledgeBaseRow,
        generation: int,
        parsed: parsers.Parsed,
        rule: Rule,
    ) -> int:
        fractions: list[float] = []
        if kb.kind == KIND_QA:
            chunks = qa_chunks(parsed.sections)
        else:
            chunks = chunk_sections(parsed.sections, rule, self.settings.window_chars, fractions)
        total, last = 0, time.monotonic()
        while True:
            try:
                batch = await asyncio.to_thread(_take, chunks, self.settings.write_batch)
            except parsers.ParseError:
                raise
            except (UnicodeError, ValueError) as exc:
                raise PermanentJobError("PARSE_FAILED", f"cannot parse the file: {exc}") from exc
            if not batch:
                break
            job.check()
            async with self.db.session() as session:
                await session.execute(
                    insert(KnowledgeChunkRow),
                    [
                        {
                            "id": chunk_id(file.id, c.index),
                            "kb_id": kb.id,
                            "file_id": file.id,
                            "chunk_index": c.index,
                            "page": c.page,
                            "text": c.text,
                            "token_count": c.token_count,
                            "start_offset": c.start,
                            "end_offset": c.end,
                            "answer": c.answer if isinstance(c, QAChunk) else None,
                        }
                        for c in batch
                    ],
                )
            total += len(batch)
            if time.monotonic() - last > PROGRESS_EVERY_SECONDS and fractions:
                last = time.monotonic()
                await self._progress(job, file.id, generation, STATUS_PARSING, fractions[-1], chunk_count=total)
        return total

    async def _progress(self, job: Job, file_id: str, generation: int, status: str, fraction: float, **extra) -> None:
        percent = max(0, min(99, int(fraction * 100)))
        await job.progress(status, percent)
        if not await self.set_file(file_id, generation, status=status, progress=percent, **extra):
            raise JobLost(job.id)

    async def _embed(self, job: Job, file: KnowledgeFileRow, kb: KnowledgeBaseRow, generation: int, total: int) -> None:
        await self._progress(job, file.id, generation, STATUS_EMBEDDING, 0, chunk_count=total)
        if self.llm is None:
            raise RuntimeError("no embedding service is configured")
        dim = await self.llm.embedding_dimensions(kb.embedding_model_id)
        name = collection_name(kb)
        await self.collections.create(name, dim)
        if kb.embedding_dimensions != dim:
            async with self.db.session() as session:
                await session.execute(
                    update(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb.id).values(embedding_dimensions=dim)
                )
        meta = {"tags": list(file.tags or []), "metadata": dict(file.user_metadata or {})}
        done, last = 0, time.monotonic()
        step = max(self.settings.embed_batch, 1)
        write = max(self.settings.write_batch, step)
        for start in range(0, total, write):
            async with self.db.session() as session:
                rows = (
                    await session.execute(
                        select(
                            KnowledgeChunkRow.file_id,
                            KnowledgeChunkRow.chunk_index,
                            KnowledgeChunkRow.page,
                            KnowledgeChunkRow.text,
                        )
                        .where(
                            KnowledgeChunkRow.file_id == file.id,
                            KnowledgeChunkRow.chunk_index >= start,
                            KnowledgeChunkRow.chunk_index < start + write,
                        )
                        .order_by(KnowledgeChunkRow.chunk_index)
                    )
                ).all()
            profile = await self.profiles.get(kb.embedding_model_id)
            for offset in range(0, len(rows), step):
                part = rows[offset : offset + step]
                records = await asyncio.to_thread(window_records, profile, part)
                vectors = await self.embedder.embed([text for _, _, text in records], kb.embedding_model_id)
                job.check()
                await self.vectors.upsert(
                    name,
                    [
                        {
                            "id": vector_id,
                            "vector": list(v),
                            "kb_id": kb.id,
                            "file_id": file.id,
                            "chunk_index": r.chunk_index,
                            "page": r.page,
                            "metadata": meta,
                        }
                        for (vector_id, r, _), v in zip(records, vectors, strict=True)
                    ],
                )
                await self.collections.wrote(name, len(part))
                done += len(part)
                if self.settings.step_delay:
                    await asyncio.sleep(self.settings.step_delay)
                if time.monotonic() - last > PROGRESS_EVERY_SECONDS or self.settings.step_delay:
                    last = time.monotonic()
                    await self._progress(job, file.id, generation, STATUS_EMBEDDING, done / total)
        self.collections.settle(name)

    async def _index_keywords(
        self, job: Job, file: KnowledgeFileRow, kb: KnowledgeBaseRow, generation: int, total: int
    ) -> int:
        await self._progress(job, file.id, generation, STATUS_INDEXING, 0)
        term_total = 0
        block_size = self.settings.keyword_block
        for block, start in enumerate(range(0, total, block_size)):
            async with self.db.session() as session:
                rows = (
                    await session.execute(
                        select(KnowledgeChunkRow.chunk_index, KnowledgeChunkRow.text).where(
                            KnowledgeChunkRow.file_id == file.id,
                            KnowledgeChunkRow.chunk_index >= start,
                            KnowledgeChunkRow.chunk_index < start + block_size,
                        )
                    )
                ).all()

            def build(rows=rows) -> tuple[list[tuple[str, bytes]], int]:
                builder = keyword.PostingsBuilder()
                lengths = sum(builder.add(r.chunk_index, r.text) for r in rows)
                return list(builder.rows()), lengths

            postings, lengths = await asyncio.to_thread(build)
            term_total += lengths
            job.check()
            for i in range(0, len(postings), self.settings.write_batch * 4):
                async with self.db.session() as session:
                    await session.execute(
                        insert(KnowledgeTermRow),
                        [
                            {"file_id": file.id, "block": block, "term": term, "kb_id": kb.id, "postings": blob}
                            for term, blob in postings[i : i + self.settings.write_batch * 4]
                        ],
                    )
            await self._progress(job, file.id, generation, STATUS_INDEXING, min(start + block_size, total) / total)
        return term_total

    # -- engine hooks ------------------------------------------------------------------------------------------
    async def on_failed(self, job: Job, error: dict[str, Any]) -> None:
        """The job failed for good: leave the file FAILED with the reason and nothing of it indexed."""
        file_id, generation = job.payload["file_id"], int(job.payload["generation"])
        async with self.db.session() as session:
            file = await session.get(KnowledgeFileRow, file_id)
            kb = await session.get(KnowledgeBaseRow, file.kb_id) if file is not None else None
        if file is None or file.generation != generation:
            return
        await self.purge_file_data(file_id, kb)
        await self.set_file(
            file_id,
            generation,
            status=STATUS_FAILED,
            progress=0,
            chunk_count=0,
            term_total=0,
            error=error_dict(
                error.get("reason", "INTERNAL"), error.get("message", "ingestion failed"), error.get("metadata")
            ),
            process_time=utcnow(),
        )
        log.warning("file %s failed: %s", file_id, error.get("message"))

    async def on_retry(self, job: Job, error: dict[str, Any]) -> None:
        file_id, generation = job.payload["file_id"], int(job.payload["generation"])
        await self.set_file(
            file_id,
            generation,
            status=STATUS_QUEUED,
            progress=0,
            error=error_dict(
                error.get("reason", "INTERNAL"),
                f"attempt {job.attempt} of {job.max_attempts} failed, will retry: {error.get('message')}",
            ),
        )


async def kb_stats(db: Database, kb_ids: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per base: (done files' chunks, their total term length, total stored bytes of all files)."""
    async with db.session() as session:
        rows = (
            await session.execute(
                select(
                    KnowledgeFileRow.kb_id,
                    KnowledgeFileRow.status,
                    func.sum(KnowledgeFileRow.chunk_count),
                    func.sum(KnowledgeFileRow.term_total),
                    func.sum(KnowledgeFileRow.size_bytes),
                )
                .where(KnowledgeFileRow.kb_id.in_(kb_ids))
                .group_by(KnowledgeFileRow.kb_id, KnowledgeFileRow.status)
            )
        ).all()
    out: dict[str, list[int]] = {k: [0, 0, 0] for k in kb_ids}
    for kb_id, status, chunks, terms, size in rows:
        if status == STATUS_DONE:
            out[kb_id][0] += int(chunks or 0)
            out[kb_id][1] += int(terms or 0)
        out[kb_id][2] += int(size or 0)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}
