"""`client.chat`: sessions, messages and streamed, resumable chat turns (ChatService)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from typecase.client import _requests as rq
from typecase.client._async.resource import AsyncResource
from typecase.client._async.streams import AsyncChatStream
from typecase.v1 import chat_pb2, chat_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient


class AsyncChat(AsyncResource):
    """Sessions, messages and streamed, resumable chat turns (ChatService)."""

    def __init__(self, client: AsyncClient, stub: chat_pb2_grpc.ChatServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    async def create_session(self, *, title: str = "", model_id: str = "", flow_id: str = "",
                             system_prompt: str = "", kb_ids: Iterable[str] = (), metadata: rq.Struct | None = None,
                             assistant_id: str = "", variables: dict[str, str] | None = None,
                             timeout: float | None = None) -> chat_pb2.Session:
        """A session with a model (default: the platform's chat model), with `flow_id` a published flow, or with
        `assistant_id` an assistant (`variables` fill its instructions template)."""
        request = rq.create_session(title, model_id, flow_id, system_prompt, kb_ids, metadata, assistant_id,
                                    variables)
        return (await self._unary(self.stub.CreateSession, request, chat_pb2.CreateSessionResponse,
                                  timeout)).session

    async def get_session(self, session_id: str, *, timeout: float | None = None) -> chat_pb2.Session:
        request = chat_pb2.GetSessionRequest(session_id=session_id)
        return (await self._unary(self.stub.GetSession, request, chat_pb2.GetSessionResponse, timeout)).session

    def list_sessions(self, *, keyword: str = "", page_size: int = 100,
                      timeout: float | None = None) -> AsyncIterator[chat_pb2.Session]:
        request = chat_pb2.ListSessionsRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListSessions, request, "sessions", timeout)

    async def update_session(self, session_id: str, *, title: str | None = None, system_prompt: str | None = None,
                             model_id: str | None = None, kb_ids: Sequence[str] | None = None,
                             metadata: rq.Struct | None = None, timeout: float | None = None) -> chat_pb2.Session:
        """Change the given fields only."""
        request = rq.update_session(session_id, title=title, system_prompt=system_prompt, model_id=model_id,
                                    kb_ids=kb_ids, metadata=metadata)
        return (await self._unary(self.stub.UpdateSession, request, chat_pb2.UpdateSessionResponse,
                                  timeout)).session

    async def delete_session(self, session_id: str, *, timeout: float | None = None) -> None:
        request = chat_pb2.DeleteSessionRequest(session_id=session_id)
        await self._unary(self.stub.DeleteSession, request, chat_pb2.DeleteSessionResponse, timeout)

    def list_messages(self, session_id: str, *, newest_first: bool = False, turn_id: str = "",
                      page_size: int = 100, timeout: float | None = None) -> AsyncIterator[chat_pb2.Message]:
        """A session's messages, oldest first (or newest first)."""
        request = chat_pb2.ListMessagesRequest(session_id=session_id, newest_first=newest_first, turn_id=turn_id,
                                               page_size=page_size)
        return self._pages(self.stub.ListMessages, request, "messages", timeout)

    async def add_messages(self, session_id: str, pairs: Iterable[tuple[str, str] | chat_pb2.MessagePair], *,
                           timeout: float | None = None) -> list[chat_pb2.Message]:
        """Append (question, answer) pairs without calling a model."""
        request = chat_pb2.AddMessagesRequest(session_id=session_id, pairs=rq.message_pairs(pairs))
        response = await self._unary(self.stub.AddMessages, request, chat_pb2.AddMessagesResponse, timeout)
        return list(response.messages)

    async def feedback(self, message_id: str, action: str, *, comment: str = "",
                       timeout: float | None = None) -> chat_pb2.Message:
        """Rate an answer: action "like", "dislike", "cancel" or "copied"."""
        request = rq.feedback(message_id, action, comment)
        return (await self._unary(self.stub.SetMessageFeedback, request, chat_pb2.SetMessageFeedbackResponse,
                                  timeout)).message

    def stream(self, session_id: str, content: str, *, model_id: str | None = None,
               temperature: float | None = None, max_tokens: int | None = None, request_id: str | None = None,
               stop_on_disconnect: bool = False, attachments: Sequence[chat_pb2.Attachment] = (),
               input_node_id: str = "", input: rq.Struct | None = None,
               timeout: float | None = None) -> AsyncChatStream:
        """Ask a question and stream the answer's events: `for event in client.chat.stream(sid, "hi")` (with
        AsyncClient: `async for`).

        The stream survives dropped connections: once the turn id is known it reconnects with
        StreamTurnEvents from the last seq seen, and before that it re-sends the question with the same
        `request_id` (generated when not given), which the server attaches to the turn it already started.
        """
        request = rq.chat(session_id, content, model_id=model_id, temperature=temperature, max_tokens=max_tokens,
                          request_id=request_id, stop_on_disconnect=stop_on_disconnect, attachments=attachments,
                          input_node_id=input_node_id, input=input)
        return AsyncChatStream(self, lambda t: self.stub.Chat(request, timeout=t), restartable=True,
                               timeout=timeout)

    def resume(self, turn_id: str, after_seq: int = 0, *, timeout: float | None = None) -> AsyncChatStream:
        """Follow a turn again from after `after_seq` (0: from its start), e.g. after a restart of this process."""
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        return AsyncChatStream(self, None, stream_id=turn_id, after_seq=after_seq, timeout=timeout)

    async def ask(self, session_id: str, content: str, **kwargs: Any) -> chat_pb2.Message:
        """Ask and wait for the whole answer; returns the stored answer message. Takes `stream`'s arguments."""
        ended = await self.stream(session_id, content, **kwargs).collect()
        return ended.answer

    async def download_attachment(self, message_id: str, index: int = 0, *, timeout: float | None = None) -> bytes:
        """The bytes of a file attached (as inline data) to a message: `message.attachments[index]`."""
        request = chat_pb2.DownloadAttachmentRequest(message_id=message_id, index=index)
        return b"".join([body.data async for body in self._stream(self.stub.DownloadAttachment(request, timeout=timeout))])

    async def stop(self, turn_id: str, *, timeout: float | None = None) -> bool:
        """Stop a running turn; False when it had already ended."""
        request = chat_pb2.StopTurnRequest(turn_id=turn_id)
        response = await self._unary(self.stub.StopTurn, request, chat_pb2.StopTurnResponse, timeout)
        return bool(response.stopped)
