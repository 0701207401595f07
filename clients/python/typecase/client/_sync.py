"""The blocking client: `Client` and its resource helpers, over grpcio's synchronous channel.

GENERATED from _aio.py by scripts/gen_sync.py: do not edit. Change _aio.py, then run `make sdk-gen`.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc
from google.protobuf import message as _message

from typecase.client import _requests as rq
from typecase.client._channel import Transport, Credentials
from typecase.client._config import Keepalive, OptionValue, RetryPolicy, Settings, resolve
from typecase.client._io import run_blocking, sleep
from typecase.client._upload import (
    DEFAULT_CHUNK_BYTES,
    Opened,
    Progress,
    ProgressCallback,
    UploadSource,
    check_chunk_size,
    first_request,
    open_source,
)
from typecase.client.errors import TypecaseError, Unavailable, from_rpc_error, from_status, status_code
from typecase.client.events import ChatEvent, Cursor, RunEvent, RunState, TurnState, chat_event, run_event
from typecase.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    common_pb2,
    flow_pb2,
    flow_pb2_grpc,
    knowledge_pb2,
    knowledge_pb2_grpc,
    llm_pb2,
    llm_pb2_grpc,
)

R = TypeVar("R", bound=_message.Message)
E = TypeVar("E", ChatEvent, RunEvent)
MiB = 1024 * 1024


class Client:
    """A Typecase client over gRPC. `Client` blocks; `AsyncClient` runs on asyncio (grpc.aio: create it inside the
    event loop that uses it), its methods are awaited and its streams read with `async for`.

    Args:
        target: "host:port" of the gRPC server (an "https://" prefix turns TLS on). Default: $TYPECASE_TARGET,
            else "localhost:50051".
        api_key: API key sent as `authorization: Bearer ...` on every call. Default: $TYPECASE_API_KEY.
        token: a JWT access token instead of an API key (see `client.auth.login`).
        tls: True for TLS with the system roots, or grpc.ChannelCredentials (custom CA, mTLS); False: plaintext.
        timeout: default deadline in seconds of unary calls (None: none). Every method takes `timeout=` too.
        stream_timeout: default deadline of streaming calls (None: none).
        retry: retries of idempotent calls and reconnects of resumable streams; None disables both.
        keepalive: HTTP/2 keepalive pings; None (default) sends none.
        max_receive_message_bytes / max_send_message_bytes: per-message size limits of the channel.
        options: extra raw gRPC channel arguments, e.g. {"grpc.initial_reconnect_backoff_ms": 200}.
        metadata: extra metadata sent with every call, e.g. {"x-trace-id": "..."}.

    The resource helpers are `auth`, `llm`, `chat`, `knowledge`, `flows` and `admin`; each has `.stub`, the raw
    generated stub on the same authenticated channel, for everything the helpers do not cover (see `call`).
    Use as a context manager (`with Client(...)`, `async with AsyncClient(...)`), or call `close()`.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        tls: bool | grpc.ChannelCredentials = False,
        timeout: float | None = 30.0,
        stream_timeout: float | None = None,
        retry: RetryPolicy | None = RetryPolicy(),
        keepalive: Keepalive | None = None,
        max_receive_message_bytes: int | None = 64 * MiB,
        max_send_message_bytes: int | None = 64 * MiB,
        options: Mapping[str, OptionValue] | Sequence[tuple[str, OptionValue]] | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.settings: Settings = resolve(
            target, api_key=api_key, token=token, tls=tls, timeout=timeout, stream_timeout=stream_timeout,
            retry=retry, keepalive=keepalive, max_receive_message_bytes=max_receive_message_bytes,
            max_send_message_bytes=max_send_message_bytes, options=options, metadata=metadata,
        )
        self._credentials = Credentials(self.settings.credential, self.settings.metadata)
        self._transport = Transport(self.settings, self._credentials)
        self.channel = self._transport.channel
        self.auth = Auth(self, auth_pb2_grpc.AuthServiceStub(self.channel))
        self.llm = LLM(self, llm_pb2_grpc.LLMServiceStub(self.channel))
        self.chat = Chat(self, chat_pb2_grpc.ChatServiceStub(self.channel))
        self.knowledge = Knowledge(self, knowledge_pb2_grpc.KnowledgeServiceStub(self.channel))
        self.flows = Flows(self, flow_pb2_grpc.FlowServiceStub(self.channel))
        self.admin = Admin(self, admin_pb2_grpc.AdminServiceStub(self.channel))

    @property
    def target(self) -> str:
        return self.settings.target

    @property
    def credential(self) -> str | None:
        """The API key or access token sent with every call."""
        return self._credentials.credential

    @credential.setter
    def credential(self, value: str | None) -> None:
        """The API key or access token sent with every call."""
        self._credentials.credential = value

    def call(self, method: Callable[..., Any], request: Any, *, timeout: float | None = None) -> Any:
        """Invoke a unary (or client-streaming) method of a raw stub, e.g.
        `client.call(client.llm.stub.TestModel, request)`, with the client's deadline and error mapping: failures
        raise TypecaseError subclasses."""
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait (block, with Client) until the channel is connected; raises Unavailable after `timeout` seconds."""
        if not self._transport.wait_until_ready(timeout):
            raise Unavailable(f"could not connect to {self.target} within {timeout}s")

    def close(self, grace: float | None = None) -> None:
        """Close the channel; calls and streams in progress fail with Cancelled. `grace` (AsyncClient only; the
        blocking channel refuses it) lets them finish for up to that many seconds first."""
        self._transport.close(grace)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _unary(self, method: Callable[..., Any], request: _message.Message, response_type: type[R],
               timeout: float | None) -> R:
        response = self._client.call(method, request, timeout=timeout)
        if not isinstance(response, response_type):
            raise TypeError(f"expected {response_type.__name__}, got {type(response).__name__}")
        return response

    def _pages(self, method: Callable[..., Any], request: Any, field: str,
               timeout: float | None) -> Iterator[Any]:
        while True:
            page = self._client.call(method, request, timeout=timeout)
            for item in getattr(page, field):
                yield item
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def _stream(self, call: Any) -> Iterator[Any]:
        try:
            for message in call:
                yield message
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()


class _EventStream(Generic[E]):
    """A resumable event stream: yields each event once, in seq order, reconnecting from the last seq seen when
    the connection drops (UNAVAILABLE) once the turn or run id is known."""

    def __init__(self, client: Client, first: Callable[[float | None], Any] | None, *, stream_id: str = "",
                 after_seq: int = 0, restartable: bool = False, timeout: float | None = None) -> None:
        self._client = client
        self._first = first
        self._restartable = restartable
        limit = timeout if timeout is not None else client.settings.stream_timeout
        self._cursor = Cursor(stream_id=stream_id, last_seq=after_seq,
                              deadline=time.monotonic() + limit if limit is not None else None)
        self._call: Any = None
        self._cancelled = False
        self._events: Generator[E, None] = self._run()

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _reopen(self, stream_id: str, after_seq: int, timeout: float | None) -> Any:
        raise NotImplementedError

    def _convert(self, message: Any) -> E:
        raise NotImplementedError

    def _apply(self, event: E) -> TypecaseError | None:
        """Record the event; return the error to raise when it is a terminal failure."""
        raise NotImplementedError

    # -- iteration -----------------------------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The seq of the last event delivered: resume from here with `resume(id, after_seq=last_seq)`."""
        return self._cursor.last_seq

    @property
    def done(self) -> bool:
        return self._cursor.done

    def _open(self) -> Any:
        timeout = self._cursor.remaining()
        if self._cursor.stream_id:
            return self._reopen(self._cursor.stream_id, self._cursor.last_seq, timeout)
        assert self._first is not None
        return self._first(timeout)

    def _run(self) -> Generator[E, None]:
        cursor = self._cursor
        while not cursor.done:
            code: grpc.StatusCode | None = None
            failure: TypecaseError | None = None
            try:
                self._call = self._open()
                for message in self._call:
                    event = self._convert(message)
                    if not cursor.accept(event, _stream_id(event)):
                        continue
                    terminal_error = self._apply(event)
                    if terminal_error is not None:
                        raise terminal_error
                    yield event
                if cursor.done:
                    return
            except grpc.RpcError as error:
                if self._cancelled:
                    return
                code, failure = status_code(error), from_rpc_error(error)
            delay = cursor.reconnect_delay(code, self._client.settings.reconnect, restartable=self._restartable)
            if delay is None:
                if failure is not None:
                    raise failure
                raise Unavailable("the stream ended before its last event")
            sleep(delay)

    def __iter__(self) -> Iterator[E]:
        return self

    def __next__(self) -> E:
        return next(self._events)

    def cancel(self) -> None:
        """Stop receiving (from any thread with Client): iteration ends. The turn or run itself goes on unless it
        was started with stop_on_disconnect."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def close(self) -> None:
        self.cancel()
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _stream_id(event: ChatEvent | RunEvent) -> str:
    return event.turn_id if isinstance(event, ChatEvent) else event.run_id


class ChatStream(_EventStream[ChatEvent]):
    """The events of a chat turn (`for event in stream`, `async for` with AsyncClient), with what they add up to:
    `text`, `citations`, `started`, `ended`. A turn that fails after it started raises its error (e.g.
    DeadlineExceeded with reason UPSTREAM_TIMEOUT) from the iteration; `text` keeps what was generated."""

    def __init__(self, chat: Chat, first: Callable[[float | None], Any] | None, **kwargs: Any) -> None:
        self._chat = chat
        self.state = TurnState()
        super().__init__(chat._client, first, **kwargs)

    def _reopen(self, stream_id: str, after_seq: int, timeout: float | None) -> Any:
        request = chat_pb2.StreamTurnEventsRequest(turn_id=stream_id, after_seq=after_seq)
        return self._chat.stub.StreamTurnEvents(request, timeout=timeout)

    def _convert(self, message: Any) -> ChatEvent:
        return chat_event(message)

    def _apply(self, event: ChatEvent) -> TypecaseError | None:
        self.state.apply(event)
        return self.state.error

    @property
    def turn_id(self) -> str:
        """The turn's id, known after the first event."""
        return self._cursor.stream_id

    @property
    def text(self) -> str:
        """The answer text received so far."""
        return self.state.text

    @property
    def reasoning_text(self) -> str:
        return self.state.reasoning_text

    @property
    def citations(self) -> list[common_pb2.Citation]:
        return self.state.citations

    @property
    def started(self) -> chat_pb2.TurnStarted | None:
        return self.state.started

    @property
    def ended(self) -> chat_pb2.TurnEnded | None:
        return self.state.ended

    def collect(self) -> chat_pb2.TurnEnded:
        """Read the rest of the turn and return its `ended` event (answer message, usage, finish reason)."""
        for _ in self:
            pass
        if self.state.ended is None:
            raise Unavailable("the turn stream ended without its last event")
        return self.state.ended

    def stop(self, *, timeout: float | None = None) -> bool:
        """Stop generating (StopTurn); the stream then ends with `ended` (finish_reason CANCELLED)."""
        if not self.turn_id:
            raise ValueError("the turn id is not known yet: read the first event before stopping")
        return self._chat.stop(self.turn_id, timeout=timeout)


class RunStream(_EventStream[RunEvent]):
    """The events of a flow run, with `text` (streamed output), `started`, `finished` and `input_required`
    (set when the run paused for input: answer it with `client.flows.submit_input`). A failed run raises."""

    def __init__(self, flows: Flows, first: Callable[[float | None], Any] | None, **kwargs: Any) -> None:
        self._flows = flows
        self.state = RunState()
        super().__init__(flows._client, first, **kwargs)

    def _reopen(self, stream_id: str, after_seq: int, timeout: float | None) -> Any:
        request = flow_pb2.StreamRunEventsRequest(run_id=stream_id, after_seq=after_seq)
        return self._flows.stub.StreamRunEvents(request, timeout=timeout)

    def _convert(self, message: Any) -> RunEvent:
        return run_event(message)

    def _apply(self, event: RunEvent) -> TypecaseError | None:
        self.state.apply(event)
        return self.state.error

    @property
    def run_id(self) -> str:
        return self._cursor.stream_id

    @property
    def text(self) -> str:
        return self.state.text

    @property
    def started(self) -> flow_pb2.RunStarted | None:
        return self.state.started

    @property
    def finished(self) -> flow_pb2.RunFinished | None:
        return self.state.finished

    @property
    def input_required(self) -> flow_pb2.InputRequired | None:
        return self.state.input_required

    def collect(self) -> RunState:
        """Read the rest of the run (until it finishes or waits for input) and return the assembled state."""
        for _ in self:
            pass
        return self.state


# ---------------------------------------------------------------------------------------------------------------
class Auth(_Resource):
    """Login, tokens, the caller, users and API keys (AuthService)."""

    def __init__(self, client: Client, stub: auth_pb2_grpc.AuthServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def login(self, username: str, password: str, *, use: bool = True,
              timeout: float | None = None) -> auth_pb2.LoginResponse:
        """Exchange a password for tokens; with `use`, later calls send the access token."""
        request = auth_pb2.LoginRequest(username=username, password=password)
        response = self._unary(self.stub.Login, request, auth_pb2.LoginResponse, timeout)
        if use:
            self._client.credential = response.access_token
        return response

    def refresh(self, refresh_token: str, *, use: bool = True,
                timeout: float | None = None) -> auth_pb2.RefreshTokenResponse:
        request = auth_pb2.RefreshTokenRequest(refresh_token=refresh_token)
        response = self._unary(self.stub.RefreshToken, request, auth_pb2.RefreshTokenResponse, timeout)
        if use:
            self._client.credential = response.access_token
        return response

    def me(self, *, timeout: float | None = None) -> auth_pb2.GetMeResponse:
        """The authenticated caller (`.user`) and the API key used (`.api_key_id`)."""
        return self._unary(self.stub.GetMe, auth_pb2.GetMeRequest(), auth_pb2.GetMeResponse, timeout)

    def create_user(self, username: str, password: str, *, role: str = "user", display_name: str = "",
                    email: str = "", timeout: float | None = None) -> auth_pb2.User:
        request = rq.create_user(username, password, role, display_name, email)
        return (self._unary(self.stub.CreateUser, request, auth_pb2.CreateUserResponse, timeout)).user

    def get_user(self, user_id: str, *, timeout: float | None = None) -> auth_pb2.User:
        request = auth_pb2.GetUserRequest(user_id=user_id)
        return (self._unary(self.stub.GetUser, request, auth_pb2.GetUserResponse, timeout)).user

    def list_users(self, *, keyword: str = "", page_size: int = 100,
                   timeout: float | None = None) -> Iterator[auth_pb2.User]:
        request = auth_pb2.ListUsersRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListUsers, request, "users", timeout)

    def delete_user(self, user_id: str, *, timeout: float | None = None) -> None:
        request = auth_pb2.DeleteUserRequest(user_id=user_id)
        self._unary(self.stub.DeleteUser, request, auth_pb2.DeleteUserResponse, timeout)

    def create_api_key(self, name: str, *, owner_id: str = "", expire_time: datetime | None = None,
                       scopes: Sequence[str] = (),
                       timeout: float | None = None) -> auth_pb2.CreateApiKeyResponse:
        """Create an API key; the response's `.secret` is shown only this once. `scopes`: "api" (the default) and/or
        "proxy" (an access key for the LLM API proxy)."""
        request = rq.create_api_key(name, owner_id, expire_time, scopes)
        return self._unary(self.stub.CreateApiKey, request, auth_pb2.CreateApiKeyResponse, timeout)

    def list_api_keys(self, *, owner_id: str = "", show_revoked: bool = False, page_size: int = 100,
                      timeout: float | None = None) -> Iterator[auth_pb2.ApiKey]:
        request = auth_pb2.ListApiKeysRequest(owner_id=owner_id, show_revoked=show_revoked, page_size=page_size)
        return self._pages(self.stub.ListApiKeys, request, "api_keys", timeout)

    def delete_api_key(self, api_key_id: str, *, timeout: float | None = None) -> None:
        request = auth_pb2.DeleteApiKeyRequest(api_key_id=api_key_id)
        self._unary(self.stub.DeleteApiKey, request, auth_pb2.DeleteApiKeyResponse, timeout)


class LLM(_Resource):
    """Models and direct model calls (LLMService)."""

    def __init__(self, client: Client, stub: llm_pb2_grpc.LLMServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def list_models(self, *, model_type: str | None = None, online: bool | None = None, provider_id: str = "",
                    keyword: str = "", page_size: int = 100,
                    timeout: float | None = None) -> Iterator[llm_pb2.Model]:
        """Models, optionally only of `model_type` ("llm", "embedding", "rerank") or online state."""
        request = rq.list_models(model_type, online, provider_id, keyword, page_size)
        return self._pages(self.stub.ListModels, request, "models", timeout)

    def get_model(self, model_id: str, *, timeout: float | None = None) -> llm_pb2.Model:
        request = llm_pb2.GetModelRequest(model_id=model_id)
        return (self._unary(self.stub.GetModel, request, llm_pb2.GetModelResponse, timeout)).model

    def defaults(self, *, timeout: float | None = None) -> llm_pb2.LLMDefaults:
        """The platform's default models (chat, flow, knowledge embedding, title, rerank)."""
        request = llm_pb2.GetDefaultsRequest()
        return (self._unary(self.stub.GetDefaults, request, llm_pb2.GetDefaultsResponse, timeout)).defaults

    def complete(self, model_id: str, messages: rq.Messages, *, temperature: float | None = None,
                 max_tokens: int | None = None, stop: Sequence[str] | None = None,
                 timeout: float | None = None) -> llm_pb2.CompleteResponse:
        """One whole answer: `messages` is a prompt string or a list of messages ({"role", "content"})."""
        request = llm_pb2.CompleteRequest(model_id=model_id, messages=rq.chat_messages(messages),
                                          config=rq.generation_config(temperature, max_tokens, stop))
        return self._unary(self.stub.Complete, request, llm_pb2.CompleteResponse, timeout)

    def generate(self, model_id: str, messages: rq.Messages, *, temperature: float | None = None,
                 max_tokens: int | None = None, stop: Sequence[str] | None = None,
                 timeout: float | None = None) -> Iterator[llm_pb2.GenerateResponse]:
        """Stream an answer piece by piece (not resumable: model calls are not logged)."""
        request = llm_pb2.GenerateRequest(model_id=model_id, messages=rq.chat_messages(messages),
                                          config=rq.generation_config(temperature, max_tokens, stop))
        return self._stream(self.stub.Generate(request, timeout=timeout))

    def embed(self, model_id: str, inputs: Sequence[str], *,
              timeout: float | None = None) -> llm_pb2.EmbedResponse:
        request = llm_pb2.EmbedRequest(model_id=model_id, inputs=list(inputs))
        return self._unary(self.stub.Embed, request, llm_pb2.EmbedResponse, timeout)


class Chat(_Resource):
    """Sessions, messages and streamed, resumable chat turns (ChatService)."""

    def __init__(self, client: Client, stub: chat_pb2_grpc.ChatServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def create_session(self, *, title: str = "", model_id: str = "", flow_id: str = "",
                       system_prompt: str = "", kb_ids: Iterable[str] = (), metadata: rq.Struct | None = None,
                       timeout: float | None = None) -> chat_pb2.Session:
        """A session with a model (default: the platform's chat model) or, with `flow_id`, a published flow."""
        request = rq.create_session(title, model_id, flow_id, system_prompt, kb_ids, metadata)
        return (self._unary(self.stub.CreateSession, request, chat_pb2.CreateSessionResponse,
                            timeout)).session

    def get_session(self, session_id: str, *, timeout: float | None = None) -> chat_pb2.Session:
        request = chat_pb2.GetSessionRequest(session_id=session_id)
        return (self._unary(self.stub.GetSession, request, chat_pb2.GetSessionResponse, timeout)).session

    def list_sessions(self, *, keyword: str = "", page_size: int = 100,
                      timeout: float | None = None) -> Iterator[chat_pb2.Session]:
        request = chat_pb2.ListSessionsRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListSessions, request, "sessions", timeout)

    def update_session(self, session_id: str, *, title: str | None = None, system_prompt: str | None = None,
                       model_id: str | None = None, kb_ids: Sequence[str] | None = None,
                       metadata: rq.Struct | None = None, timeout: float | None = None) -> chat_pb2.Session:
        """Change the given fields only."""
        request = rq.update_session(session_id, title=title, system_prompt=system_prompt, model_id=model_id,
                                    kb_ids=kb_ids, metadata=metadata)
        return (self._unary(self.stub.UpdateSession, request, chat_pb2.UpdateSessionResponse,
                            timeout)).session

    def delete_session(self, session_id: str, *, timeout: float | None = None) -> None:
        request = chat_pb2.DeleteSessionRequest(session_id=session_id)
        self._unary(self.stub.DeleteSession, request, chat_pb2.DeleteSessionResponse, timeout)

    def list_messages(self, session_id: str, *, newest_first: bool = False, turn_id: str = "",
                      page_size: int = 100, timeout: float | None = None) -> Iterator[chat_pb2.Message]:
        """A session's messages, oldest first (or newest first)."""
        request = chat_pb2.ListMessagesRequest(session_id=session_id, newest_first=newest_first, turn_id=turn_id,
                                               page_size=page_size)
        return self._pages(self.stub.ListMessages, request, "messages", timeout)

    def add_messages(self, session_id: str, pairs: Iterable[tuple[str, str] | chat_pb2.MessagePair], *,
                     timeout: float | None = None) -> list[chat_pb2.Message]:
        """Append (question, answer) pairs without calling a model."""
        request = chat_pb2.AddMessagesRequest(session_id=session_id, pairs=rq.message_pairs(pairs))
        response = self._unary(self.stub.AddMessages, request, chat_pb2.AddMessagesResponse, timeout)
        return list(response.messages)

    def feedback(self, message_id: str, action: str, *, comment: str = "",
                 timeout: float | None = None) -> chat_pb2.Message:
        """Rate an answer: action "like", "dislike", "cancel" or "copied"."""
        request = rq.feedback(message_id, action, comment)
        return (self._unary(self.stub.SetMessageFeedback, request, chat_pb2.SetMessageFeedbackResponse,
                            timeout)).message

    def stream(self, session_id: str, content: str, *, model_id: str | None = None,
               temperature: float | None = None, max_tokens: int | None = None, request_id: str | None = None,
               stop_on_disconnect: bool = False, attachments: Sequence[chat_pb2.Attachment] = (),
               input_node_id: str = "", input: rq.Struct | None = None,
               timeout: float | None = None) -> ChatStream:
        """Ask a question and stream the answer's events: `for event in client.chat.stream(sid, "hi")` (with
        AsyncClient: `async for`).

        The stream survives dropped connections: once the turn id is known it reconnects with
        StreamTurnEvents from the last seq seen, and before that it re-sends the question with the same
        `request_id` (generated when not given), which the server attaches to the turn it already started.
        """
        request = rq.chat(session_id, content, model_id=model_id, temperature=temperature, max_tokens=max_tokens,
                          request_id=request_id, stop_on_disconnect=stop_on_disconnect, attachments=attachments,
                          input_node_id=input_node_id, input=input)
        return ChatStream(self, lambda t: self.stub.Chat(request, timeout=t), restartable=True,
                          timeout=timeout)

    def resume(self, turn_id: str, after_seq: int = 0, *, timeout: float | None = None) -> ChatStream:
        """Follow a turn again from after `after_seq` (0: from its start), e.g. after a restart of this process."""
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        return ChatStream(self, None, stream_id=turn_id, after_seq=after_seq, timeout=timeout)

    def ask(self, session_id: str, content: str, **kwargs: Any) -> chat_pb2.Message:
        """Ask and wait for the whole answer; returns the stored answer message. Takes `stream`'s arguments."""
        ended = self.stream(session_id, content, **kwargs).collect()
        return ended.answer

    def stop(self, turn_id: str, *, timeout: float | None = None) -> bool:
        """Stop a running turn; False when it had already ended."""
        request = chat_pb2.StopTurnRequest(turn_id=turn_id)
        response = self._unary(self.stub.StopTurn, request, chat_pb2.StopTurnResponse, timeout)
        return bool(response.stopped)


class Knowledge(_Resource):
    """Knowledge bases, file uploads and search (KnowledgeService)."""

    def __init__(self, client: Client, stub: knowledge_pb2_grpc.KnowledgeServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def create_knowledge_base(self, name: str, *, description: str = "", embedding_model_id: str = "",
                              chunking_rule: knowledge_pb2.ChunkingRule | None = None,
                              timeout: float | None = None) -> knowledge_pb2.KnowledgeBase:
        request = rq.create_knowledge_base(name, description, embedding_model_id, chunking_rule)
        response = self._unary(self.stub.CreateKnowledgeBase, request,
                               knowledge_pb2.CreateKnowledgeBaseResponse, timeout)
        return response.knowledge_base

    def get_knowledge_base(self, kb_id: str, *, timeout: float | None = None) -> knowledge_pb2.KnowledgeBase:
        request = knowledge_pb2.GetKnowledgeBaseRequest(kb_id=kb_id)
        response = self._unary(self.stub.GetKnowledgeBase, request, knowledge_pb2.GetKnowledgeBaseResponse,
                               timeout)
        return response.knowledge_base

    def list_knowledge_bases(self, *, keyword: str = "", page_size: int = 100,
                             timeout: float | None = None) -> Iterator[knowledge_pb2.KnowledgeBase]:
        request = knowledge_pb2.ListKnowledgeBasesRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListKnowledgeBases, request, "knowledge_bases", timeout)

    def delete_knowledge_base(self, kb_id: str, *, timeout: float | None = None) -> None:
        request = knowledge_pb2.DeleteKnowledgeBaseRequest(kb_id=kb_id)
        self._unary(self.stub.DeleteKnowledgeBase, request, knowledge_pb2.DeleteKnowledgeBaseResponse, timeout)

    def upload(self, kb_id: str, source: UploadSource, *, file_name: str | None = None,
               content_type: str | None = None, tags: Iterable[str] = (), metadata: rq.Struct | None = None,
               chunking_rule: knowledge_pb2.ChunkingRule | None = None, allow_duplicate: bool = False,
               chunk_size: int = DEFAULT_CHUNK_BYTES, progress: ProgressCallback | None = None,
               timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        """Upload a file (a path, bytes or a binary file object) in chunks of at most `chunk_size` bytes (max
        1 MiB) and queue it for processing; returns the stored file (status QUEUED). `progress` is called
        with an UploadProgress as each chunk is handed to the transport (by Client from gRPC's thread, by
        AsyncClient in the event loop), last at 100%; an exception it raises cancels the upload and is re-raised
        here. See `wait_until_done`."""
        check_chunk_size(chunk_size)
        opened = run_blocking(open_source, source, file_name)
        tracker = Progress(opened, progress)
        try:
            first = first_request(kb_id, opened, content_type=content_type, chunking_rule=chunking_rule, tags=tags,
                                  metadata=metadata, allow_duplicate=allow_duplicate)
            response = self._client.call(self.stub.UploadFile,
                                         _upload_messages(first, opened, chunk_size, tracker), timeout=timeout)
        except BaseException:  # grpcio reports the callback's failure as Cancelled, grpc.aio as CancelledError
            if tracker.error is not None:
                raise tracker.error from None
            raise
        finally:
            run_blocking(opened.close)
        assert isinstance(response, knowledge_pb2.UploadFileResponse)
        return response.file

    def add_text(self, kb_id: str, name: str, text: str, *, tags: Iterable[str] = (),
                 metadata: rq.Struct | None = None, chunking_rule: knowledge_pb2.ChunkingRule | None = None,
                 timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        """Add a typed or pasted document (".txt" is appended to a name without an extension)."""
        request = rq.add_text(kb_id, name, text, chunking_rule, tags, metadata)
        return (self._unary(self.stub.AddTextFile, request, knowledge_pb2.AddTextFileResponse, timeout)).file

    def get_file(self, file_id: str, *, timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        request = knowledge_pb2.GetFileRequest(file_id=file_id)
        return (self._unary(self.stub.GetFile, request, knowledge_pb2.GetFileResponse, timeout)).file

    def list_files(self, kb_id: str, *, keyword: str = "", tag: str = "", page_size: int = 100,
                   timeout: float | None = None) -> Iterator[knowledge_pb2.KnowledgeFile]:
        request = knowledge_pb2.ListFilesRequest(kb_id=kb_id, keyword=keyword, tag=tag, page_size=page_size)
        return self._pages(self.stub.ListFiles, request, "files", timeout)

    def delete_file(self, file_id: str, *, timeout: float | None = None) -> None:
        request = knowledge_pb2.DeleteFileRequest(file_id=file_id)
        self._unary(self.stub.DeleteFile, request, knowledge_pb2.DeleteFileResponse, timeout)

    def reprocess_file(self, file_id: str, *, chunking_rule: knowledge_pb2.ChunkingRule | None = None,
                       timeout: float | None = None) -> knowledge_pb2.KnowledgeFile:
        request = knowledge_pb2.ReprocessFileRequest(file_id=file_id, chunking_rule=chunking_rule)
        return (self._unary(self.stub.ReprocessFile, request, knowledge_pb2.ReprocessFileResponse,
                            timeout)).file

    def watch(self, file_id: str, *, timeout: float | None = None) -> Iterator[knowledge_pb2.WatchFileResponse]:
        """The file's processing progress: its current state, then every change, until DONE or FAILED."""
        request = knowledge_pb2.WatchFileRequest(file_id=file_id)
        return self._stream(self.stub.WatchFile(request, timeout=timeout))

    def wait_until_done(self, file_id: str, *, timeout: float | None = None,
                        on_update: Callable[[knowledge_pb2.WatchFileResponse], None] | None = None,
                        ) -> knowledge_pb2.KnowledgeFile:
        """Wait (watching with WatchFile, re-watching after a dropped connection) until the file is searchable
        and return it; raises the file's error when processing failed, DeadlineExceeded after `timeout`."""
        cursor = Cursor(stream_id=file_id, deadline=time.monotonic() + timeout if timeout is not None else None)
        while True:
            code: grpc.StatusCode | None = None
            failure: TypecaseError | None = None
            call = self.stub.WatchFile(knowledge_pb2.WatchFileRequest(file_id=file_id), timeout=cursor.remaining())
            try:
                for update in call:
                    cursor.failures = 0
                    if on_update is not None:
                        on_update(update)
                    if update.status == knowledge_pb2.FILE_STATUS_DONE:
                        return self.get_file(file_id, timeout=cursor.remaining())
                    if update.status == knowledge_pb2.FILE_STATUS_FAILED:
                        raise from_status(update.error, default_message=f"processing file {file_id} failed")
            except grpc.RpcError as error:
                code, failure = status_code(error), from_rpc_error(error)
            finally:
                call.cancel()
            delay = cursor.reconnect_delay(code, self._client.settings.reconnect, restartable=True)
            if delay is None:
                raise failure or Unavailable("the file watch ended before the file was processed")
            sleep(delay)

    def search(self, kb_ids: str | Iterable[str], query: str, *, top_k: int = 0, mode: str | None = None,
               score_threshold: float = 0.0, vector_weight: float | None = None, file_ids: Iterable[str] = (),
               tags: Iterable[str] = (), metadata: rq.Struct | None = None, rerank_model_id: str = "",
               timeout: float | None = None) -> knowledge_pb2.SearchResponse:
        """Search one or more knowledge bases; `.hits` are best first. `mode`: "hybrid" (default), "vector"
        or "keyword"; `top_k` 0 means the server's default (5)."""
        request = rq.search(kb_ids, query, top_k=top_k, mode=mode, score_threshold=score_threshold,
                            vector_weight=vector_weight, file_ids=file_ids, tags=tags, metadata=metadata,
                            rerank_model_id=rerank_model_id)
        return self._unary(self.stub.Search, request, knowledge_pb2.SearchResponse, timeout)


def _upload_messages(first: knowledge_pb2.UploadFileRequest, opened: Opened, chunk_size: int,
                     tracker: Progress) -> Iterator[knowledge_pb2.UploadFileRequest]:
    tracker.add(0)
    first.chunk = run_blocking(opened.reader.read, chunk_size)
    yield first
    tracker.add(len(first.chunk))
    while chunk := run_blocking(opened.reader.read, chunk_size):
        yield knowledge_pb2.UploadFileRequest(chunk=chunk)
        tracker.add(len(chunk))


class Flows(_Resource):
    """Flows, their runs and resumable run streams (FlowService)."""

    def __init__(self, client: Client, stub: flow_pb2_grpc.FlowServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def create_flow(self, name: str, *, graph: flow_pb2.Graph | None = None, description: str = "",
                    timeout: float | None = None) -> flow_pb2.Flow:
        request = rq.create_flow(name, description, graph)
        return (self._unary(self.stub.CreateFlow, request, flow_pb2.CreateFlowResponse, timeout)).flow

    def get_flow(self, flow_id: str, *, timeout: float | None = None) -> flow_pb2.Flow:
        request = flow_pb2.GetFlowRequest(flow_id=flow_id)
        return (self._unary(self.stub.GetFlow, request, flow_pb2.GetFlowResponse, timeout)).flow

    def list_flows(self, *, keyword: str = "", page_size: int = 100,
                   timeout: float | None = None) -> Iterator[flow_pb2.Flow]:
        request = flow_pb2.ListFlowsRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListFlows, request, "flows", timeout)

    def delete_flow(self, flow_id: str, *, timeout: float | None = None) -> None:
        request = flow_pb2.DeleteFlowRequest(flow_id=flow_id)
        self._unary(self.stub.DeleteFlow, request, flow_pb2.DeleteFlowResponse, timeout)

    def publish(self, flow_id: str, *, version_id: str = "", timeout: float | None = None) -> flow_pb2.Flow:
        request = flow_pb2.PublishFlowRequest(flow_id=flow_id, version_id=version_id)
        return (self._unary(self.stub.PublishFlow, request, flow_pb2.PublishFlowResponse, timeout)).flow

    def unpublish(self, flow_id: str, *, timeout: float | None = None) -> flow_pb2.Flow:
        request = flow_pb2.UnpublishFlowRequest(flow_id=flow_id)
        return (self._unary(self.stub.UnpublishFlow, request, flow_pb2.UnpublishFlowResponse, timeout)).flow

    def run(self, flow_id: str, inputs: rq.Struct | None = None, *, version_id: str = "", session_id: str = "",
            stop_on_disconnect: bool = False, timeout: float | None = None) -> RunStream:
        """Start a run and stream its events; reconnects from the last seq once the run id is known."""
        request = rq.run_flow(flow_id, inputs, version_id, session_id, stop_on_disconnect)
        return RunStream(self, lambda t: self.stub.RunFlow(request, timeout=t), timeout=timeout)

    def resume(self, run_id: str, after_seq: int = 0, *, timeout: float | None = None) -> RunStream:
        """Follow a run again from after `after_seq` (0: from its start)."""
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        return RunStream(self, None, stream_id=run_id, after_seq=after_seq, timeout=timeout)

    def submit_input(self, run_id: str, node_id: str, input: rq.Struct | None = None, *,
                     stop_on_disconnect: bool = False, timeout: float | None = None) -> RunStream:
        """Answer a run's pending input request (ResumeRun) and stream its further events."""
        request = rq.resume_run(run_id, node_id, input, stop_on_disconnect)
        return RunStream(self, lambda t: self.stub.ResumeRun(request, timeout=t), timeout=timeout)

    def get_run(self, run_id: str, *, timeout: float | None = None) -> flow_pb2.Run:
        request = flow_pb2.GetRunRequest(run_id=run_id)
        return (self._unary(self.stub.GetRun, request, flow_pb2.GetRunResponse, timeout)).run

    def stop_run(self, run_id: str, *, timeout: float | None = None) -> flow_pb2.Run:
        request = flow_pb2.StopRunRequest(run_id=run_id)
        return (self._unary(self.stub.StopRun, request, flow_pb2.StopRunResponse, timeout)).run


class Admin(_Resource):
    """Platform statistics, configuration, logs and audit (AdminService; admin only)."""

    def __init__(self, client: Client, stub: admin_pb2_grpc.AdminServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def stats(self, *, window: float | timedelta | None = None, recent_limit: int = 0,
              timeout: float | None = None) -> admin_pb2.GetStatsResponse:
        request = rq.get_stats(window, recent_limit)
        return self._unary(self.stub.GetStats, request, admin_pb2.GetStatsResponse, timeout)

    def config(self, *, category: str = "", timeout: float | None = None) -> admin_pb2.GetConfigResponse:
        request = admin_pb2.GetConfigRequest(category=category)
        return self._unary(self.stub.GetConfig, request, admin_pb2.GetConfigResponse, timeout)

    def update_config(self, values: Mapping[str, str], *, validate_only: bool = False,
                      timeout: float | None = None) -> admin_pb2.UpdateConfigResponse:
        request = admin_pb2.UpdateConfigRequest(values=dict(values), validate_only=validate_only)
        return self._unary(self.stub.UpdateConfig, request, admin_pb2.UpdateConfigResponse, timeout)

    def list_audit_events(self, *, actor_id: str = "", action: str = "", resource_type: str = "",
                          resource_id: str = "", page_size: int = 100,
                          timeout: float | None = None) -> Iterator[admin_pb2.AuditEvent]:
        request = admin_pb2.ListAuditEventsRequest(actor_id=actor_id, action=action, resource_type=resource_type,
                                                   resource_id=resource_id, page_size=page_size)
        return self._pages(self.stub.ListAuditEvents, request, "events", timeout)

    def stream_logs(self, *, query: str = "", tail: int = 0,
                    timeout: float | None = None) -> Iterator[admin_pb2.StreamLogsResponse]:
        """Follow the server's log lines (after the last `tail` ones) until cancelled or `timeout`."""
        request = admin_pb2.StreamLogsRequest(query=query, tail=tail)
        return self._stream(self.stub.StreamLogs(request, timeout=timeout))
