"""Composition of the assistants domain (beside app.py): what publishing an assistant checks, over the LLM, tools
and knowledge domains' Python APIs. Only this module and app.py know both sides."""

from __future__ import annotations

from typing import Any

from typecase.server.assistants.service import AssistantService
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import assistant_pb2, knowledge_pb2


def _naming(error: TypecaseError, field: str) -> TypecaseError:
    metadata = dict(error.metadata or {})
    metadata["field"] = field
    return TypecaseError(error.code, error.reason, error.message, metadata)


def publish_check(servicers: dict[str, Any]):
    llm, tools, knowledge = servicers["LLMService"], servicers["ToolService"].api, servicers["KnowledgeService"]

    async def check(assistant: assistant_pb2.Assistant) -> None:
        """The model exists, every tool may be called and every knowledge base read, by the caller."""
        if assistant.model_id:
            try:
                await llm.get_model(assistant.model_id)
            except TypecaseError as error:
                raise _naming(error, "assistant.model_id") from None
        for i, ref in enumerate(assistant.tool_ids):
            try:
                await tools.declare([ref])
            except TypecaseError as error:
                raise _naming(error, f"assistant.tool_ids[{i}]") from None
        if assistant.kb_ids:
            try:
                await knowledge.search(knowledge_pb2.SearchRequest(kb_ids=list(assistant.kb_ids), query="x", top_k=1))
            except TypecaseError as error:
                if error.reason in {"NOT_FOUND", "PERMISSION_DENIED"}:
                    raise _naming(error, "assistant.kb_ids") from None

    return check


def assistant_service(app, servicers: dict[str, Any]) -> AssistantService:
    return AssistantService(app.settings, app.resources.db, app.audit, publish_check(servicers))
