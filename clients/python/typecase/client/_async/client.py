"""The client itself (`AsyncClient`; `Client` in _sync/): settings, the channel and its credentials, one helper per
service."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from typecase.client._async.admin import AsyncAdmin
from typecase.client._async.assistants import AsyncAssistants
from typecase.client._async.auth import AsyncAuth
from typecase.client._async.chat import AsyncChat
from typecase.client._async.flows import AsyncFlows
from typecase.client._async.groups import AsyncGroups
from typecase.client._async.knowledge import AsyncKnowledge
from typecase.client._async.llm import AsyncLLM
from typecase.client._async.roles import AsyncRoles
from typecase.client._channel import AsyncTransport, Credentials
from typecase.client._config import Keepalive, OptionValue, RetryPolicy, Settings, resolve
from typecase.client.errors import Unavailable, from_rpc_error
from typecase.v1 import (
    admin_pb2_grpc,
    assistant_pb2_grpc,
    auth_pb2_grpc,
    chat_pb2_grpc,
    flow_pb2_grpc,
    groups_pb2_grpc,
    knowledge_pb2_grpc,
    llm_pb2_grpc,
    roles_pb2_grpc,
)

MiB = 1024 * 1024


class AsyncClient:
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

    The resource helpers are `auth`, `llm`, `chat`, `knowledge`, `flows`, `assistants`, `admin`, `groups` and
    `roles`; each has `.stub`, the raw generated stub on the same authenticated channel, for everything the helpers
    do not cover (see `call`).
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
        self._transport = AsyncTransport(self.settings, self._credentials)
        self.channel = self._transport.channel
        self.auth = AsyncAuth(self, auth_pb2_grpc.AuthServiceStub(self.channel))
        self.llm = AsyncLLM(self, llm_pb2_grpc.LLMServiceStub(self.channel))
        self.chat = AsyncChat(self, chat_pb2_grpc.ChatServiceStub(self.channel))
        self.knowledge = AsyncKnowledge(self, knowledge_pb2_grpc.KnowledgeServiceStub(self.channel))
        self.flows = AsyncFlows(self, flow_pb2_grpc.FlowServiceStub(self.channel))
        self.assistants = AsyncAssistants(self, assistant_pb2_grpc.AssistantServiceStub(self.channel))
        self.admin = AsyncAdmin(self, admin_pb2_grpc.AdminServiceStub(self.channel))
        self.groups = AsyncGroups(self, groups_pb2_grpc.GroupServiceStub(self.channel))
        self.roles = AsyncRoles(self, roles_pb2_grpc.RoleServiceStub(self.channel), self.auth.stub)

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

    async def call(self, method: Callable[..., Any], request: Any, *, timeout: float | None = None) -> Any:
        """Invoke a unary (or client-streaming) method of a raw stub, e.g.
        `client.call(client.llm.stub.TestModel, request)`, with the client's deadline and error mapping: failures
        raise TypecaseError subclasses."""
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait (block, with Client) until the channel is connected; raises Unavailable after `timeout` seconds."""
        if not await self._transport.wait_until_ready(timeout):
            raise Unavailable(f"could not connect to {self.target} within {timeout}s")

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls and streams in progress fail with Cancelled. `grace` (AsyncClient only; the
        blocking channel refuses it) lets them finish for up to that many seconds first."""
        await self._transport.close(grace)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"
