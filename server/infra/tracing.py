"""OpenTelemetry traces, off unless an OTLP endpoint is configured.

One trace follows a request across the gateway (an ASGI server span, opentelemetry-instrumentation-asgi), the RPC
(rpc/trace.py), a chat turn, knowledge search and the LLM call (GenAI semantic conventions: model, tokens, time
to first token), exported in batches over OTLP/HTTP protobuf (opentelemetry-exporter-otlp-proto-http).

Off means free: callers use `span()` / `start_span()`, which return a shared null context manager or None while
tracing is off, so a call site costs one global read, not the no-op API's span objects. The provider is ours,
not the process-global one, so several Apps in one process (tests) start and stop tracing independently of any
other OpenTelemetry user in the process; the last configure() wins for this module's spans.

The RPC span is not opentelemetry-instrumentation-grpc's interceptor: that one takes its parent only from the
call's metadata, so an HTTP call dispatched in-process (the same task, the ASGI span current) would start a new
trace. Ours continues the current span, else the caller's traceparent.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_NULL = contextlib.nullcontext()

_provider: Any = None
_tracer: Any = None


def enabled() -> bool:
    return _tracer is not None


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP: a base endpoint gets /v1/traces appended, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def configure(
    endpoint: str,
    *,
    service_name: str = "typecase",
    sample_ratio: float = 1.0,
    export_timeout_seconds: float = 10.0,
    max_queue_spans: int = 2048,
    schedule_delay_seconds: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Start exporting spans to `endpoint` (the collector's base URL or its /v1/traces URL)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    global _provider, _tracer
    shutdown()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    # Without headers here, the exporter reads OTEL_EXPORTER_OTLP_HEADERS (credentials stay out of our settings).
    exporter = OTLPSpanExporter(
        endpoint=traces_url(endpoint), timeout=export_timeout_seconds, headers=dict(headers) if headers else None
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_spans,
            max_export_batch_size=min(512, max_queue_spans),
            schedule_delay_millis=schedule_delay_seconds * 1000,
            export_timeout_millis=export_timeout_seconds * 1000,
        )
    )
    _provider, _tracer = provider, provider.get_tracer("typecase")
    log.info("tracing: exporting spans to %s", traces_url(endpoint))


def shutdown() -> None:
    """Flush what is queued and stop exporting (blocking, bounded by the export timeout)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_seconds: float = 5.0) -> bool:
    return _provider.force_flush(int(timeout_seconds * 1000)) if _provider is not None else True


def span(
    name: str, attributes: Mapping[str, Any] | None = None, kind: str = "INTERNAL", context: Any = None
) -> contextlib.AbstractContextManager[Any]:
    """A span current for the block (a null context manager while tracing is off)."""
    if _tracer is None:
        return _NULL
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(name, context=context, kind=SpanKind[kind], attributes=_clean(attributes))


def start_span(name: str, attributes: Mapping[str, Any] | None = None, kind: str = "INTERNAL") -> Any:
    """A span the caller ends (for async generators, whose steps may run in other contexts); None when off."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    return _tracer.start_span(name, kind=SpanKind[kind], attributes=_clean(attributes))


def rpc_span(method: str, metadata: Sequence[tuple[str, Any]] | None) -> contextlib.AbstractContextManager[Any]:
    """The span of one RPC: a child of the current span (an HTTP call served in-process), else of the caller's
    W3C traceparent in the metadata, else a new trace."""
    if _tracer is None:
        return _NULL
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    service, _, name = method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    if trace.get_current_span().get_span_context().is_valid:
        return span(method.lstrip("/"), attributes)
    carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
    return span(method.lstrip("/"), attributes, kind="SERVER", context=extract(carrier))


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits (None when off or outside a span)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def asgi(app: Any, excluded_paths: Sequence[str] = ("/healthz", "/readyz", "/metrics")) -> Any:
    """The HTTP app wrapped in a server span per request (unchanged while tracing is off). Per-message send and
    receive spans are left out: a streamed answer would make one span per token."""
    if _tracer is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app,
        excluded_urls=",".join(excluded_paths),
        tracer_provider=_provider,
        exclude_spans=["receive", "send"],
        default_span_details=_http_span_details,
    )


_ID_SEGMENT = re.compile(r"^(?=[^:]*\d)[A-Za-z0-9_-]{16,}")


def _http_span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`POST /v1/sessions/{id}:chat`: span names must not carry ids (one name per route, not per resource), and
    the transcoder's routes are not known to an outer middleware, so id-like segments are masked."""
    method = scope.get("method") or "WS"
    path = "/".join(_ID_SEGMENT.sub("{id}", part) for part in scope.get("path", "").split("/"))
    return f"{method} {path}", {}


def set_attributes(target: Any, attributes: Mapping[str, Any]) -> None:
    if target is not None:
        target.set_attributes(_clean(attributes))


@contextlib.contextmanager
def ended(target: Any) -> Iterator[Any]:
    """End a start_span() span when the block exits, recording an exception that escapes it."""
    try:
        yield target
    except BaseException as exc:
        if target is not None and not isinstance(exc, GeneratorExit):
            from opentelemetry.trace import Status, StatusCode

            target.record_exception(exc)
            target.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
        raise
    finally:
        if target is not None:
            target.end()


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenTelemetry accepts str, bool, int, float and sequences of them; drop None values."""
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}
