"""Typecase Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) over gRPC.

    from typecase.client import Client

    with Client("localhost:50051", api_key="tc_...") as client:
        session = client.chat.create_session()
        for event in client.chat.stream(session.id, "Hello!"):
            print(event.text, end="", flush=True)

See the README of the `typecase-client` distribution for connecting, streaming with resume, uploads, flows and
error handling.
"""

from typecase.client._aio import (
    AsyncAdmin,
    AsyncAuth,
    AsyncChat,
    AsyncChatStream,
    AsyncClient,
    AsyncFlows,
    AsyncKnowledge,
    AsyncLLM,
    AsyncRunStream,
)
from typecase.client._config import IDEMPOTENT_METHODS, Keepalive, RetryPolicy
from typecase.client._sync import Admin, Auth, Chat, ChatStream, Client, Flows, Knowledge, LLM, RunStream
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
    "AsyncAuth",
    "AsyncChat",
    "AsyncChatStream",
    "AsyncClient",
    "AsyncFlows",
    "AsyncKnowledge",
    "AsyncLLM",
    "AsyncRunStream",
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
