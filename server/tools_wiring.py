"""Composition of the tools domain (part of the composition root, beside app.py): the provider kinds, and the
other domains' Python APIs adapted to the Protocols of server/tools/deps.py. Only this module and app.py know
both sides. Chat and flow get tool declarations and batch execution from `ToolService.api` (a tools.api.ToolsApi),
which app.py hands them; flows are built before tools (flows are tools), so flow agents take it after both exist."""

from __future__ import annotations

from typing import Any

from typecase.server.tools.deps import FlowInfo, KnowledgeHit
from typecase.server.tools.kinds.base import Kind
from typecase.server.tools.kinds.builtin import BuiltinDeps, BuiltinKind
from typecase.server.tools.kinds.mcp import McpKind
from typecase.server.tools.kinds.openapi import OpenApiKind
from typecase.server.tools.service import ToolService
from typecase.v1 import knowledge_pb2


class KnowledgeAdapter:
    """tools.deps.KnowledgeSearch over KnowledgeService.search (the caller's rights, bound in the context)."""

    def __init__(self, knowledge):
        self.knowledge = knowledge

    async def search(self, query: str, kb_ids: list[str], top_k: int) -> list[KnowledgeHit]:
        reply = await self.knowledge.search(knowledge_pb2.SearchRequest(kb_ids=kb_ids, query=query, top_k=top_k))
        return [KnowledgeHit(h.text, h.score, h.kb_id, h.file_name) for h in reply.hits]


VARIABLE_TYPES = {
    "text": "string",
    "string": "string",
    "file": "string",
    "number": "number",
    "boolean": "boolean",
    "list": "array",
    "object": "object",
}


def variables_schema(variables: list[dict[str, Any]]) -> dict[str, Any]:
    """A flow's start variables as the JSON Schema of its tool's arguments."""
    properties: dict[str, Any] = {}
    required = []
    for var in variables:
        prop: dict[str, Any] = {}
        if (kind := VARIABLE_TYPES.get(str(var.get("type") or ""))) is not None:
            prop["type"] = kind
        if var.get("label") or var.get("description"):
            prop["description"] = str(var.get("description") or var.get("label"))
        properties[var["name"]] = prop
        if var.get("required") and var.get("default") in (None, ""):
            required.append(var["name"])
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


class FlowAdapter:
    """tools.deps.FlowRunner over FlowService's Python API (published flows, runs under the caller)."""

    def __init__(self, service):
        self.service = service

    @staticmethod
    def _info(flow, variables) -> FlowInfo:
        return FlowInfo(flow.id, flow.name, flow.description, variables_schema(variables))

    async def runnable_flows(self, limit: int) -> list[FlowInfo]:
        return [self._info(f, v) for f, v in await self.service.published_flows(limit)]

    async def flow(self, flow_id: str) -> FlowInfo:
        return self._info(*await self.service.published_flow(flow_id))

    async def run(self, flow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return await self.service.run_to_end(flow_id, inputs)


def tool_service(app, servicers: dict[str, Any]) -> ToolService:
    settings = app.settings
    flow = servicers["FlowService"]
    deps = BuiltinDeps(
        settings, http=flow.http, knowledge=KnowledgeAdapter(servicers["KnowledgeService"]), sandbox=app.sandbox
    )
    mcp = McpKind(settings, flow.http)
    kinds: dict[str, Kind] = {"builtin": BuiltinKind(deps), "mcp": mcp, "openapi": OpenApiKind(settings, flow.http)}
    box = servicers["LLMService"].registry.secrets  # provider keys and tool secrets share the server's key
    service = ToolService(settings, app.resources.db, app.audit, box, kinds, FlowAdapter(flow))
    mcp.on_list_changed = service.refresh_later
    return service
