"""The SSRF guard refuses tool server and OpenAPI URLs on loopback unless the settings allow them."""

from __future__ import annotations

import grpc
import pytest

from tests.tools.servers import start, stop
from tests.tools.support import new_user
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_loopback_urls_are_refused_unless_allowed(tmp_path):
    from tests.tools.conftest import tool_settings
    from typecase.server.app import App

    mcp, mcp_port = start("tests.tools.mcp_server", "http", "{port}")
    svc, svc_port = start("tests.tools.openapi_service", "{port}", "k")
    app = App(tool_settings(tmp_path / "data", flow_http_allowed_hosts=[]))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            user = await new_user(channel)
            provider = (
                await user.tools.CreateToolProvider(
                    tools_pb2.CreateToolProviderRequest(
                        provider=tools_pb2.ToolProvider(
                            name="m",
                            kind=tools_pb2.TOOL_PROVIDER_KIND_MCP,
                            mcp=tools_pb2.McpServer(url=f"http://127.0.0.1:{mcp_port}/mcp"),
                        )
                    ),
                    metadata=user.md,
                )
            ).provider
            assert provider.tool_count == 0 and "non-public" in provider.last_error
            assert "flow_http_allowed_hosts" in provider.last_error
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await user.tools.CreateToolProvider(
                    tools_pb2.CreateToolProviderRequest(
                        provider=tools_pb2.ToolProvider(
                            name="o",
                            kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                            openapi=tools_pb2.OpenApiSource(document_url=f"http://127.0.0.1:{svc_port}/openapi.json"),
                        )
                    ),
                    metadata=user.md,
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "non-public" in caught.value.details()
            # A document given as text whose server is loopback imports, but its calls are refused.
            import json

            from tests.tools.openapi_service import DOCUMENT

            doc = {**DOCUMENT, "servers": [{"url": f"http://127.0.0.1:{svc_port}/api"}]}
            provider = (
                await user.tools.CreateToolProvider(
                    tools_pb2.CreateToolProviderRequest(
                        provider=tools_pb2.ToolProvider(
                            name="t",
                            kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                            openapi=tools_pb2.OpenApiSource(document=json.dumps(doc)),
                        )
                    ),
                    metadata=user.md,
                )
            ).provider
            listed = await user.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=user.md)
            get = next(t for t in listed.tools if t.name == "getPet")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await user.tools.CallTool(
                    tools_pb2.CallToolRequest(tool_id=get.id, arguments={"pet_id": "1"}), metadata=user.md
                )
            assert "refused" in caught.value.details() and "non-public" in caught.value.details()
            # The built-in http_request tool goes through the same guard.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await user.tools.CallTool(
                    tools_pb2.CallToolRequest(
                        tool_id="builtin-http_request", arguments={"url": f"http://127.0.0.1:{svc_port}/openapi.json"}
                    ),
                    metadata=user.md,
                )
            assert "non-public" in caught.value.details()
    finally:
        await app.stop()
        stop(mcp)
        stop(svc)
