"""Typecase as an MCP server at /mcp (streamable HTTP, the `mcp` SDK's server side), so that Claude Desktop,
Cursor or any MCP client can use a team's knowledge bases and published flows as tools.

Thin over the tools domain's Python API (`ToolsApi.served` and `execute`): the same validation, timeouts, size
caps and metrics as every other tool call. Each request is authenticated with a Typecase API key or access token
(`Authorization: Bearer ...` or `x-api-key`) through the compat surfaces' CallerAuth, and the tools listed and
called are those of that caller. The SDK's session manager runs stateless (a fresh transport per request, JSON
responses): nothing is held in one replica's memory between requests, so any replica behind a load balancer
answers any request, and no session id could carry one caller's rights to another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from typecase.server.compat.common import CallerAuth, client_address, credential
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError
from typecase.server.tools.api import ToolCall

log = logging.getLogger("typecase.compat.mcp")
PRINCIPAL_KEY = "typecase_principal"


class McpEndpoint:
    """The /mcp ASGI endpoint; start() and stop() run the SDK's session manager for the app's lifetime."""

    def __init__(self, tools, auth: CallerAuth, max_body_bytes: int, version: str = ""):
        self.tools = tools  # tools.api.ToolsApi
        self.auth = auth
        self.server: Server[Any] = Server(
            "typecase", version=version, on_list_tools=self._list_tools, on_call_tool=self._call_tool
        )
        self.manager = StreamableHTTPSessionManager(
            self.server, stateless=True, json_response=True, max_request_body_size=max_body_bytes
        )
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        started = asyncio.Event()

        async def hold() -> None:
            async with self.manager.run():
                started.set()
                await self._stop.wait()

        self._task = asyncio.create_task(hold(), name="mcp-server")
        await asyncio.wait({self._task, asyncio.create_task(started.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=5)

    def routes(self) -> list[Route]:
        return [Route("/mcp", self, methods=["GET", "POST", "DELETE"])]

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope)
        try:
            principal = await self.auth(credential(request), client_address(request))
        except TypecaseError as error:
            response = JSONResponse(
                {"error": error.reason.lower(), "message": error.message},
                status_code=429 if error.reason == "RATE_LIMITED" else 401,
                headers={"www-authenticate": 'Bearer realm="typecase"'},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        token = caller.bind(principal)
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            caller.bind_reset(token)

    @staticmethod
    @contextlib.contextmanager
    def _as_caller(ctx):
        """Bind the request's caller for the handler (the SDK may run it in a task of its own)."""
        state = getattr(getattr(ctx, "request", None), "scope", {}).get("state", {})
        principal = state.get(PRINCIPAL_KEY) if isinstance(state, dict) else None
        token = caller.bind(principal) if principal is not None else None
        try:
            caller.current()  # UNAUTHENTICATED when neither the request nor the context carries one
            yield
        finally:
            if token is not None:
                caller.bind_reset(token)

    async def _list_tools(self, ctx, params) -> types.ListToolsResult:
        with self._as_caller(ctx):
            served = await self.tools.served()
        return types.ListToolsResult(
            tools=[
                types.Tool(name=s.name, description=s.description, input_schema=s.parameters or {"type": "object"})
                for s in served
            ]
        )

    async def _call_tool(self, ctx, params) -> types.CallToolResult:
        with self._as_caller(ctx):
            by_name = {s.name: s.tool_id for s in await self.tools.served()}
            tool_id = by_name.get(params.name)
            if tool_id is None:
                unknown: list[Any] = [types.TextContent(text=f"unknown tool {params.name!r}")]
                return types.CallToolResult(content=unknown, is_error=True)
            result = (await self.tools.execute([ToolCall("mcp", tool_id, dict(params.arguments or {}))]))[0]
        content: list[Any] = [types.TextContent(text=result.text)]
        if not result.ok:
            return types.CallToolResult(content=content, is_error=True)
        structured = result.structured if isinstance(result.structured, dict) else None
        return types.CallToolResult(content=content, structured_content=structured)
