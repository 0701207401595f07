"""Composition of the tools domain (part of the composition root, beside app.py): the provider kinds, and the
other domains' Python APIs adapted to the Protocols of server/tools/deps.py. Only this module and app.py know
both sides."""

from __future__ import annotations

from typing import Any

from typecase.server.tools.deps import KnowledgeHit
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


def tool_service(app, servicers: dict[str, Any]) -> ToolService:
    settings = app.settings
    flow = servicers["FlowService"]
    deps = BuiltinDeps(settings, http=flow.http, knowledge=KnowledgeAdapter(servicers["KnowledgeService"]),
                       sandbox=app.sandbox)
    mcp = McpKind(settings, flow.http)
    kinds = {"builtin": BuiltinKind(deps), "mcp": mcp, "openapi": OpenApiKind(settings, flow.http)}
    box = servicers["LLMService"].registry.secrets  # provider keys and tool secrets share the server's key
    service = ToolService(settings, app.resources.db, app.audit, box, kinds)
    mcp.on_list_changed = service.refresh_later
    return service
