"""`client.assistants`: tool-using assistants (AssistantService). Chat with one through
`client.chat.create_session(assistant_id=...)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2

from typecase.client._async.resource import AsyncResource
from typecase.v1 import assistant_pb2, assistant_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient


class AsyncAssistants(AsyncResource):
    """Assistants: create, list (yours and online ones), update, publish (AssistantService)."""

    def __init__(self, client: AsyncClient, stub: assistant_pb2_grpc.AssistantServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    async def create_assistant(self, name: str, *, model_id: str = "", instructions: str = "",
                               tool_ids: Iterable[str] = (), kb_ids: Iterable[str] = (), description: str = "",
                               max_steps: int = 0, assistant: assistant_pb2.Assistant | None = None,
                               timeout: float | None = None) -> assistant_pb2.Assistant:
        """Create a draft assistant; `assistant` gives every other field (its name and the keywords win)."""
        message = assistant_pb2.Assistant()
        if assistant is not None:
            message.CopyFrom(assistant)
        message.name = name
        message.model_id = model_id or message.model_id
        message.instructions = instructions or message.instructions
        message.description = description or message.description
        message.max_steps = max_steps or message.max_steps
        message.tool_ids.extend(tool_ids)
        message.kb_ids.extend(kb_ids)
        request = assistant_pb2.CreateAssistantRequest(assistant=message)
        return (await self._unary(self.stub.CreateAssistant, request, assistant_pb2.CreateAssistantResponse,
                                  timeout)).assistant

    async def get_assistant(self, assistant_id: str, *, timeout: float | None = None) -> assistant_pb2.Assistant:
        request = assistant_pb2.GetAssistantRequest(assistant_id=assistant_id)
        return (await self._unary(self.stub.GetAssistant, request, assistant_pb2.GetAssistantResponse,
                                  timeout)).assistant

    def list_assistants(self, *, keyword: str = "", scope: int = 0, page_size: int = 100,
                        timeout: float | None = None) -> AsyncIterator[assistant_pb2.Assistant]:
        """Your assistants and the online ones (`scope`: an AssistantScope value)."""
        request = assistant_pb2.ListAssistantsRequest(keyword=keyword, scope=scope, page_size=page_size)
        return self._pages(self.stub.ListAssistants, request, "assistants", timeout)

    async def update_assistant(self, assistant: assistant_pb2.Assistant, paths: Iterable[str], *,
                               timeout: float | None = None) -> assistant_pb2.Assistant:
        """Update the fields named in `paths` to their values in `assistant` (which carries the id)."""
        request = assistant_pb2.UpdateAssistantRequest(
            assistant=assistant, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        return (await self._unary(self.stub.UpdateAssistant, request, assistant_pb2.UpdateAssistantResponse,
                                  timeout)).assistant

    async def delete_assistant(self, assistant_id: str, *, timeout: float | None = None) -> None:
        request = assistant_pb2.DeleteAssistantRequest(assistant_id=assistant_id)
        await self._unary(self.stub.DeleteAssistant, request, assistant_pb2.DeleteAssistantResponse, timeout)

    async def publish(self, assistant_id: str, *, timeout: float | None = None) -> assistant_pb2.Assistant:
        request = assistant_pb2.PublishAssistantRequest(assistant_id=assistant_id)
        return (await self._unary(self.stub.PublishAssistant, request, assistant_pb2.PublishAssistantResponse,
                                  timeout)).assistant

    async def unpublish(self, assistant_id: str, *, timeout: float | None = None) -> assistant_pb2.Assistant:
        request = assistant_pb2.UnpublishAssistantRequest(assistant_id=assistant_id)
        return (await self._unary(self.stub.UnpublishAssistant, request, assistant_pb2.UnpublishAssistantResponse,
                                  timeout)).assistant
