"""What one domain uses of another, as typed Protocols ("ports").

Domains never import each other (see docs/architecture.md); a domain that needs another types what it is handed
with one of these, and app.py hands it the other domain's service object, whose Python API implements the port
(KnowledgeService.search / get_knowledge_base, FlowService.get_flow / run_for_chat, AuthService.get_user,
LLMService's generate / embed_texts / ...). So a consumer neither probes for methods (getattr) nor calls a
servicer method without its gRPC context, and a change on either side is caught by the type checker.

Every call runs under the caller's principal bound in the context (rpc/principal.py), with the rights it has, as an
RPC would. Ports used by one domain only may live in that domain (tools/deps.py, tools/api.py); these are shared.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from typecase.v1 import auth_pb2, flow_pb2, knowledge_pb2, llm_pb2


class KnowledgeSearch(Protocol):
    async def search(self, request: knowledge_pb2.SearchRequest) -> knowledge_pb2.SearchResponse:
        """Search knowledge bases with the caller's rights (NOT_FOUND for a base it may not read)."""
        ...


class Knowledge(KnowledgeSearch, Protocol):
    async def get_knowledge_base(self, kb_id: str) -> knowledge_pb2.KnowledgeBase:
        """One knowledge base, if the caller may see it (NOT_FOUND otherwise)."""
        ...


class ChatFlows(Protocol):
    """What chat's flow sessions use of the flow domain."""

    async def get_flow(self, flow_id: str) -> flow_pb2.Flow:
        """The flow with its current graph, if the caller may see it (NOT_FOUND otherwise)."""
        ...

    def run_for_chat(
        self,
        *,
        flow_id: str,
        session_id: str,
        question: str = "",
        version_id: str = "",
        input_node_id: str = "",
        input: dict[str, Any] | None = None,
        history: list[dict[str, str]] | None = None,
        stop_on_close: bool = True,
        attachments: list[dict[str, Any]] | None = None,
    ) -> AsyncGenerator[flow_pb2.RunFlowResponse, None]:
        """One chat turn of a flow session: the run's events until it ends or waits for input (closing the
        generator stops the run when `stop_on_close`)."""
        ...


class Users(Protocol):
    async def get_user(self, user_id: str) -> auth_pb2.User:
        """A user the caller may see (NOT_FOUND otherwise)."""
        ...


class Models(Protocol):
    async def default_model_id(self, use: str) -> str:
        """The default model for a use ("chat", "title", "flow", "embedding", ...), "" when none is set."""
        ...

    async def get_model(self, model_id: str) -> llm_pb2.Model: ...

    async def current_model(self, model_id: str) -> llm_pb2.Model:
        """The model as this replica last loaded it (no live status), refreshed when any replica changes it."""
        ...


class Generation(Models, Protocol):
    """The LLM domain as chat and flows use it."""

    def generate(self, request: llm_pb2.GenerateRequest) -> AsyncGenerator[llm_pb2.GenerateResponse, None]:
        """The Generate stream; closing the generator closes the upstream call at once."""
        ...


class Embedding(Models, Protocol):
    """The LLM domain as knowledge uses it."""

    async def embed_texts(self, texts: list[str], model_id: str = "", *, input_type: str = "") -> list[list[float]]:
        """One vector per text (empty model_id: the default knowledge-embedding model)."""
        ...

    async def embedding_dimensions(self, model_id: str = "") -> int: ...

    async def rerank(self, request: llm_pb2.RerankRequest) -> llm_pb2.RerankResponse: ...


__all__ = ["ChatFlows", "Embedding", "Generation", "Knowledge", "KnowledgeSearch", "Models", "Users"]
