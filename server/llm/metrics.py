"""Prometheus metrics of the LLM service, labelled by provider and model name."""

from __future__ import annotations

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
