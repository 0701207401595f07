"""What the vendor-compatible surfaces (/openai/v1, /anthropic/v1) share: the caller's credential and identity, the
JSON body under the size limit, the HTTP status of a TypecaseError (the gateway's table, not a copy of it), and the
model name to report.

These surfaces are thin over LLMService's Python API. They authenticate through a `CallerAuth` that app.py builds
over the auth domain (the same checks the gRPC interceptor applies: failed-credential budget per client address,
the key's owner, the per-key rate limits), so compat never imports a domain it does not serve.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import grpc
from starlette.requests import Request
from starlette.responses import Response

from typecase.server.gateway.errors import http_status
from typecase.server.gateway.jsontext import compact
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.server.rpc.principal import Principal

log = logging.getLogger("typecase.compat")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStream(Response):
    """A text/event-stream answer written chunk by chunk, stopped when the client goes away: what Starlette's
    StreamingResponse does over HTTP/1.1, without the anyio task group it starts between the first token and its
    write (uvicorn's HTTP scope is ASGI 2.3). The chunks are written from the request's own task; a watcher task,
    started once the first chunk is out, cancels it when the client disconnects, which closes `chunks` (and the
    upstream call behind it) at once."""

    media_type = "text/event-stream"
    # Raw headers per headers mapping (the surfaces pass module constants): Starlette encodes them per response.
    _encoded: dict[int, tuple[Mapping[str, str] | None, list[tuple[bytes, bytes]]]] = {}

    def __init__(self, chunks: AsyncIterator[str], headers: Mapping[str, str] | None = None):
        self.body_iterator = chunks
        self.status_code = 200
        self.background = None
        encoded = self._encoded.get(id(headers))
        if encoded is not None and encoded[0] is headers:
            self.raw_headers = list(encoded[1])  # a copy: a send wrapper may add to the list
            return
        self.init_headers(headers)
        if len(self._encoded) < 64:  # a handful of constants; never more
            self._encoded[id(headers)] = (headers, list(self.raw_headers))

    async def __call__(self, scope, receive, send) -> None:
        task = asyncio.current_task()
        gone = False
        watcher: asyncio.Future[None] | None = None

        def disconnected() -> None:
            nonlocal gone
            gone = True
            if task is not None:
                task.cancel()

        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
                if watcher is None:
                    watcher = asyncio.ensure_future(_watch_disconnect(receive, disconnected))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            if task is not None:
                task.uncancel()  # our own cancel: the client left, nothing more to write
        finally:
            if watcher is not None:
                watcher.cancel()


async def _watch_disconnect(receive, on_disconnect: Callable[[], None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    on_disconnect()


class CallerAuth(Protocol):
    """Resolves a credential (an API key or access token) sent from `client` (an address) to its principal,
    applying Typecase's authentication rate limits. Raises TypecaseError (UNAUTHENTICATED, RATE_LIMITED, ...)."""

    async def __call__(self, credential: str, client: str, method: str = "compat") -> Principal: ...


def dumps(data: Any) -> str:
    return compact(data)  # json.dumps(data, separators=(",", ":"), ensure_ascii=False), its encoder made once


def unauthenticated(message: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", message)


def credential(request: Request) -> str:
    """`authorization: Bearer <key>` or `x-api-key: <key>` (the Anthropic SDK sends the latter; both SDKs may be
    configured to send either)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthenticated("authorization must be 'Bearer <API key or access token>'")
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    raise unauthenticated("authentication required: send 'authorization: Bearer <API key>' or 'x-api-key: <API key>'")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TypecaseError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "PAYLOAD_TOO_LARGE",
                f"request body exceeds {limit} bytes",
                {"field": "body"},
            )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise invalid_argument("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid_argument("body", "must be a JSON object")
    return data


def status_of(error: TypecaseError, reason_http_status: Mapping[str, int]) -> int:
    """The HTTP status the transcoded API would answer with (grpc-gateway's table plus the app's overrides)."""
    return reason_http_status.get(error.reason, http_status(error.code))


def unknown_fields(data: Mapping[str, Any], known: set[str], where: str = "") -> None:
    """A field Typecase does not support is a 400 naming it, never silently dropped (null counts as absent)."""
    for name, value in data.items():
        if name not in known and value is not None:
            raise invalid_argument(f"{where}{name}", "is not supported by Typecase")


class Surface:
    """The request plumbing of a vendor-compatible surface: authenticate, bind the caller, map errors."""

    def __init__(
        self,
        llm,
        auth: CallerAuth,
        max_body_bytes: int,
        reason_http_status: Mapping[str, int],
        error_response: Callable[[TypecaseError, int], Response],
    ):
        self.llm = llm
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.reason_http_status = reason_http_status
        self._error_response = error_response

    def error_response(self, error: TypecaseError) -> Response:
        return self._error_response(error, status_of(error, self.reason_http_status))

    async def call(self, request: Request, handler: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            # The route's path names the call to a restricted API key (auth/scopes.py ACTION_METHODS). The scope's,
            # not request.url's: building the URL object costs ~15 us, and only its path is wanted.
            principal = await self.auth(credential(request), client_address(request), request.scope["path"])
            token = caller.bind(principal)
            try:
                return await handler(request)
            finally:
                caller.bind_reset(token)
        except TypecaseError as error:
            return self.error_response(error)
        except Exception:
            log.exception("unhandled error in %s", request.scope["path"])
            return self.error_response(TypecaseError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))

    def model_name(self, served_id: str, requested: str) -> str:
        model = self.llm.registry.snapshot.model(served_id or requested)
        return model.name if model else requested

    async def body(self, request: Request) -> dict[str, Any]:
        return await json_body(request, self.max_body_bytes)
