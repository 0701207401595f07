"""Domain errors: a TypecaseError raised anywhere in a servicer reaches the client as its gRPC code with a
google.rpc.ErrorInfo{reason, domain="typecase", metadata} in grpc-status-details-bin. A backing service that cannot
be reached (Redis, the database) becomes UNAVAILABLE with a retry delay: an outage, not a bug. Anything else becomes
INTERNAL carrying the trace id, and is logged once with its stack."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from typecase.server.logs import trace_id_var
from typecase.server.rpc.interceptors import WrappingInterceptor, initial_metadata_sent

DOMAIN = "typecase"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
log = logging.getLogger("typecase.rpc")


class TypecaseError(Exception):
    """An error meant for the caller. `reason` is an ErrorReason name without its ERROR_REASON_ prefix."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after

    def to_status(self) -> status_pb2.Status:
        details = [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)]
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(max(0, int(self.retry_after * 1000)))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        packed = []
        for detail in details:
            packed.append(any_pb2.Any())
            packed[-1].Pack(detail)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


def not_found(kind: str, resource_id: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.NOT_FOUND, "NOT_FOUND", f"{kind} {resource_id!r} not found", {"id": resource_id}
    )


def invalid_argument(field: str, problem: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", f"{field}: {problem}", {"field": field})


OUTAGE_RETRY_SECONDS = 1.0


def unreachable_backend(exc: BaseException) -> str | None:
    """The backing service `exc` says is unreachable, or None when it is some other failure."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "Redis"
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    ):
        return "the database"
    if isinstance(exc, ConnectionError):  # adapters raise ConnectionError subclasses naming their backend
        return getattr(exc, "backend", "a backing service")
    return None


def outage_error(exc: BaseException) -> TypecaseError | None:
    backend = unreachable_backend(exc)
    if backend is None:
        return None
    return TypecaseError(
        grpc.StatusCode.UNAVAILABLE,
        "UNAVAILABLE",
        f"{backend} is unreachable right now; retry shortly",
        {"backend": backend, "trace_id": trace_id_var.get()},
        retry_after=OUTAGE_RETRY_SECONDS,
    )


async def abort_with(context: grpc.aio.ServicerContext, error: TypecaseError) -> None:
    status = error.to_status()
    await initial_metadata_sent()
    await context.abort(
        error.code, error.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


class ErrorInterceptor(WrappingInterceptor):
    def around(self, details, context, rpc_type):
        return _Mapped(details, context)


class _Mapped:
    """Maps what escapes one call to its status; a plain async context manager (an @asynccontextmanager generator
    costs a few microseconds more on every call)."""

    __slots__ = ("details", "context")

    def __init__(self, details, context):
        self.details = details
        self.context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
            return False  # CancelledError and GeneratorExit are BaseExceptions: they pass as they are
        context = self.context
        if isinstance(exc, TypecaseError):
            await abort_with(context, exc)
            return False
        if (outage := outage_error(exc)) is not None:
            log.warning(
                "%s failed: %s unreachable (%s: %s)",
                self.details.method,
                outage.metadata["backend"],
                type(exc).__name__,
                exc,
            )
            await abort_with(context, outage)
        code = context.code()
        if code not in (None, grpc.StatusCode.OK):
            # The handler chose its status before raising (generated base servicers do so for UNIMPLEMENTED).
            await initial_metadata_sent()
            await context.abort(code, context.details() or code.name)
        trace_id = trace_id_var.get()
        log.exception("unhandled error in %s", self.details.method, exc_info=exc)
        await abort_with(
            context,
            TypecaseError(
                grpc.StatusCode.INTERNAL,
                "INTERNAL",
                f"internal error (trace id {trace_id})",
                {"trace_id": trace_id},
            ),
        )
        return False
