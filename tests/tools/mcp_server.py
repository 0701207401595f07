"""A real MCP server (the SDK's MCPServer, FastMCP's successor) for the tools tests and bench:
`python -m tests.tools.mcp_server stdio`, `python -m tests.tools.mcp_server http PORT [TOKEN]` (streamable HTTP
at /mcp; with TOKEN, requests without `Authorization: Bearer TOKEN` get 401) or `... sse PORT [TOKEN]` (the legacy
HTTP+SSE transport at /sse)."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@server.tool()
def explode(why: str) -> str:
    """Always fails with `why` (ToolError: the SDK hides other exceptions' messages from clients)."""
    raise ToolError(f"exploded: {why}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    import anyio

    await anyio.sleep(seconds)
    return "done"


if "--growing" in sys.argv:  # a server whose tool list changes at run time

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Add the tool `grown` and tell the client its tool list changed."""

        def grown() -> str:
            return "I was added later"

        server.add_tool(grown, name="grown", description="added at run time")
        await ctx.session.send_tool_list_changed()
        return "grown"


def main() -> None:
    if sys.argv[1] == "stdio":
        server.run("stdio")
        return
    port = int(sys.argv[2])
    token = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "--growing" else ""
    import uvicorn

    app = server.sse_app() if sys.argv[1] == "sse" else server.streamable_http_app()
    if token:
        inner = app

        async def app(scope, receive, send):  # type: ignore[no-redef]
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                if headers.get(b"authorization") != f"Bearer {token}".encode():
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
