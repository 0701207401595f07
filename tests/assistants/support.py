"""Helpers for the assistants tests: a user with real tool servers and a model on the scripted fake upstream."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.conftest import ADMIN_KEY
from tests.tools.support import Caller, bearer, new_user, tool_by_name
from typecase.v1 import llm_pb2, llm_pb2_grpc, tools_pb2

ADMIN = bearer(ADMIN_KEY)


@dataclass
class World:
    user: Caller
    model_id: str
    add: str  # MCP tool ids
    echo: str
    slow_mcp: str
    list_pets: str  # OpenAPI tool ids
    wait: str
    order: str
    slow_url: str


async def make_world(channel, upstream, mcp_url, pets_url, slow_url, key) -> World:
    llm = llm_pb2_grpc.LLMServiceStub(channel)
    provider = (
        await llm.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name="scripted",
                    type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                    base_url=upstream.base_url + "/v1",
                    api_key="sk-test-secret-1234",
                )
            ),
            metadata=ADMIN,
        )
    ).provider
    model = (
        await llm.CreateModel(
            llm_pb2.CreateModelRequest(
                model=llm_pb2.Model(
                    provider_id=provider.id, name="gpt-scripted", type=llm_pb2.MODEL_TYPE_LLM, online=True
                )
            ),
            metadata=ADMIN,
        )
    ).model
    user = await new_user(channel, "agent")
    mcp = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="mcp", kind=tools_pb2.TOOL_PROVIDER_KIND_MCP, mcp=tools_pb2.McpServer(url=mcp_url)
                )
            ),
            metadata=user.md,
        )
    ).provider
    assert mcp.last_error == ""
    pets = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="pets",
                    kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                    openapi=tools_pb2.OpenApiSource(
                        document_url=f"{pets_url}/openapi.json",
                        auth=tools_pb2.ToolAuth(
                            type=tools_pb2.TOOL_AUTH_TYPE_API_KEY_HEADER, name="X-API-Key", credential=key
                        ),
                    ),
                )
            ),
            metadata=user.md,
        )
    ).provider
    slow = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="slow",
                    kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                    openapi=tools_pb2.OpenApiSource(document_url=f"{slow_url}/openapi.json"),
                )
            ),
            metadata=user.md,
        )
    ).provider
    return World(
        user,
        model.id,
        (await tool_by_name(user, mcp.id, "add")).id,
        (await tool_by_name(user, mcp.id, "echo")).id,
        (await tool_by_name(user, mcp.id, "slow")).id,
        (await tool_by_name(user, pets.id, "listPets")).id,
        (await tool_by_name(user, slow.id, "wait")).id,
        (await tool_by_name(user, slow.id, "placeOrder")).id,
        slow_url,
    )


async def slow_stats(url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{url}/stats")).json()
