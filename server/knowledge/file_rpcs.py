"""The file RPCs of KnowledgeService (a mixin on core.py's KnowledgeCore): upload, add-text, list, get, delete,
reprocess, watch, download, and chunk previews (which parse a stored file the way ingestion would)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

import grpc
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from typecase.server.infra import sharing
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.infra.storage import ObjectTooLarge
from typecase.server.knowledge import parsers
from typecase.server.knowledge.checks import (
    clean_metadata,
    clean_name,
    clean_tags,
    duplicate,
    file_too_large,
    unsupported,
)
from typecase.server.knowledge.chunking import Rule, Section, chunk_sections
from typecase.server.knowledge.convert import PROTO_TO_STATUS, STATUS_TO_PROTO, duration, error_status, file_message
from typecase.server.knowledge.core import KnowledgeCore, job_key
from typecase.server.knowledge.ingest import (
    collection_name,
    file_channel,
    parse_failure,
)
from typecase.server.knowledge.models import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_QUEUED,
    KnowledgeBaseRow,
    KnowledgeChunkRow,
    KnowledgeFileRow,
    KnowledgeTermRow,
)
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.downloads import object_body
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.v1 import knowledge_pb2 as pb

log = logging.getLogger("typecase.knowledge")

TEXT_FORMATS = {"txt", "md", "html", "csv", "json"}
DEFAULT_PREVIEW_CHUNKS, MAX_PREVIEW_CHUNKS = 50, 500


class FileRPCs(KnowledgeCore):
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
        await self.queue.delete(job_key(kb.id, row.id))
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
            assert file is not None  # looked up above for this source
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
            elapsed=duration(time.perf_counter() - started),
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


def _collect(chunks, max_chunks: int):
    kept, total = [], 0
    for c in chunks:
        if total < max_chunks:
            kept.append(c)
        total += 1
    return kept, total
