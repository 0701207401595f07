"""Composition of agents (beside app.py): the agent loop's Toolbox over the tools domain's ToolsApi, so the loop
(server/agent/) and the domains that run it (chat, flow, compat) import neither tools nor each other.

Knowledge offered as a tool is the built-in knowledge_search with the agent's bases bound: the model sees only
`query` (and `top_k`), and every call searches exactly the bases the assistant or node chose."""

from __future__ import annotations

import json
from collections.abc import Sequence

from google.protobuf import struct_pb2

from typecase.server.agent.loop import Outcome
from typecase.server.tools.api import Declarations, ToolCall, ToolsApi, declared_name
from typecase.v1 import llm_pb2

KNOWLEDGE_TOOL = "builtin-knowledge_search"
KNOWLEDGE_NAME = "knowledge_search"
KNOWLEDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "description": "what to look for"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 20},
    },
    "required": ["query"],
}


class CatalogToolbox:
    """agent.loop.Toolbox over ToolsApi: declarations from the catalogue, batches run under the caller's rights."""

    def __init__(self, tools: ToolsApi, declared: Declarations, kb_ids: Sequence[str], timeout_seconds: float):
        self.tools = tools
        self.declared = declared
        self.declarations = declared.tools
        self.kb_ids = list(kb_ids)
        self.timeout_seconds = timeout_seconds

    def tool_id(self, name: str) -> str:
        return self.declared.tool_id(name)

    async def run(self, calls: Sequence[llm_pb2.ToolCall]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(calls)
        batch: list[tuple[int, ToolCall]] = []
        for i, call in enumerate(calls):
            tool_id = self.tool_id(call.name)
            if not tool_id:
                outcomes[i] = Outcome(call.id, False, f"there is no tool named {call.name!r}", "TOOL_NOT_FOUND")
                continue
            arguments: dict | str = call.arguments
            if tool_id == KNOWLEDGE_TOOL and self.kb_ids:
                try:
                    parsed = json.loads(call.arguments or "{}")
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    arguments = {**parsed, "knowledge_base_ids": self.kb_ids}
            batch.append((i, ToolCall(str(i), tool_id, arguments, self.timeout_seconds)))
        if batch:
            results = await self.tools.execute([call for _, call in batch])
            for (i, _), result in zip(batch, results, strict=True):
                outcomes[i] = Outcome(
                    calls[i].id, result.ok, result.text, result.reason, result.seconds, result.tool_id
                )
        return [o for o in outcomes if o is not None]


async def catalog_toolbox(
    tools: ToolsApi, tool_ids: Sequence[str], kb_ids: Sequence[str], knowledge_as_tool: bool, timeout_ms: int
) -> CatalogToolbox:
    """The toolbox of an agent with these tools and bases (TOOL_NOT_FOUND for a tool the caller may not call)."""
    refs = [ref for ref in tool_ids if ref != KNOWLEDGE_TOOL or not kb_ids]
    declared = await tools.declare(refs)
    if kb_ids and knowledge_as_tool:
        name = declared_name(KNOWLEDGE_NAME, set(declared.by_name))
        parameters = struct_pb2.Struct()
        parameters.update(KNOWLEDGE_SCHEMA)
        declared.tools.append(
            llm_pb2.Tool(
                name=name,
                description="Search the assistant's knowledge bases; returns the most relevant passages.",
                parameters=parameters,
            )
        )
        declared.by_name[name] = KNOWLEDGE_TOOL
    return CatalogToolbox(tools, declared, kb_ids, timeout_ms / 1000)
