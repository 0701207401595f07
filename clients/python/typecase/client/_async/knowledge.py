"""`client.knowledge`: knowledge bases, chunked file uploads with progress, processing watches and search
(KnowledgeService)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING

import grpc

from typecase.client import _requests as rq
from typecase.client._async.resource import AsyncResource
from typecase.client._io import async_run_blocking, async_sleep
from typecase.client._upload import (
    DEFAULT_CHUNK_BYTES,
    Opened,
    Progress,
    ProgressCallback,
    UploadSource,
    check_chunk_size,
    first_request,
    open_source,
)
from typecase.client.errors import TypecaseError, Unavailable, from_rpc_error, from_status, status_code
from typecase.client.events import Cursor
from typecase.v1 import knowledge_pb2, knowledge_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient


class AsyncKnowledge(AsyncResource):
    """Knowledge bases, file uploads and search (KnowledgeService)."""

    def __init__(self, client: AsyncClient, stub: knowledge_pb2_grpc.KnowledgeServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    async def create_knowledge_base(self, name: str, *, description: str = "", embedding_model_id: str = "",
                                    chunking_rule: knowledge_pb2.ChunkingRule | None = None, kind: str = "documents",
                                    timeout: float | None = None) -> knowledge_pb2.KnowledgeBase:
        """`kind`: "documents" (files cut into chunks) or "qa" (question-answer pairs, matched on the question)."""
        request = rq.create_knowledge_base(name, description, embedding_model_id, chunking_rule, kind)
        response = await self._unary(self.stub.CreateKnowledgeBase, request,
                                     knowledge_pb2.CreateKnowledgeBaseResponse, timeout)
        return response.knowledge_base

    async def download_file(self, file_id: str, *, byte_range: str = "", timeout: float | None = None) -> bytes:
        """A file's original bytes, or one range of them ("bytes=0-99", "bytes=100-", "bytes=-50")."""
        request = knowledge_pb2.DownloadFileRequest(file_id=file_id, range=byte_range, redirect=False)
        return b"".join([body.data async for body in self._stream(self.stub.DownloadFile(request, timeout=timeout))])

    async def get_knowledge_base(self, kb_id: str, *, timeout: float | None = None) -> knowledge_pb2.KnowledgeBase:
        request = knowledge_pb2.GetKnowledgeBaseRequest(kb_id=kb_id)
        response = await self._unary(self.stub.GetKnowledgeBase, request, knowledge_pb2.GetKnowledgeBaseResponse,
                                     timeout)
        return response.knowledge_base

    def list_knowledge_bases(self, *, keyword: str = "", page_size: int = 100,
                             timeout: float | None = None) -> AsyncIterator[knowledge_pb2.KnowledgeBase]:
        request = knowledge_pb2.ListKnowledgeBasesRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListKnowledgeBases, request, "knowledge_bases", timeout)

    async def delete_knowledge_base(self, kb_id: str, *, timeout: float | None = None) -> None:
        request = knowledge_pb2.DeleteKnowledgeBaseRequest(kb_id=kb_id)
        await self._unary(self.stub.DeleteKnowledgeBase, request, knowledge_pb2.DeleteKnowledgeBaseResponse, timeout)

    async def upload(self, kb_id: str, source: UploadSource, *, file_name: str | None = None,
                     content_type: str | None = None, tags: Iterable[str] = (), metadata: rq.Struct | None = None,
                     chunking_rule: knowledge_pb2.ChunkingRule | None = None, allow_duplicate: bool = False,
                     chunk_size: int = DEFAULT_CHUNK_BYTES, progress: ProgressCallback | None = None,
                     timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        """Upload a file (a path, bytes or a binary file object) in chunks of at most `chunk_size` bytes (max
        1 MiB) and queue it for processing; returns the stored file (status QUEUED). `progress` is called
        with an UploadProgress as each chunk is handed to the transport (by Client from gRPC's thread, by
        AsyncClient in the event loop), last at 100%; an exception it raises cancels the upload and is re-raised
        here. See `wait_until_done`."""
        check_chunk_size(chunk_size)
        opened = await async_run_blocking(open_source, source, file_name)
        tracker = Progress(opened, progress)
        try:
            first = first_request(kb_id, opened, content_type=content_type, chunking_rule=chunking_rule, tags=tags,
                                  metadata=metadata, allow_duplicate=allow_duplicate)
            response = await self._client.call(self.stub.UploadFile,
                                               _upload_messages(first, opened, chunk_size, tracker), timeout=timeout)
        except BaseException:  # grpcio reports the callback's failure as Cancelled, grpc.aio as CancelledError
            if tracker.error is not None:
                raise tracker.error from None
            raise
        finally:
            await async_run_blocking(opened.close)
        assert isinstance(response, knowledge_pb2.UploadFileResponse)
        return response.file

    async def add_text(self, kb_id: str, name: str, text: str, *, tags: Iterable[str] = (),
                       metadata: rq.Struct | None = None, chunking_rule: knowledge_pb2.ChunkingRule | None = None,
                       timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        """Add a typed or pasted document (".txt" is appended to a name without an extension)."""
        request = rq.add_text(kb_id, name, text, chunking_rule, tags, metadata)
        return (await self._unary(self.stub.AddTextFile, request, knowledge_pb2.AddTextFileResponse, timeout)).file

    async def create_qa_pair(self, kb_id: str, question: str, answer: str, *, similar_questions: Iterable[str] = (),
                             timeout: float | None = None) -> knowledge_pb2.QAPair:
        request = knowledge_pb2.CreateQAPairRequest(kb_id=kb_id, qa_pair=knowledge_pb2.QAPair(
            question=question, answer=answer, similar_questions=list(similar_questions)))
        return (await self._unary(self.stub.CreateQAPair, request, knowledge_pb2.CreateQAPairResponse,
                                  timeout)).qa_pair

    def list_qa_pairs(self, kb_id: str, *, keyword: str = "", file_id: str = "", page_size: int = 100,
                      timeout: float | None = None) -> AsyncIterator[knowledge_pb2.QAPair]:
        request = knowledge_pb2.ListQAPairsRequest(kb_id=kb_id, keyword=keyword, file_id=file_id, page_size=page_size)
        return self._pages(self.stub.ListQAPairs, request, "qa_pairs", timeout)

    async def delete_qa_pair(self, pair_id: str, *, timeout: float | None = None) -> None:
        request = knowledge_pb2.DeleteQAPairRequest(pair_id=pair_id)
        await self._unary(self.stub.DeleteQAPair, request, knowledge_pb2.DeleteQAPairResponse, timeout)

    async def get_file(self, file_id: str, *, timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        request = knowledge_pb2.GetFileRequest(file_id=file_id)
        return (await self._unary(self.stub.GetFile, request, knowledge_pb2.GetFileResponse, timeout)).file

    def list_files(self, kb_id: str, *, keyword: str = "", tag: str = "", page_size: int = 100,
                   timeout: float | None = None) -> AsyncIterator[knowledge_pb2.KnowledgeFile]:
        request = knowledge_pb2.ListFilesRequest(kb_id=kb_id, keyword=keyword, tag=tag, page_size=page_size)
        return self._pages(self.stub.ListFiles, request, "files", timeout)

    async def delete_file(self, file_id: str, *, timeout: float | None = None) -> None:
        request = knowledge_pb2.DeleteFileRequest(file_id=file_id)
        await self._unary(self.stub.DeleteFile, request, knowledge_pb2.DeleteFileResponse, timeout)

    async def reprocess_file(self, file_id: str, *, chunking_rule: knowledge_pb2.ChunkingRule | None = None,
                             timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        request = knowledge_pb2.ReprocessFileRequest(file_id=file_id, chunking_rule=chunking_rule)
        return (await self._unary(self.stub.ReprocessFile, request, knowledge_pb2.ReprocessFileResponse,
                                  timeout)).file

    def watch(self, file_id: str, *, timeout: float | None = None) -> AsyncIterator[knowledge_pb2.WatchFileResponse]:
        """The file's processing progress: its current state, then every change, until DONE or FAILED."""
        request = knowledge_pb2.WatchFileRequest(file_id=file_id)
        return self._stream(self.stub.WatchFile(request, timeout=timeout))

    async def wait_until_done(self, file_id: str, *, timeout: float | None = None,
                              on_update: Callable[[knowledge_pb2.WatchFileResponse], None] | None = None,
                              ) -> knowledge_pb2.KnowledgeFile:
        """Wait (watching with WatchFile, re-watching after a dropped connection) until the file is searchable
        and return it; raises the file's error when processing failed, DeadlineExceeded after `timeout`."""
        cursor = Cursor(stream_id=file_id, deadline=time.monotonic() + timeout if timeout is not None else None)
        while True:
            code: grpc.StatusCode | None = None
            failure: TypecaseError | None = None
            call = self.stub.WatchFile(knowledge_pb2.WatchFileRequest(file_id=file_id), timeout=cursor.remaining())
            try:
                async for update in call:
                    cursor.failures = 0
                    if on_update is not None:
                        on_update(update)
                    if update.status == knowledge_pb2.FILE_STATUS_DONE:
                        return await self.get_file(file_id, timeout=cursor.remaining())
                    if update.status == knowledge_pb2.FILE_STATUS_FAILED:
                        raise from_status(update.error, default_message=f"processing file {file_id} failed")
            except grpc.RpcError as error:
                code, failure = status_code(error), from_rpc_error(error)
            finally:
                call.cancel()
            delay = cursor.reconnect_delay(code, self._client.settings.reconnect, restartable=True)
            if delay is None:
                raise failure or Unavailable("the file watch ended before the file was processed")
            await async_sleep(delay)

    async def search(self, kb_ids: str | Iterable[str], query: str, *, top_k: int = 0, mode: str | None = None,
                     score_threshold: float = 0.0, vector_weight: float | None = None, file_ids: Iterable[str] = (),
                     tags: Iterable[str] = (), metadata: rq.Struct | None = None, rerank_model_id: str = "",
                     timeout: float | None = None) -> knowledge_pb2.SearchResponse:
        """Search one or more knowledge bases; `.hits` are best first. `mode`: "hybrid" (default), "vector"
        or "keyword"; `top_k` 0 means the server's default (5)."""
        request = rq.search(kb_ids, query, top_k=top_k, mode=mode, score_threshold=score_threshold,
                            vector_weight=vector_weight, file_ids=file_ids, tags=tags, metadata=metadata,
                            rerank_model_id=rerank_model_id)
        return await self._unary(self.stub.Search, request, knowledge_pb2.SearchResponse, timeout)


async def _upload_messages(first: knowledge_pb2.UploadFileRequest, opened: Opened, chunk_size: int,
                           tracker: Progress) -> AsyncIterator[knowledge_pb2.UploadFileRequest]:
    tracker.add(0)
    first.chunk = await async_run_blocking(opened.reader.read, chunk_size)
    yield first
    tracker.add(len(first.chunk))
    while chunk := await async_run_blocking(opened.reader.read, chunk_size):
        yield knowledge_pb2.UploadFileRequest(chunk=chunk)
        tracker.add(len(chunk))
