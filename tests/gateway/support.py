"""Test support: compile the test protos, the test servicers, a recording interceptor, harnesses."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
from google.protobuf import empty_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from typecase.server.gateway import InProcess, create_app

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "tests" / "protos"


def proto_includes() -> list[str]:
    import google.api.http_pb2
    import grpc_tools

    includes = [str(PROTOS)]
    vendored = ROOT / "proto"
    if vendored.is_dir():
        includes.append(str(vendored))
    site = Path(google.api.http_pb2.__file__).resolve().parents[2]
    if (site / "google" / "api" / "http.proto").exists():
        includes.append(str(site))
    includes.append(str(Path(grpc_tools.__file__).parent / "_proto"))
    return includes


def compile_protos(out: Path) -> SimpleNamespace:
    """Generate gwtest.v1 into ``out`` (at test time; nothing generated is committed) and import it."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    descriptor_set = out / "gwtest.pb"
    args = [
        "protoc",
        *(f"-I{p}" for p in proto_includes()),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={descriptor_set}",
        "--include_source_info",
        "gwtest/v1/library.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed for tests/protos")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    pb2 = importlib.import_module("gwtest.v1.library_pb2")
    pb2_grpc = importlib.import_module("gwtest.v1.library_pb2_grpc")
    return SimpleNamespace(
        pb2=pb2,
        grpc=pb2_grpc,
        descriptor_set=descriptor_set.read_bytes(),
        services=[pb2.DESCRIPTOR.services_by_name["LibraryService"], pb2.DESCRIPTOR.services_by_name["LibraryStreams"]],
    )


class State:
    """What the servicers saw, for assertions."""

    def __init__(self) -> None:
        self.cancelled: dict[str, float] = {}  # token -> monotonic time the handler saw cancellation
        self.context_cancelled: dict[str, bool] = {}
        self.done_callbacks: dict[str, float] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.uploads: list[list[int]] = []
        self.bounded = False  # cap counts and sleeps (for generated requests, e.g. schemathesis)

    def event(self, token: str) -> asyncio.Event:
        return self.started.setdefault(token, asyncio.Event())


def _status(code_name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code_name, grpc.StatusCode.INVALID_ARGUMENT)


def make_servicers(pb: SimpleNamespace, state: State) -> tuple[Any, Any]:
    pb2, pb2_grpc = pb.pb2, pb.grpc

    def book_for(name: str) -> Any:
        return pb2.Book(
            name=name,
            title=f"Title of {name}",
            page_count=2**40,
            genre=pb2.FICTION,
            published=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5_000_000),
            tags=["a", "b"],
            labels={"k": "v"},
            author=pb2.Author(display_name="Ann", born=1970),
            cover=b"\x00\x01\xfe",
            rating=4.5,
            available=True,
        )

    class Library(pb2_grpc.LibraryServiceServicer):
        async def GetBook(self, request, context):
            if request.name.endswith("missing"):
                await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            return book_for(request.name)

        async def CreateBook(self, request, context):
            book = pb2.Book()
            book.CopyFrom(request.book)
            if request.book_id:
                book.name = f"{request.parent}/books/{request.book_id}"
            return book

        async def UpdateBook(self, request, context):
            book = pb2.Book()
            book.CopyFrom(request.book)
            book.tags[:] = list(request.update_mask.paths)
            return book

        async def DeleteBook(self, request, context):
            if request.name.endswith("locked") and not request.force:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "book is locked")
            return empty_pb2.Empty()

        async def ListBooks(self, request, context):
            return pb2.ListBooksResponse(
                books=[book_for(f"{request.parent}/books/1")], next_page_token="n", echo=request
            )

        async def MoveBook(self, request, context):
            return request

        async def GetCover(self, request, context):
            from google.api import httpbody_pb2

            return httpbody_pb2.HttpBody(content_type="image/png", data=b"\x89PNG" + request.name.encode())

        async def PutCover(self, request, context):
            return request

        async def EchoRaw(self, request, context):
            from google.api import httpbody_pb2

            return httpbody_pb2.HttpBody(
                content_type=request.content_type or "application/octet-stream", data=request.data
            )

        async def GetAuthor(self, request, context):
            return book_for(request.name)

        async def Resolve(self, request, context):
            return request

        async def EchoEverything(self, request, context):
            return request

        async def Fail(self, request, context):
            code = _status(request.code or "INTERNAL")
            if request.crash:
                raise ValueError(request.message or "boom")
            if request.set_code:
                context.set_code(code)
                context.set_details(request.message)
                return empty_pb2.Empty()
            trailing = ()
            if request.rich:
                status = status_pb2.Status(code=code.value[0], message=request.message)
                info = error_details_pb2.ErrorInfo(reason="BOOK_LOCKED", domain="gwtest", metadata={"book": "b1"})
                bad = error_details_pb2.BadRequest(
                    field_violations=[error_details_pb2.BadRequest.FieldViolation(field="title", description="empty")]
                )
                status.details.add().Pack(info)
                status.details.add().Pack(bad)
                trailing = (("grpc-status-details-bin", status.SerializeToString()), ("x-extra", "1"))
            await context.abort(code, request.message, trailing)

        async def Inspect(self, request, context):
            if request.initial:
                await context.send_initial_metadata(tuple(sorted(request.initial.items())))
            if request.trailing:
                context.set_trailing_metadata(tuple(sorted(request.trailing.items())))
            import base64

            entries = []
            for key, value in context.invocation_metadata():
                if isinstance(value, bytes):
                    value = base64.b64encode(value).decode()
                entries.append(pb2.MetadataEntry(key=key, value=value))
            remaining = context.time_remaining()
            return pb2.InspectResponse(
                metadata=entries,
                peer=context.peer(),
                has_deadline=remaining is not None and remaining < 3600 * 24,
                time_remaining=remaining if remaining is not None and remaining < 3600 * 24 else 0,
            )

        async def Sleep(self, request, context):
            token = request.token
            context.add_done_callback(lambda ctx: state.done_callbacks.__setitem__(token, time.monotonic()))
            state.event(token).set()
            try:
                await asyncio.sleep(request.millis / 1000)
            except asyncio.CancelledError:
                state.cancelled[token] = time.monotonic()
                state.context_cancelled[token] = context.cancelled()
                raise
            return request

    class Streams(pb2_grpc.LibraryStreamsServicer):
        async def WatchBook(self, request, context):
            token = request.token
            state.event(token).set()
            count, interval = request.count, request.interval_ms
            if state.bounded:
                count, interval = min(count, 20), min(interval, 5)
            try:
                for i in range(count):
                    if request.fail_code and i == request.fail_after:
                        await context.abort(_status(request.fail_code), f"failed after {i}")
                    yield pb2.BookEvent(seq=request.after_seq + 1 + i, kind="update", book=pb2.Book(name=request.name))
                    if interval:
                        await asyncio.sleep(interval / 1000)
                if request.fail_code and request.fail_after >= count:
                    await context.abort(_status(request.fail_code), f"failed after {count}")
            except asyncio.CancelledError:
                state.cancelled[token] = time.monotonic()
                state.context_cancelled[token] = context.cancelled()
                raise

        WatchBooks = WatchBook

        async def WriteEvents(self, request, context):
            for i in range(min(request.count, 20) if state.bounded else request.count):
                await context.write(pb2.BookEvent(seq=i + 1, kind="written"))

        async def StreamRaw(self, request, context):
            from google.api import httpbody_pb2

            for i in range(min(request.count, 20) if state.bounded else request.count):
                yield httpbody_pb2.HttpBody(content_type="text/plain", data=f"line {i}\n".encode())

        async def UploadFile(self, request_iterator, context):
            out = pb2.UploadFileResponse()
            digest = hashlib.sha256()
            sizes = []
            first = True
            async for req in request_iterator:
                if first:
                    out.parent, out.file_name, out.content_type = req.parent, req.file_name, req.content_type
                    out.description = req.description
                    out.labels.update(req.labels)
                    first = False
                digest.update(req.data)
                sizes.append(len(req.data))
                out.size += len(req.data)
                out.messages += 1
            out.sha256 = digest.hexdigest()
            state.uploads.append(sizes)
            return out

    return Library(), Streams()


class RecordingInterceptor(grpc.aio.ServerInterceptor):
    """Records (method, metadata) and denies calls carrying ``x-deny`` metadata."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[tuple[str, Any], ...]]] = []

    async def intercept_service(self, continuation, handler_call_details):
        md = tuple((k, v) for k, v in handler_call_details.invocation_metadata)
        self.calls.append((handler_call_details.method, md))
        handler = await continuation(handler_call_details)
        if any(k == "x-deny" for k, _ in md):

            async def deny(request, context):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied by interceptor")

            async def deny_stream(request, context):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied by interceptor")
                yield  # pragma: no cover

            if handler is not None and handler.response_streaming:
                return grpc.unary_stream_rpc_method_handler(deny_stream)
            return grpc.unary_unary_rpc_method_handler(deny)
        return handler


class Harness:
    """A real grpc.aio server with the test servicers, and the gateway on the chosen target."""

    def __init__(self, pb: SimpleNamespace, mode: str, interceptors: tuple = (), **options: Any) -> None:
        self.pb = pb
        self.mode = mode
        self.interceptors = interceptors
        self.options = options
        self.state = State()

    async def __aenter__(self) -> Harness:
        pb = self.pb
        lib, streams = make_servicers(pb, self.state)
        self.server = grpc.aio.server(interceptors=self.interceptors)
        pb.grpc.add_LibraryServiceServicer_to_server(lib, self.server)
        pb.grpc.add_LibraryStreamsServicer_to_server(streams, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.library = pb.grpc.LibraryServiceStub(self.channel)
        self.streams = pb.grpc.LibraryStreamsStub(self.channel)
        if self.mode == "inprocess":
            target = InProcess(self.interceptors)
            pb.grpc.add_LibraryServiceServicer_to_server(lib, target)
            pb.grpc.add_LibraryStreamsServicer_to_server(streams, target)
        else:
            target = self.channel
        self.app = create_app(target, pb.services, **self.options)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=("10.1.2.3", 4567)), base_url="http://gw.test"
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()
        await self.channel.close()
        await self.server.stop(None)


@contextlib.asynccontextmanager
async def serve(app: Any):
    """Run ``app`` under uvicorn on a free loopback port in this event loop; yields the base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def code_names() -> list[str]:
    return [c.name for c in grpc.StatusCode if c != grpc.StatusCode.OK]


__all__ = [
    "Harness",
    "RecordingInterceptor",
    "State",
    "code_names",
    "compile_protos",
    "make_servicers",
    "serve",
    "code_pb2",
    "os",
]
