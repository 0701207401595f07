"""`client.llm`: models and direct model calls (LLMService)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from typecase.client import _requests as rq
from typecase.client._async.resource import AsyncResource
from typecase.v1 import llm_pb2, llm_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient


class AsyncLLM(AsyncResource):
    """Models and direct model calls (LLMService)."""

    def __init__(self, client: AsyncClient, stub: llm_pb2_grpc.LLMServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def list_models(self, *, model_type: str | None = None, online: bool | None = None, provider_id: str = "",
                    keyword: str = "", page_size: int = 100,
                    timeout: float | None = None) -> AsyncIterator[llm_pb2.Model]:
        """Models, optionally only of `model_type` ("llm", "embedding", "rerank") or online state."""
        request = rq.list_models(model_type, online, provider_id, keyword, page_size)
        return self._pages(self.stub.ListModels, request, "models", timeout)

    async def get_model(self, model_id: str, *, timeout: float | None = None) -> llm_pb2.Model:
        request = llm_pb2.GetModelRequest(model_id=model_id)
        return (await self._unary(self.stub.GetModel, request, llm_pb2.GetModelResponse, timeout)).model

    async def defaults(self, *, timeout: float | None = None) -> llm_pb2.LLMDefaults:
        """The platform's default models (chat, flow, knowledge embedding, title, rerank)."""
        request = llm_pb2.GetDefaultsRequest()
        return (await self._unary(self.stub.GetDefaults, request, llm_pb2.GetDefaultsResponse, timeout)).defaults

    async def complete(self, model_id: str, messages: rq.Messages, *, temperature: float | None = None,
                       max_tokens: int | None = None, stop: Sequence[str] | None = None,
                       timeout: float | None = None) -> llm_pb2.CompleteResponse:
        """One whole answer: `messages` is a prompt string or a list of messages ({"role", "content"})."""
        request = llm_pb2.CompleteRequest(model_id=model_id, messages=rq.chat_messages(messages),
                                          config=rq.generation_config(temperature, max_tokens, stop))
        return await self._unary(self.stub.Complete, request, llm_pb2.CompleteResponse, timeout)

    def generate(self, model_id: str, messages: rq.Messages, *, temperature: float | None = None,
                 max_tokens: int | None = None, stop: Sequence[str] | None = None,
                 timeout: float | None = None) -> AsyncIterator[llm_pb2.GenerateResponse]:
        """Stream an answer piece by piece (not resumable: model calls are not logged)."""
        request = llm_pb2.GenerateRequest(model_id=model_id, messages=rq.chat_messages(messages),
                                          config=rq.generation_config(temperature, max_tokens, stop))
        return self._stream(self.stub.Generate(request, timeout=timeout))

    async def embed(self, model_id: str, inputs: Sequence[str], *,
                    timeout: float | None = None) -> llm_pb2.EmbedResponse:
        request = llm_pb2.EmbedRequest(model_id=model_id, inputs=list(inputs))
        return await self._unary(self.stub.Embed, request, llm_pb2.EmbedResponse, timeout)
