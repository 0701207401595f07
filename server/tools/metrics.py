"""Prometheus metrics per tool (by tool id; the catalogue bounds the label's values)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOOL_CALLS = Counter(
    "typecase_tool_calls_total",
    "Tool calls by tool and outcome (ok, invalid, timeout, failed)",
    ["tool_id", "kind", "outcome"],
)
TOOL_SECONDS = Histogram(
    "typecase_tool_call_seconds",
    "Tool call latency in seconds",
    ["tool_id", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
