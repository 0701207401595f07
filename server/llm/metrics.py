"""Prometheus metrics of the LLM service, labelled by provider and model name."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("provider", "model")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
_GAPS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

TTFT = Histogram(
    "typecase_llm_time_to_first_token_seconds",
    "Time from request to the first streamed token.",
    LABELS,
    buckets=_LATENCY,
)
INTER_TOKEN = Histogram(
    "typecase_llm_inter_token_seconds", "Gap between consecutive streamed chunks.", LABELS, buckets=_GAPS
)
DURATION = Histogram(
    "typecase_llm_request_duration_seconds",
    "Upstream request duration, to the last token.",
    (*LABELS, "operation"),
    buckets=_LATENCY,
)
INPUT_TOKENS = Counter("typecase_llm_input_tokens_total", "Prompt tokens sent upstream.", LABELS)
OUTPUT_TOKENS = Counter("typecase_llm_output_tokens_total", "Completion tokens received.", LABELS)
REQUESTS = Counter("typecase_llm_requests_total", "Upstream requests by outcome.", (*LABELS, "operation", "outcome"))
FAILURES = Counter("typecase_llm_failures_total", "Failed requests by ErrorReason.", (*LABELS, "reason"))
RETRIES = Counter("typecase_llm_retries_total", "Upstream retries.", LABELS)
FALLBACKS = Counter(
    "typecase_llm_fallbacks_total",
    "Requests handed to a fallback model (labels: the one that could not serve).",
    LABELS,
)
BREAKER_STATE = Gauge(
    "typecase_llm_breaker_state",
    "Circuit breaker state as seen by this replica (1 closed, 2 open, 3 half-open).",
    LABELS,
)
IN_FLIGHT = Gauge("typecase_llm_in_flight_requests", "Requests in flight on this replica.", LABELS)


class Children(NamedTuple):
    """A model's labelled children of the metrics every generation touches."""

    ttft: Any
    inter_token: Any
    in_flight: Any
    input_tokens: Any
    output_tokens: Any


@lru_cache(maxsize=4096)  # per (provider, model) name pair; prometheus children are never removed here
def children(labels: tuple[str, str]) -> Children:
    """The children of `labels`, looked up once: prometheus_client's `labels()` validates the values and takes a
    lock on every call, ~6 us each, and a stream used to make seven such calls, three before its first token."""
    return Children(
        TTFT.labels(*labels),
        INTER_TOKEN.labels(*labels),
        IN_FLIGHT.labels(*labels),
        INPUT_TOKENS.labels(*labels),
        OUTPUT_TOKENS.labels(*labels),
    )


@lru_cache(maxsize=4096)
def requests(labels: tuple[str, str], operation: str, outcome: str) -> Any:
    return REQUESTS.labels(*labels, operation, outcome)


@lru_cache(maxsize=4096)
def duration(labels: tuple[str, str], operation: str) -> Any:
    return DURATION.labels(*labels, operation)
