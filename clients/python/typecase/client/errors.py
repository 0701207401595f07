"""Exceptions raised by the SDK, mapped from gRPC status codes and google.rpc.ErrorInfo reasons.

Every failed call raises a `TypecaseError` subclass chosen by the gRPC status code (`NotFound`, `InvalidArgument`,
`Unauthenticated`, ...). The server's machine-readable cause is `error.reason`, the `ErrorReason` name from
common.proto without its `ERROR_REASON_` prefix (for example `"SESSION_DELETED"` or `"INVALID_CREDENTIALS"`);
`error.metadata` names the subject and `error.retry_after` is the server's RetryInfo delay, when it sent one.
Unknown reasons are kept as they come: switch on the class (the code) when the reason is not one you know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf import message as _message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "typecase"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
TRACE_ID_KEY = "x-trace-id"


class Reason(StrEnum):
    """The ErrorReason values of common.proto, without their ERROR_REASON_ prefix. Compares equal to the plain
    string in `TypecaseError.reason`; the server may add reasons this SDK version does not list."""

    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RATE_LIMITED = "RATE_LIMITED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    MODEL_OFFLINE = "MODEL_OFFLINE"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    CONTEXT_TOO_LONG = "CONTEXT_TOO_LONG"
    UNSUPPORTED_FILE_TYPE = "UNSUPPORTED_FILE_TYPE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    DUPLICATE_FILE = "DUPLICATE_FILE"
    PARSE_FAILED = "PARSE_FAILED"
    FLOW_INVALID = "FLOW_INVALID"
    FLOW_ONLINE_NOT_EDITABLE = "FLOW_ONLINE_NOT_EDITABLE"
    FLOW_NOT_PUBLISHED = "FLOW_NOT_PUBLISHED"
    RUN_NOT_WAITING = "RUN_NOT_WAITING"
    TURN_NOT_FOUND = "TURN_NOT_FOUND"
    SESSION_DELETED = "SESSION_DELETED"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    CONFIG_INVALID = "CONFIG_INVALID"
    TURN_IN_PROGRESS = "TURN_IN_PROGRESS"
    STREAM_EXPIRED = "STREAM_EXPIRED"
    USER_DISABLED = "USER_DISABLED"
    RUN_LIMIT_EXCEEDED = "RUN_LIMIT_EXCEEDED"
    NODE_FAILED = "NODE_FAILED"
    MODEL_CAPABILITY_MISSING = "MODEL_CAPABILITY_MISSING"
    TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
    TOOL_ARGUMENTS_INVALID = "TOOL_ARGUMENTS_INVALID"
    TOOL_TIMEOUT = "TOOL_TIMEOUT"
    TOOL_FAILED = "TOOL_FAILED"
    REGISTRATION_CLOSED = "REGISTRATION_CLOSED"
    INVITE_CODE_INVALID = "INVITE_CODE_INVALID"
    ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
    ASSISTANT_NOT_PUBLISHED = "ASSISTANT_NOT_PUBLISHED"
    TOOL_INTERRUPTED = "TOOL_INTERRUPTED"
    AGENT_MAX_STEPS = "AGENT_MAX_STEPS"
    SHARE_LEVEL_INSUFFICIENT = "SHARE_LEVEL_INSUFFICIENT"
    SHARING_LIMIT_EXCEEDED = "SHARING_LIMIT_EXCEEDED"
    API_KEY_RESTRICTED = "API_KEY_RESTRICTED"
    ROLE_NOT_FOUND = "ROLE_NOT_FOUND"
    ROLE_BUILT_IN = "ROLE_BUILT_IN"
    ROLE_IN_USE = "ROLE_IN_USE"
    WRONG_KNOWLEDGE_BASE_KIND = "WRONG_KNOWLEDGE_BASE_KIND"


class TypecaseError(Exception):
    """A failed Typecase call.

    Attributes:
        code: the gRPC status code.
        reason: the ErrorInfo reason (see `Reason`), or "" when the server sent none (transport errors).
        message: the human-readable status message.
        metadata: the ErrorInfo metadata, e.g. ``{"id": "01J..."}``.
        retry_after: seconds to wait before retrying (google.rpc.RetryInfo), or None.
        details: every status detail message, unpacked (ErrorInfo, RetryInfo, BadRequest, ...).
        trace_id: the server's trace id for this call, when it echoed one.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        details: Iterable[_message.Message] = (),
        trace_id: str = "",
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after
        self.details: list[_message.Message] = list(details)
        self.trace_id = trace_id

    def __str__(self) -> str:
        label = f"{self.code.name}/{self.reason}" if self.reason else self.code.name
        return f"{label}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, message={self.message!r}, "
            f"metadata={self.metadata!r})"
        )


class Cancelled(TypecaseError):
    """The call was cancelled (by this client, e.g. a closed channel, or the server)."""

    code = grpc.StatusCode.CANCELLED


class Unknown(TypecaseError):
    """An error the server did not classify (also UPSTREAM_ERROR: the model provider answered with an error)."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(TypecaseError):
    """The request was malformed or out of range (also PAYLOAD_TOO_LARGE, CONTEXT_TOO_LONG, UNSUPPORTED_FILE_TYPE)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(TypecaseError):
    """The call's deadline passed (or, with reason UPSTREAM_TIMEOUT, the model provider's)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(TypecaseError):
    """The resource does not exist or is not visible to the caller (NOT_FOUND, SESSION_DELETED, TURN_NOT_FOUND...)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TypecaseError):
    """A resource with the same unique key exists (ALREADY_EXISTS, DUPLICATE_FILE)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(TypecaseError):
    """Authenticated but not allowed (PERMISSION_DENIED, USER_DISABLED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TypecaseError):
    """A quota or size limit was hit (e.g. FILE_TOO_LARGE); see `RateLimited` for rate limits."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    """A rate limit was hit (RATE_LIMITED, UPSTREAM_RATE_LIMITED): wait `retry_after` seconds and retry."""


class FailedPrecondition(TypecaseError):
    """The system is not in a state that allows the call (MODEL_OFFLINE, TURN_IN_PROGRESS, PARSE_FAILED, ...)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(TypecaseError):
    """The call was aborted, typically by a concurrency conflict; retrying the whole operation may succeed."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(TypecaseError):
    """A position was out of range (STREAM_EXPIRED: the events to resume from are no longer kept)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(TypecaseError):
    """The server does not implement this method (an older server, or a domain not running there)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(TypecaseError):
    """An unexpected server-side failure; `trace_id` (or metadata["trace_id"]) identifies it in the server logs."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(TypecaseError):
    """The server (or a store, or the model provider) is unreachable for now (UNAVAILABLE, UPSTREAM_UNAVAILABLE,
    CIRCUIT_OPEN): retry with backoff. Idempotent calls are retried by the client before this is raised."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(TypecaseError):
    """Unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(TypecaseError):
    """No valid credentials (UNAUTHENTICATED, INVALID_CREDENTIALS, TOKEN_EXPIRED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[TypecaseError]] = {
    cls.code: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable, DataLoss,
        Unauthenticated,
    )
}
_RATE_LIMIT_REASONS = {Reason.RATE_LIMITED, Reason.UPSTREAM_RATE_LIMITED}
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def error_class(code: grpc.StatusCode, reason: str = "") -> type[TypecaseError]:
    """The exception class raised for a status code and ErrorInfo reason."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason in _RATE_LIMIT_REASONS:
        return RateLimited
    return _BY_CODE.get(code, TypecaseError)


_DETAIL_TYPES: dict[str, type[_message.Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest,
        error_details_pb2.DebugInfo, error_details_pb2.QuotaFailure, error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo, error_details_pb2.RequestInfo, error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}


def _unpack(details: Iterable[any_pb2.Any]) -> list[_message.Message]:
    """The google.rpc detail messages, unpacked; other types stay packed as Any."""
    unpacked: list[_message.Message] = []
    for packed in details:
        cls = _DETAIL_TYPES.get(packed.TypeName())
        if cls is None:
            unpacked.append(packed)
            continue
        value = cls()
        packed.Unpack(value)
        unpacked.append(value)
    return unpacked


def from_status(status: status_pb2.Status, *, trace_id: str = "", default_message: str = "") -> TypecaseError:
    """The exception for a google.rpc.Status, e.g. the in-band `error` event of a chat turn or a failed file's
    `error`."""
    code = _CODES_BY_VALUE.get(status.code, grpc.StatusCode.UNKNOWN)
    details = _unpack(status.details)
    reason, metadata, retry_after = "", {}, None
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo) and not reason:
            reason, metadata = detail.reason, dict(detail.metadata)
        elif isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay"):
            retry_after = detail.retry_delay.ToTimedelta().total_seconds()
    cls = error_class(code, reason)
    return cls(
        status.message or default_message or code.name.lower().replace("_", " "),
        code=code, reason=reason, metadata=metadata, retry_after=retry_after, details=details, trace_id=trace_id,
    )


def _metadata_value(metadata: Any, key: str) -> str | bytes | None:
    for item in metadata or ():
        name, value = item[0], item[1]
        if name == key:
            return value  # type: ignore[no-any-return]
    return None


def as_call(error: BaseException) -> grpc.Call | None:
    """The grpc.Call a synchronous RpcError is (grpcio's errors are both), else None."""
    return cast(grpc.Call, error) if callable(getattr(error, "code", None)) else None


def status_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    """The status code of a failed call, blocking or asyncio, or None for an RpcError that is not a call."""
    call = as_call(error)
    return call.code() if call is not None else None


def from_rpc_error(error: grpc.RpcError | grpc.aio.AioRpcError) -> TypecaseError:
    """The exception for a failed gRPC call (sync or asyncio), read from its status code, message and the
    `grpc-status-details-bin` trailer."""
    if isinstance(error, grpc.aio.AioRpcError):
        code, message = error.code(), error.details() or ""
        headers, trailers = error.initial_metadata(), error.trailing_metadata()
    elif (call := as_call(error)) is not None:
        code, message = call.code(), call.details() or ""
        headers, trailers = call.initial_metadata(), call.trailing_metadata()
    else:  # an RpcError that is not a Call: nothing more to read
        return Unknown(str(error) or "rpc failed")
    trace = _metadata_value(trailers, TRACE_ID_KEY) or _metadata_value(headers, TRACE_ID_KEY)
    trace_id = trace.decode() if isinstance(trace, bytes) else trace or ""
    raw = _metadata_value(trailers, STATUS_DETAILS_KEY)
    if isinstance(raw, bytes):
        status = status_pb2.Status.FromString(raw)
        if status.code == code.value[0]:
            return from_status(status, trace_id=trace_id, default_message=message)
    return error_class(code)(message or code.name.lower().replace("_", " "), code=code, trace_id=trace_id)
