"""The ASGI application: route, build the request, call the target, write JSON / streams / frames.

One ``Gateway`` serves every transcoded binding plus the extra Starlette routes beside them
(``routes=`` option; the composition root adds /healthz, /metrics, /openai/v1, the console), and
``/openapi.json`` and ``/docs``. Transcoded routes are tried first; a path no binding matches goes to
the extra routes; what nothing matches is a google.rpc.Status 404 (405 with ``Allow`` when the path
matches a binding for another method). Every HTTP response, extra routes included, carries
``x-trace-id`` and ``X-Process-Time`` (seconds from request start to response headers); Starlette
handlers find the trace id in ``request.state.trace_id``.

Over 600 lines on purpose: one class, Gateway, whose methods share one request's state (route, scope, target,
trace id, the response being written) from routing to the last stream frame; the parts that stand alone (patterns,
the JSON mapping, multipart, streaming, errors, the docs page) are modules of their own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Message, Receive, Scope, Send

from . import jsontext, openapi
from .bindings import Binding, build_bindings
from .channel import ChannelTarget
from .docs_page import docs_page
from .errors import RpcFailure, invalid_argument, status_body
from .httpbody import apply_range, range_header
from .inprocess import CallScope, InProcess
from .metadata import HeaderError, IncomingMetadata, incoming_metadata, metadata_headers, new_trace_id, peer_string
from .multipart import ClientGone, json_requests, multipart_requests, read_body, too_large
from .pattern import MalformedEscape, MethodNotAllowed, NoMatch
from .pattern import Router as PathRouter
from .query import RESERVED_PARAMS, set_field_text
from .streaming import (
    NDJSON,
    SSE,
    HttpStreamWriter,
    KeepAlive,
    WebSocketWriter,
    dumps,
    watch_disconnect,
    watch_websocket,
)

log = logging.getLogger("typecase.gateway")


_CANCELLED = grpc.StatusCode.CANCELLED
_CLIENT_STREAM_JSON_TYPES = {"", "application/x-ndjson", "application/jsonl", "application/json"}
# A call (unary or server stream) still running after this long starts watching for the client going away
# (short calls never pay for the watcher task, and a stream's first token does not wait for its start).
_DISCONNECT_WATCH_DELAY = 0.05


@dataclass(frozen=True)
class GatewayOptions:
    """Options of ``create_app`` (all keyword arguments).

    max_body_bytes: largest buffered request body (unary JSON, a WebSocket first frame, one NDJSON
        request message); checked while reading, 413 beyond. Default 4 MiB.
    max_upload_bytes: largest streamed request body (multipart upload, NDJSON client stream);
        None = unlimited (the body is never held in memory). Default None.
    upload_chunk_bytes: bytes per request message of a multipart upload. Default 256 KiB.
    max_form_field_bytes: largest text field of a multipart form. Default 64 KiB.
    max_part_header_bytes: largest header line of a multipart part (400 beyond). Default 8 KiB.
    max_json_depth: deepest nesting of a JSON body, NDJSON message, WebSocket frame or JSON query value (400
        beyond). Default 100.
    sse_keepalive_seconds: idle time after which an SSE stream gets a ``: keep-alive`` comment. 15.
    default_timeout: deadline in seconds for calls that send no Grpc-Timeout header; None = none.
    routes: extra Starlette routes served beside the transcoded ones.
    lifespan: a Starlette lifespan context for the app (passed to its router).
    descriptor_set: serialized FileDescriptorSet with source info; its comments document OpenAPI.
    title, version: OpenAPI info.
    openapi_path, docs_path: where the OpenAPI document and the docs page are served ("" = off).
    www_authenticate: the WWW-Authenticate challenge sent with every 401. Default "Bearer".
    reason_http_status: HTTP status for particular google.rpc.ErrorInfo reasons, overriding the code table
        (e.g. {"FILE_TOO_LARGE": 413} where RESOURCE_EXHAUSTED would say 429). Default none.
    openapi_paths: OpenAPI path items (path -> {method: operation}) documenting `routes`, merged into the document.
    security_schemes: OpenAPI components.securitySchemes; any one of them authenticates every operation that
        does not set its own `security`. Default none.
    """

    max_body_bytes: int = 4 << 20
    max_upload_bytes: int | None = None
    upload_chunk_bytes: int = 256 << 10
    max_form_field_bytes: int = 64 << 10
    max_part_header_bytes: int = 8 << 10
    max_json_depth: int = jsontext.DEFAULT_MAX_DEPTH
    sse_keepalive_seconds: float = 15.0
    default_timeout: float | None = None
    routes: Sequence[BaseRoute] = field(default_factory=tuple)
    lifespan: Any = None
    descriptor_set: bytes | None = None
    title: str = "API"
    version: str = "0.1.0"
    openapi_path: str = "/openapi.json"
    docs_path: str = "/docs"
    www_authenticate: str = "Bearer"
    reason_http_status: Mapping[str, int] = field(default_factory=dict)
    openapi_paths: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    security_schemes: Mapping[str, dict[str, Any]] = field(default_factory=dict)


# Scope key of the list of plain functions that see each message a route outside the API sends, called by `_extra`'s
# send wrapper: a route's wrapper (traffic.py) adds one instead of wrapping send again, one coroutine hop less per
# message on /openai/v1 and /anthropic/v1.
SEND_OBSERVER = "typecase.gateway.send_observer"


def _process_time(start: float) -> bytes:
    return f"{time.perf_counter() - start:.6f}".encode()


class Gateway:
    """ASGI app transcoding HTTP/JSON, NDJSON, SSE and WebSocket to gRPC services (see package doc)."""

    def __init__(self, target: Any, services: Sequence[ServiceDescriptor], options: GatewayOptions) -> None:
        self.options = options
        self.services = tuple(services)
        self.bindings: list[Binding] = build_bindings(self.services)
        self.router: PathRouter[Binding] = PathRouter()
        for binding in self.bindings:
            if not self.router.add(binding.http_method, binding.template, binding):
                log.warning(
                    "%s %s is bound twice; %s keeps the first binding",
                    binding.http_method,
                    binding.template,
                    binding.rpc,
                )
        if isinstance(target, InProcess):
            self.target: Any = target
        elif isinstance(target, grpc.aio.Channel):
            self.target = ChannelTarget(target)
            seen = set()
            for b in self.bindings:
                if b.rpc not in seen:
                    seen.add(b.rpc)
                    self.target.prepare(b.rpc, b.request_cls, b.response_cls, b.client_streaming, b.server_streaming)
        else:
            raise TypeError("target must be a grpc.aio.Channel or typecase.server.gateway.InProcess")
        self._openapi: dict[str, Any] | None = None
        inner_routes: list[BaseRoute] = []
        if options.openapi_path:
            inner_routes.append(
                Route(options.openapi_path, self._openapi_endpoint, methods=["GET"], include_in_schema=False)
            )
        if options.docs_path:
            inner_routes.append(Route(options.docs_path, self._docs_endpoint, methods=["GET"], include_in_schema=False))
        inner_routes.extend(options.routes)
        self.inner = Router(routes=inner_routes, default=self._not_found, lifespan=options.lifespan)

    # -- OpenAPI ---------------------------------------------------------------------------------
    def openapi_document(self) -> dict[str, Any]:
        if self._openapi is None:
            self._openapi = openapi.build_document(self.bindings, self.options)
        return self._openapi

    async def _openapi_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.openapi_document())

    async def _docs_endpoint(self, request: Request) -> Response:
        return HTMLResponse(docs_page(self.options.title, self.options.openapi_path))

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.inner(scope, receive, send)

    @staticmethod
    def _raw_path(scope: Scope) -> str:
        raw = scope.get("raw_path")
        if raw:
            path = raw.decode("latin-1")
            if "?" in path:
                path = path.split("?", 1)[0]
        else:
            path = quote(scope["path"])
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        try:
            binding, params = self.router.match(scope["method"], self._raw_path(scope))
        except (NoMatch, MethodNotAllowed) as e:
            scope["typecase.gateway.route_error"] = e
            await self._extra(scope, receive, send, start)
            return
        except MalformedEscape as e:
            await self._send_error(send, invalid_argument(str(e)), [(b"x-trace-id", new_trace_id().encode())], start)
            return
        qs = scope.get("query_string")
        query = parse_qsl(qs.decode("latin-1"), keep_blank_values=True) if qs else None
        access_token = None
        if query:
            for k, v in query:
                if k == "access_token":
                    access_token = v
        try:
            incoming = incoming_metadata(scope["headers"], scope.get("client"), access_token)
        except HeaderError as e:
            await self._send_error(send, invalid_argument(str(e)), [(b"x-trace-id", new_trace_id().encode())], start)
            return
        base_headers = [(b"x-trace-id", incoming.trace_id.encode("latin-1"))]
        try:
            if binding.client_streaming:
                if binding.server_streaming:
                    raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "bidirectional streaming is not served over HTTP")
                await self._client_stream(binding, params, incoming, scope, receive, send, base_headers, start)
            elif binding.server_streaming:
                await self._server_stream(binding, params, query, incoming, scope, receive, send, base_headers, start)
            else:
                await self._unary(binding, params, query, incoming, scope, receive, send, base_headers, start)
        except RpcFailure as failure:
            await self._send_error(send, failure, base_headers, start)
        except ClientGone:
            return

    def _deadline(self, incoming: IncomingMetadata) -> float | None:
        timeout = incoming.timeout if incoming.timeout is not None else self.options.default_timeout
        return None if timeout is None else time.monotonic() + timeout

    async def _read_body(self, binding: Binding, incoming: IncomingMetadata, receive: Receive) -> bytes | None:
        if not binding.body:
            return None
        limit = self.options.max_body_bytes
        if incoming.content_length is not None and incoming.content_length > limit:
            raise too_large(limit)
        return await read_body(receive, limit)

    def _apply_last_event_id(self, binding: Binding, msg: Any, incoming: IncomingMetadata) -> None:
        fd = binding.after_seq
        if fd is None or incoming.last_event_id is None:
            return
        if fd.has_presence and msg.HasField(fd.name):
            return
        if not fd.has_presence and getattr(msg, fd.name):
            return
        try:
            set_field_text(msg, fd, incoming.last_event_id.strip(), "Last-Event-ID")
        except RpcFailure:
            pass  # not a number: the RPC still gets it as last-event-id metadata

    async def _unary(
        self,
        binding: Binding,
        params: dict[str, str],
        query: list[tuple[str, str]] | None,
        incoming: IncomingMetadata,
        scope: Scope,
        receive: Receive,
        send: Send,
        base_headers: list[tuple[bytes, bytes]],
        start: float,
    ) -> None:
        body = await self._read_body(binding, incoming, receive)
        request = binding.build_request(params, body, incoming.content_type, query, self.options.max_json_depth)
        if incoming.last_event_id is not None:
            self._apply_last_event_id(binding, request, incoming)
        call_scope = CallScope(self._deadline(incoming))
        watcher: list[asyncio.Future[Any]] = []

        def start_watching() -> None:
            watcher.append(asyncio.ensure_future(watch_disconnect(receive, lambda: call_scope.cancel(_CANCELLED))))

        timer = asyncio.get_running_loop().call_later(_DISCONNECT_WATCH_DELAY, start_watching)
        try:
            response, initial, trailing = await self.target.unary(
                binding.rpc, request, tuple(incoming.metadata), peer_string(scope.get("client")), call_scope
            )
        except RpcFailure as failure:
            if call_scope.reason == _CANCELLED:
                return  # the client is gone
            raise failure
        finally:
            timer.cancel()
            if watcher:
                watcher[0].cancel()
        await self._send_response(send, binding, response, initial, trailing, base_headers, start)

    async def _send_response(
        self,
        send: Send,
        binding: Binding,
        response: Any,
        initial: Any,
        trailing: Any,
        base_headers: list[tuple[bytes, bytes]],
        start: float,
    ) -> None:
        if binding.response_is_httpbody:
            body_msg = getattr(response, binding.response_body) if binding.response_body else response
            body = body_msg.data
            content_type = (body_msg.content_type or "application/octet-stream").encode("latin-1")
        else:
            try:
                body = dumps(binding.encode(response))
            except Exception as e:  # a response the JSON mapping cannot express
                log.exception("cannot serialize the response of %s", binding.rpc)
                raise RpcFailure(grpc.StatusCode.INTERNAL, f"failed to serialize the response: {e}") from None
            content_type = b"application/json"
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *base_headers]
        if initial or trailing:
            headers.extend(metadata_headers(initial, trailing))
        headers.append((b"x-process-time", _process_time(start)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_error(
        self, send: Send, failure: RpcFailure, base_headers: list[tuple[bytes, bytes]], start: float
    ) -> None:
        body = status_body(failure)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *base_headers]
        headers.extend(metadata_headers(failure.initial_metadata, failure.trailing_metadata))
        if failure.code == grpc.StatusCode.UNAUTHENTICATED:
            headers.append((b"www-authenticate", self.options.www_authenticate.encode("latin-1")))
        if isinstance(failure, _RouteFailure) and failure.allow:
            headers.append((b"allow", ", ".join(failure.allow).encode()))
        retry = failure.detail(error_details_pb2.RetryInfo)
        if retry is not None:  # what a browser or proxy understands without parsing details
            headers.append(
                (b"retry-after", str(max(1, math.ceil(retry.retry_delay.ToTimedelta().total_seconds()))).encode())
            )
        headers.append((b"x-process-time", _process_time(start)))
        status = failure.http_status
        if failure.http_status_override is None and self.options.reason_http_status:
            info = failure.detail(error_details_pb2.ErrorInfo)
            status = self.options.reason_http_status.get(info.reason if info else "", status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _server_stream(
        self,
        binding: Binding,
        params: dict[str, str],
        query: list[tuple[str, str]] | None,
        incoming: IncomingMetadata,
        scope: Scope,
        receive: Receive,
        send: Send,
        base_headers: list[tuple[bytes, bytes]],
        start: float,
    ) -> None:
        body = await self._read_body(binding, incoming, receive)
        request = binding.build_request(params, body, incoming.content_type, query, self.options.max_json_depth)
        if incoming.last_event_id is not None:
            self._apply_last_event_id(binding, request, incoming)
        ranged = binding.response_is_httpbody and apply_range(request, range_header(scope["headers"]))
        mode = SSE if "text/event-stream" in incoming.accept else NDJSON
        writer = HttpStreamWriter(
            send, mode, binding.encode, binding.seq_field, binding.response_is_httpbody, base_headers, start
        )
        call_scope = CallScope(self._deadline(incoming))
        watcher: list[asyncio.Future[Any]] = []

        def start_watching() -> None:
            watcher.append(asyncio.ensure_future(watch_disconnect(receive, lambda: call_scope.cancel(_CANCELLED))))

        # As for unary calls, the watcher starts after a moment: its task's creation and first step would otherwise
        # come right after the upstream request, on the time to first token; a client gone sooner is seen then.
        timer = asyncio.get_running_loop().call_later(_DISCONNECT_WATCH_DELAY, start_watching)
        keepalive = KeepAlive(writer, self.options.sse_keepalive_seconds) if mode == SSE else None
        try:
            await self.target.server_stream(
                binding.rpc,
                request,
                tuple(incoming.metadata),
                peer_string(scope.get("client")),
                call_scope,
                writer.message,
                writer.on_initial_metadata,
            )
            writer.closed = True
            await writer.finish()
        except RpcFailure as failure:
            writer.closed = True
            if call_scope.reason == _CANCELLED:
                return
            if ranged and failure.code == grpc.StatusCode.OUT_OF_RANGE:  # RFC 9110: 416 Range Not Satisfiable
                failure.http_status_override = 416
                info = failure.detail(error_details_pb2.ErrorInfo)
                if info is not None and info.metadata.get("content_range"):
                    base_headers.append((b"content-range", info.metadata["content_range"].encode("latin-1")))
            if not await writer.fail(failure):
                raise
        finally:
            timer.cancel()
            if watcher:
                watcher[0].cancel()
            if keepalive is not None:
                keepalive.cancel()

    async def _client_stream(
        self,
        binding: Binding,
        params: dict[str, str],
        incoming: IncomingMetadata,
        scope: Scope,
        receive: Receive,
        send: Send,
        base_headers: list[tuple[bytes, bytes]],
        start: float,
    ) -> None:
        call_scope = CallScope(self._deadline(incoming))
        content_type = incoming.content_type
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == "multipart/form-data":
            source = multipart_requests(
                receive,
                content_type,
                binding,
                params,
                self.options.upload_chunk_bytes,
                self.options.max_upload_bytes,
                self.options.max_form_field_bytes,
                self.options.max_part_header_bytes,
            )
        elif media_type in _CLIENT_STREAM_JSON_TYPES:
            source = json_requests(
                receive,
                binding,
                params,
                self.options.max_body_bytes,
                self.options.max_upload_bytes,
                self.options.max_json_depth,
            )
        else:
            raise RpcFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unsupported Content-Type {media_type!r}: send multipart/form-data or application/x-ndjson",
                http_status=415,
            )
        bad_body: list[RpcFailure] = []

        async def requests() -> Any:
            try:
                async for message in source:
                    yield message
            except ClientGone:
                call_scope.cancel(_CANCELLED)
            except RpcFailure as failure:
                # The body broke mid-stream: whatever the handler makes of it (an interceptor may turn it into
                # INTERNAL), the client gets the body's own error.
                bad_body.append(failure)
                raise

        try:
            response, initial, trailing = await self.target.unary(
                binding.rpc,
                None,
                tuple(incoming.metadata),
                peer_string(scope.get("client")),
                call_scope,
                requests=requests(),
            )
        except RpcFailure as failure:
            if call_scope.reason == _CANCELLED:
                return
            raise (bad_body[0] if bad_body else failure) from None
        if bad_body:
            raise bad_body[0]
        await self._send_response(send, binding, response, initial, trailing, base_headers, start)

    # -- WebSocket -------------------------------------------------------------------------------
    def _ws_binding(self, path: str) -> tuple[Binding, dict[str, str]] | None:
        """The binding a WebSocket upgrade of ``path`` serves: a server stream if any method has one."""
        methods = sorted(self.router.methods(), key=lambda m: (m != "GET", m != "POST", m))
        fallback = None
        for method in methods:
            try:
                binding, params = self.router.match(method, path)
            except (NoMatch, MethodNotAllowed, MalformedEscape):
                continue
            if binding.client_streaming:
                continue
            if binding.server_streaming:
                return binding, params
            if fallback is None:
                fallback = (binding, params)
        return fallback

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = self._ws_binding(self._raw_path(scope))
        if hit is None:
            await self.inner(scope, receive, send)
            return
        binding, params = hit
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        qs = scope.get("query_string")
        query = parse_qsl(qs.decode("latin-1"), keep_blank_values=True) if qs else []
        access_token = next((v for k, v in query if k in RESERVED_PARAMS), None)
        try:
            incoming = incoming_metadata(scope["headers"], scope.get("client"), access_token, websocket=True)
        except HeaderError:
            await send({"type": "websocket.close", "code": 1008})
            return
        accept: dict[str, Any] = {"type": "websocket.accept", "headers": [(b"x-trace-id", incoming.trace_id.encode())]}
        if incoming.ws_bearer is not None:
            accept["subprotocol"] = "bearer"
        await send(accept)
        writer = WebSocketWriter(send, binding.encode, binding.response_is_httpbody)
        first = await receive()
        if first["type"] != "websocket.receive":
            return
        data = first.get("text")
        if data is None:
            data = (first.get("bytes") or b"").decode("utf-8", "replace")
        try:
            if len(data) > self.options.max_body_bytes:
                raise too_large(self.options.max_body_bytes, "first frame")
            request = binding.request_cls()
            if data.strip():
                binding.merge_json(request, jsontext.loads(data, self.options.max_json_depth, "the first frame"))
            binding.apply_path(request, params)
            self._apply_last_event_id(binding, request, incoming)
        except RpcFailure as failure:
            await writer.fail(failure)
            return
        call_scope = CallScope(self._deadline(incoming))
        gone: list[bool] = []

        def on_cancel(disconnected: bool) -> None:
            if disconnected:
                gone.append(True)
            call_scope.cancel(_CANCELLED)

        watcher = asyncio.ensure_future(watch_websocket(receive, on_cancel))
        metadata = tuple(incoming.metadata)
        peer = peer_string(scope.get("client"))
        try:
            if binding.server_streaming:
                await self.target.server_stream(
                    binding.rpc, request, metadata, peer, call_scope, writer.message, _no_headers
                )
            else:
                response, _, _ = await self.target.unary(binding.rpc, request, metadata, peer, call_scope)
                await writer.message(response)
            await writer.finish()
        except RpcFailure as failure:
            if gone:
                return
            try:
                await writer.fail(failure)
            except OSError:
                pass
        finally:
            watcher.cancel()

    # -- everything else ---------------------------------------------------------------------------
    async def _extra(self, scope: Scope, receive: Receive, send: Send, start: float) -> None:
        trace_id = ""
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                trace_id = value.decode("latin-1")
                break
            if name == b"traceparent" and not trace_id:
                parts = value.decode("latin-1").split("-")
                if len(parts) == 4 and len(parts[1]) == 32:
                    trace_id = parts[1]
        trace_id = trace_id or new_trace_id()
        scope.setdefault("state", {})["trace_id"] = trace_id
        trace = trace_id.encode("latin-1")

        observers: list[Callable[[Message], None]] = []

        async def send_with_headers(message: Message) -> None:
            for observe in observers:
                observe(message)
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-trace-id", trace))
                headers.append((b"x-process-time", _process_time(start)))
                message = {**message, "headers": headers}
            await send(message)

        scope[SEND_OBSERVER] = observers  # a list, so that it is shared by any copy of the scope made on the way
        await self.inner(scope, receive, send_with_headers)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        error = scope.get("typecase.gateway.route_error")
        if isinstance(error, MethodNotAllowed):
            failure = _RouteFailure(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed", 405, error.allowed)
        else:
            failure = _RouteFailure(grpc.StatusCode.NOT_FOUND, "Not Found", 404, [])
        # x-trace-id and X-Process-Time are added by _extra's send wrapper.
        body = status_body(failure)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if failure.allow:
            headers.append((b"allow", ", ".join(failure.allow).encode()))
        await send({"type": "http.response.start", "status": failure.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _RouteFailure(RpcFailure):
    def __init__(self, code: grpc.StatusCode, message: str, status: int, allow: list[str]) -> None:
        super().__init__(code, message, http_status=status)
        self.allow = allow


async def _no_headers(metadata: Any) -> None:
    return None
