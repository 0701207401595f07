"""MCP providers through the official `mcp` SDK client: streamable HTTP, legacy SSE, or (admins only, when
tools_mcp_stdio_enabled) a local command over stdio.

Sessions are reused: each provider has at most one live client session, held open by a task of its own (the SDK's
transports are anyio context managers that must be entered and left in one task) and shared by concurrent calls.
A session that breaks is dropped and the call retried once on a new one; an idle session is closed after
tools_mcp_idle_seconds. A tools/list_changed notification from the server triggers a reload of the stored list.

HTTP transports go through the SSRF guard of the http nodes: the URL's host is checked before connecting, and
the client's transport resolves and pins the address of every request (PinnedTransport), so that a second DNS
answer cannot point the session at a private address later."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED, INVALID_REQUEST

from typecase.server.infra.ssrf import Blocked
from typecase.server.tools.deps import GuardedHttp
from typecase.server.tools.errors import ToolFailure
from typecase.server.tools.kinds.base import Call, Provider, ToolResult, ToolSpec

log = logging.getLogger("typecase.tools.mcp")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_PAGES = 50  # tools/list pages read per load
# The mcp SDK closes a POST's SSE response as soon as the result event is read, before the stream's last chunk:
# HTTP/1.1 cannot reuse such a connection, so every call opened a new TCP connection. On close, a response's rest
# is read for at most this long and this many bytes (in the SDK's background POST task, after the result has been
# handed over), so that the connection goes back to the pool.
DRAIN_SECONDS = 0.05
DRAIN_MAX_BYTES = 64 * 1024


class _Draining(httpx2.AsyncByteStream):
    """A response body that, closed before its end, reads the (small, already sent) rest so its connection is
    reused; a stream still open after DRAIN_SECONDS or DRAIN_MAX_BYTES is closed as before."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._ended = False

    async def __aiter__(self):
        async for part in self._stream:
            yield part
        self._ended = True

    async def aclose(self) -> None:
        if not self._ended:
            read = 0
            with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(Exception):
                async for part in self._stream:
                    read += len(part)
                    if read > DRAIN_MAX_BYTES:
                        break
        await self._stream.aclose()


class PinnedTransport(httpx2.AsyncHTTPTransport):
    """Resolves every request's host through the SSRF policy and connects to the checked address (the Host
    header and TLS SNI keep the name)."""

    def __init__(self, guard: GuardedHttp, **kwargs: Any):
        super().__init__(**kwargs)
        self.guard = guard

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        address = await self.guard.resolve(url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0))
        if address != url.host:
            request.url = url.copy_with(host=address)
            if url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": url.host}
        response = await super().handle_async_request(request)
        response.stream = _Draining(response.stream)
        return response


def _text(content: list[Any]) -> str:
    parts = []
    for block in content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", "") or f"[resource {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[{block.name}]({block.uri})")
        else:
            parts.append(f"[{kind} content]")
    return "\n".join(parts)


def _failure(exc: BaseException) -> ToolFailure:
    if isinstance(exc, ToolFailure):
        return exc
    if isinstance(exc, Blocked):
        return ToolFailure(f"refused: {exc}")
    if isinstance(exc, MCPError):
        if exc.code == CONNECTION_CLOSED:
            return ToolFailure(f"the MCP server cannot be reached: {exc.message}", unreachable=True)
        return ToolFailure(exc.message)
    if isinstance(exc, BaseExceptionGroup):
        return _failure(exc.exceptions[0])
    if isinstance(exc, httpx2.HTTPStatusError):
        return ToolFailure(f"the MCP server answered HTTP {exc.response.status_code}", unreachable=True)
    return ToolFailure(f"the MCP server cannot be reached: {type(exc).__name__}: {exc}", unreachable=True)


class Session:
    """One live client session, held open by its own task until closed or idle."""

    def __init__(self, kind: McpKind, provider: Provider):
        self.kind = kind
        self.provider = provider
        self.client: Client | None = None
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()
        self.error: BaseException | None = None
        self.last_used = time.monotonic()
        self.http_status = 0  # the last HTTP error status seen (the SDK's error message does not carry it)
        self.task = asyncio.create_task(self._hold(), name=f"mcp-session-{provider.id}")

    def _transport(self) -> Any:
        config, headers = self.provider.config, dict(self.provider.headers)
        timeout = httpx2.Timeout(
            self.kind.settings.tools_connect_timeout_seconds, read=self.kind.settings.tools_max_call_timeout_seconds
        )
        if config.get("transport") == "stdio":
            return StdioServerParameters(
                command=config["command"], args=list(config.get("args") or []), env=dict(self.provider.env) or None
            )
        if config.get("transport") == "sse":

            def factory(headers=None, timeout=None, auth=None):
                return httpx2.AsyncClient(
                    headers=headers, timeout=timeout, auth=auth, transport=PinnedTransport(self.kind.guard)
                )

            return sse_client(
                config["url"],
                headers=headers,
                timeout=self.kind.settings.tools_connect_timeout_seconds,
                sse_read_timeout=self.kind.settings.tools_mcp_idle_seconds,
                httpx_client_factory=factory,
            )
        client = httpx2.AsyncClient(
            headers=headers,
            timeout=timeout,
            transport=PinnedTransport(self.kind.guard),
            event_hooks={"response": [self._saw]},
        )
        return _owning(streamable_http_client(config["url"], http_client=client), client)

    async def _hold(self) -> None:
        try:
            async with Client(
                self._transport(),
                mode="legacy",
                message_handler=self._message,
                read_timeout_seconds=self.kind.settings.tools_max_call_timeout_seconds,
                cache=None,
            ) as client:
                self.client = client
                self.ready.set()
                idle = self.kind.settings.tools_mcp_idle_seconds
                while not self.closing.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.closing.wait(), timeout=idle / 4)
                    if time.monotonic() - self.last_used > idle:
                        break
        except BaseException as exc:  # noqa: BLE001 - kept for the callers waiting on `ready`
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.client = None
            self.ready.set()
            self.kind._sessions.pop(self.provider.id, None) if self.kind._sessions.get(
                self.provider.id
            ) is self else None

    async def _saw(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self.http_status = response.status_code

    async def _message(self, message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", "")
        if method == "notifications/tools/list_changed" and self.kind.on_list_changed is not None:
            await self.kind.on_list_changed(self.provider.id)

    async def get(self) -> Client:
        await self.ready.wait()
        if self.client is None:
            failure = _failure(self.error or ConnectionError("session closed"))
            if self.http_status:
                failure = ToolFailure(f"{failure.message} (HTTP {self.http_status})", unreachable=failure.unreachable)
            raise failure
        self.last_used = time.monotonic()
        return self.client

    async def close(self) -> None:
        self.closing.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(self.task), timeout=5)
        if not self.task.done():
            self.task.cancel()


@contextlib.asynccontextmanager
async def _owning(transport, client: httpx2.AsyncClient):
    """The streamable HTTP transport, closing the HTTP client it was given when it ends."""
    async with client:
        async with transport as streams:
            yield streams


class McpKind:
    name = "mcp"

    def __init__(self, settings, guard: GuardedHttp):
        self.settings = settings
        self.guard = guard
        self._sessions: dict[str, Session] = {}
        self._lock = asyncio.Lock()
        self.on_list_changed: Callable[[str], Awaitable[None]] | None = None

    async def _check_url(self, provider: Provider) -> None:
        if provider.config.get("transport") == "stdio":
            if not self.settings.tools_mcp_stdio_enabled:
                raise ToolFailure(
                    "MCP servers run as local commands are disabled on this server (tools_mcp_stdio_enabled)"
                )
            return
        url = httpx2.URL(provider.config.get("url", ""))
        try:
            await self.guard.resolve(url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0))
        except Blocked as exc:
            raise ToolFailure(f"refused: {exc}") from None
        except ConnectionError as exc:
            raise ToolFailure(str(exc), unreachable=True) from None

    async def _session(self, provider: Provider) -> Client:
        session = self._sessions.get(provider.id)
        if session is None or session.task.done():
            # Checked when a session opens; a live one needs no second check (and, for a host name, no second DNS
            # lookup per call): PinnedTransport resolves and checks every request it sends anyway.
            await self._check_url(provider)
            async with self._lock:
                session = self._sessions.get(provider.id)
                if session is None or session.task.done():
                    session = Session(self, provider)
                    self._sessions[provider.id] = session
        try:
            return await asyncio.wait_for(session.get(), timeout=self.settings.tools_connect_timeout_seconds)
        except TimeoutError:
            await self.forget(provider.id)
            raise ToolFailure(
                f"the MCP server did not answer within {self.settings.tools_connect_timeout_seconds:g}s",
                unreachable=True,
            ) from None

    async def load(self, provider: Provider) -> list[ToolSpec]:
        try:
            client = await self._session(provider)
            specs: list[ToolSpec] = []
            cursor = None
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    specs.append(
                        ToolSpec(
                            tool.name[:128],
                            tool.description or tool.title or "",
                            dict(tool.input_schema or {}),
                            provider.name[:64],
                            {"name": tool.name},
                        )
                    )
                cursor = page.next_cursor
                if not cursor or len(specs) >= self.settings.tools_max_per_provider:
                    break
            return specs
        except (ToolFailure, Exception) as exc:
            await self.forget(provider.id)
            raise _failure(exc) from None

    async def call(self, call: Call) -> ToolResult:
        """One tools/call on the provider's shared session. It is retried (once, on a new session) only when the
        server answered that it no longer knows the session, which it does before running anything: a call that
        broke mid-way may have run, so it fails (UNAVAILABLE) rather than run twice; the next call reconnects."""
        name = call.binding.get("name", call.tool_name)
        for attempt in range(2):
            client = await self._session(call.provider)
            try:
                result = await client.call_tool(name, call.arguments, read_timeout_seconds=call.timeout)
                break
            except MCPError as exc:
                if exc.code == INVALID_REQUEST and "terminated" in exc.message.lower() and attempt == 0:
                    await self.forget(call.provider.id)
                    continue
                if exc.code == CONNECTION_CLOSED:
                    await self.forget(call.provider.id)
                raise _failure(exc) from None
            except Exception as exc:  # a broken session: drop it; the next call opens a new one
                await self.forget(call.provider.id)
                raise _failure(exc) from None
        text = _text(result.content)
        if result.is_error:
            raise ToolFailure(text or "the tool reported an error")
        structured = result.structured_content
        if structured is None and text[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                structured = json.loads(text)
        return ToolResult(text, structured)

    async def forget(self, provider_id: str) -> None:
        session = self._sessions.pop(provider_id, None)
        if session is not None:
            await session.close()

    async def aclose(self) -> None:
        for provider_id in list(self._sessions):
            await self.forget(provider_id)
