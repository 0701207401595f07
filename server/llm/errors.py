"""The LLM service's failures as the caller sees them: gRPC code + ErrorInfo reason (+ RetryInfo when useful)."""

from __future__ import annotations

import grpc

from typecase.server.llm.providers import CONTEXT, RATE_LIMITED, TIMEOUT, UNAVAILABLE, UNSUPPORTED, UpstreamError
from typecase.server.rpc.errors import TypecaseError

_UPSTREAM = {
    UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "the upstream is unavailable"),
    RATE_LIMITED: (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
        "the upstream rate-limited the request",
    ),
    TIMEOUT: (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", "the upstream timed out"),
    CONTEXT: (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_TOO_LONG", "the prompt does not fit the model's context"),
    UNSUPPORTED: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "the provider cannot do this"),
}


def _meta(model, provider_name: str) -> dict[str, str]:
    return {"model_id": model.id, "model": model.name, "provider": provider_name}


def upstream_error(exc: UpstreamError, model, provider_name: str, attempts: int = 1) -> TypecaseError:
    code, reason, summary = _UPSTREAM.get(
        exc.kind, (grpc.StatusCode.UNKNOWN, "UPSTREAM_ERROR", "the upstream answered with an error")
    )
    metadata = _meta(model, provider_name)
    if exc.status is not None:
        metadata["upstream_status"] = str(exc.status)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    message = f"model {model.name!r} (provider {provider_name!r}): {summary}{tried}: {exc.message}"
    retry_after = exc.retry_after if exc.kind in (RATE_LIMITED, UNAVAILABLE) else None
    return TypecaseError(code, reason, message, metadata, retry_after=retry_after)


def circuit_open(model, provider_name: str, retry_after: float) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.UNAVAILABLE,
        "CIRCUIT_OPEN",
        f"model {model.name!r} is failing repeatedly; its circuit breaker is open (retry in {retry_after:.0f}s)",
        _meta(model, provider_name),
        retry_after=retry_after,
    )


def rate_limited(model, provider_name: str, what: str, retry_after: float | None) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"model {model.name!r} is at its {what} limit; retry later",
        {**_meta(model, provider_name), "limit": what},
        retry_after=retry_after,
    )


def model_offline(model, why: str = "switched offline by an administrator") -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "MODEL_OFFLINE",
        f"model {model.name!r} is {why}",
        {"model_id": model.id, "model": model.name},
    )


def model_not_found(ref: str, message: str | None = None) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", message or f"model {ref!r} not found", {"model_id": ref}
    )


def wrong_type(model, wanted: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        f"model {model.name!r} is a {model.type} model; this call needs a {wanted} model",
        {"model_id": model.id, "field": "model_id"},
    )


def capability_missing(model, capability: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "MODEL_CAPABILITY_MISSING",
        f"model {model.name!r} does not support {capability} (its capabilities say so; an admin can "
        f"change them), and the request needs it",
        {"model_id": model.id, "model": model.name, "capability": capability},
    )


def invalid_output(model, what: str, problem: str) -> TypecaseError:
    """The model answered, but not in the shape the caller required (strict tools or response format)."""
    return TypecaseError(
        grpc.StatusCode.UNKNOWN,
        "UPSTREAM_ERROR",
        f"model {model.name!r} returned {what} that does not match the required schema: {problem}",
        {"model_id": model.id, "model": model.name},
    )
