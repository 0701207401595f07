"""Typecase Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) over gRPC.

    from typecase.client import Client

    with Client("localhost:50051", api_key="tc_...") as client:
        session = client.chat.create_session()
        for event in client.chat.stream(session.id, "Hello!"):
            print(event.text, end="", flush=True)

See the README of the `typecase-client` distribution for connecting, streaming with resume, uploads, flows and
error handling.
"""

from typecase.client._async.admin import AsyncAdmin
from typecase.client._async.auth import AsyncAuth
from typecase.client._async.chat import AsyncChat
from typecase.client._async.client import AsyncClient
from typecase.client._async.assistants import AsyncAssistants
from typecase.client._async.flows import AsyncFlows
from typecase.client._async.knowledge import AsyncKnowledge
from typecase.client._async.llm import AsyncLLM
from typecase.client._async.streams import AsyncChatStream, AsyncRunStream
from typecase.client._config import IDEMPOTENT_METHODS, Keepalive, RetryPolicy
from typecase.client._sync.admin import Admin
from typecase.client._sync.auth import Auth
from typecase.client._sync.chat import Chat
from typecase.client._sync.client import Client
from typecase.client._sync.assistants import Assistants
from typecase.client._sync.flows import Flows
from typecase.client._sync.knowledge import Knowledge
from typecase.client._sync.llm import LLM
from typecase.client._sync.streams import ChatStream, RunStream
from typecase.client._upload import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES
from typecase.client._version import __version__
from typecase.client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    RateLimited,
    Reason,
    ResourceExhausted,
    TypecaseError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    from_rpc_error,
    from_status,
)
from typecase.client.events import ChatEvent, RunEvent, RunState, TurnState, UploadProgress

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "IDEMPOTENT_METHODS",
    "LLM",
    "MAX_CHUNK_BYTES",
    "Aborted",
    "Admin",
    "AlreadyExists",
    "AsyncAdmin",
    "AsyncAssistants",
    "AsyncAuth",
    "AsyncChat",
    "AsyncChatStream",
    "AsyncClient",
    "AsyncFlows",
    "AsyncKnowledge",
    "AsyncLLM",
    "AsyncRunStream",
    "Assistants",
    "Auth",
    "Cancelled",
    "Chat",
    "ChatEvent",
    "ChatStream",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Flows",
    "Internal",
    "InvalidArgument",
    "Keepalive",
    "Knowledge",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "RateLimited",
    "Reason",
    "ResourceExhausted",
    "RetryPolicy",
    "RunEvent",
    "RunState",
    "RunStream",
    "TurnState",
    "TypecaseError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "UploadProgress",
    "__version__",
    "from_rpc_error",
    "from_status",
]
