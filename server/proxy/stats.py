"""Request statistics of this process, in bounded memory, plus Prometheus metrics.

- totals since start: requests, successes, failures, bytes, tokens, by status, by path, by model;
- the latest N requests with their timings (a deque, default 1,000) and the latest M errors (default 500);
- distinct paths and models are counted up to `max_keys` each, then under "(other)", so a client sending random
  paths cannot grow memory or metric cardinality.

Everything here runs on the event loop thread; a request costs a few dict and deque operations.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

OTHER = "(other)"
# Paths named in metrics labels; every other path is "other" there (stats maps keep up to max_keys paths).
KNOWN_ROUTES = frozenset(
    {
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/messages/batches",
        "/v1/complete",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
    }
)
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

REQUESTS = PromCounter("typecase_proxy_requests_total", "Requests served by the LLM API proxy.", ("route", "status"))
REQUEST_SECONDS = Histogram(
    "typecase_proxy_request_seconds", "Total time of proxied requests.", ("route",), buckets=_TIME_BUCKETS
)
TTFB_SECONDS = Histogram(
    "typecase_proxy_time_to_first_byte_seconds",
    "Time from request arrival to the first response body byte (first token of a stream).",
    ("route",),
    buckets=_TIME_BUCKETS,
)
IN_FLIGHT = Gauge("typecase_proxy_in_flight_requests", "Proxied requests being served.")
REQUEST_BYTES = PromCounter("typecase_proxy_request_bytes_total", "Request body bytes forwarded upstream.")
RESPONSE_BYTES = PromCounter("typecase_proxy_response_bytes_total", "Response body bytes returned to clients.")
TOKENS = PromCounter("typecase_proxy_tokens_total", "Tokens reported by upstream usage fields.", ("kind",))
ERRORS = PromCounter("typecase_proxy_errors_total", "Failed proxied requests, by reason.", ("reason",))

# Usage counters as Anthropic (input/output_tokens) and OpenAI (prompt/completion_tokens) report them.
_USAGE = re.compile(rb'"(input_tokens|output_tokens|prompt_tokens|completion_tokens)"\s*:\s*(\d{1,12})')
_PROMPT_KEYS = (b"input_tokens", b"prompt_tokens")


def route_label(path: str) -> str:
    return path if path in KNOWN_ROUTES else "other"


class UsageScanner:
    """Picks token counts out of response chunks as they pass (usage objects, streamed or not). Cheap: a chunk
    without the text "usage" or "_tokens" costs one substring search."""

    __slots__ = ("prompt", "completion", "_tail")

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        self._tail = chunk[-40:]
        if b"_tokens" not in data:
            return
        for key, value in _USAGE.findall(data):  # a match seen twice (in the tail) is harmless: max() below
            n = int(value)
            if key in _PROMPT_KEYS:
                self.prompt = max(self.prompt, n)
            else:  # streamed output counts are cumulative
                self.completion = max(self.completion, n)


@dataclass(slots=True)
class RequestRecord:
    trace_id: str
    time: float  # epoch seconds at arrival
    source: int
    method: str
    path: str
    model: str = ""
    status: int = 0
    ttfb: float | None = None
    latency: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0
    stream: bool = False
    user_id: str = ""
    error_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class ErrorRecord:
    id: int
    trace_id: str
    time: float
    source: int
    method: str
    path: str
    model: str
    status: int
    reason: str
    message: str
    upstream_status: int = 0
    upstream_body: str = ""
    latency: float = 0.0


@dataclass(slots=True)
class ModelAggregate:
    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_sum: float = 0.0
    ttft_count: int = 0
    latency_sum: float = 0.0


@dataclass(slots=True)
class Aggregate:
    """Totals over some set of requests."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_path: Counter = field(default_factory=Counter)
    by_model: dict[str, ModelAggregate] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttfb_sum: float = 0.0
    ttfb_count: int = 0
    latency_sum: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0

    def add(self, r: RequestRecord, max_keys: int) -> None:
        self.requests += 1
        failed = r.status >= 400 or r.status == 0
        if failed:
            self.failures += 1
        else:
            self.successes += 1
        self.by_status[str(r.status)] += 1
        path = r.path if r.path in self.by_path or len(self.by_path) < max_keys else OTHER
        self.by_path[path] += 1
        if r.model:
            name = r.model if r.model in self.by_model or len(self.by_model) < max_keys else OTHER
            agg = self.by_model.get(name)
            if agg is None:
                agg = self.by_model[name] = ModelAggregate()
            agg.requests += 1
            agg.failures += failed
            agg.prompt_tokens += r.prompt_tokens
            agg.completion_tokens += r.completion_tokens
            agg.latency_sum += r.latency
            if r.ttfb is not None and r.stream:
                agg.ttft_sum += r.ttfb
                agg.ttft_count += 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        if r.ttfb is not None:
            self.ttfb_sum += r.ttfb
            self.ttfb_count += 1
        self.latency_sum += r.latency
        self.request_bytes += r.request_bytes
        self.response_bytes += r.response_bytes

    def merge(self, other: Aggregate, max_keys: int) -> None:
        """Add another process's totals (keys past max_keys count under "(other)", as in `add`)."""
        for name in ("requests", "successes", "failures", "prompt_tokens", "completion_tokens", "ttfb_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("ttfb_sum", "latency_sum", "request_bytes", "response_bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_status.update(other.by_status)
        for path, n in other.by_path.items():
            self.by_path[path if path in self.by_path or len(self.by_path) < max_keys else OTHER] += n
        for name, m in other.by_model.items():
            key = name if name in self.by_model or len(self.by_model) < max_keys else OTHER
            mine = self.by_model.setdefault(key, ModelAggregate())
            for f in ModelAggregate.__slots__:
                setattr(mine, f, getattr(mine, f) + getattr(m, f))

    @classmethod
    def of(cls, records: Iterable[RequestRecord], max_keys: int) -> Aggregate:
        agg = cls()
        for r in records:
            agg.add(r, max_keys)
        return agg


class RequestStats:
    def __init__(self, recent_requests: int = 1000, recent_errors: int = 500, max_keys: int = 500):
        self.start_time = time.time()
        self.max_keys = max_keys
        self.totals = Aggregate()
        self.by_source: dict[int, Aggregate] = {}  # the same, per surface (API, OPENAI, PROXY: three at most)
        self.in_flight = 0
        self.recent: deque[RequestRecord] = deque(maxlen=recent_requests)
        self.errors: deque[ErrorRecord] = deque(maxlen=recent_errors)
        self._error_ids = itertools.count(1)
        self.changes = 0  # bumped on every change, so that a publisher (shared.py) skips unchanged snapshots

    def begin(self) -> None:
        self.changes += 1
        self.in_flight += 1
        IN_FLIGHT.inc()

    def finish(self, record: RequestRecord, error: tuple[str, int, str] | None = None, message: str = "") -> None:
        """Account one completed request. `error` = (reason, upstream status, upstream body) for a failure."""
        self.in_flight -= 1
        IN_FLIGHT.dec()  # (changes: counted in _keep)
        route = route_label(record.path)
        REQUESTS.labels(route, str(record.status)).inc()
        REQUEST_SECONDS.labels(route).observe(record.latency)
        if record.ttfb is not None:
            TTFB_SECONDS.labels(route).observe(record.ttfb)
        REQUEST_BYTES.inc(record.request_bytes)
        RESPONSE_BYTES.inc(record.response_bytes)
        if record.prompt_tokens:
            TOKENS.labels("prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            TOKENS.labels("completion").inc(record.completion_tokens)
        if error is not None:
            ERRORS.labels(error[0]).inc()
        self._keep(record, error, message)

    def record(self, record: RequestRecord, error: tuple[str, int, str] | None = None, message: str = "") -> None:
        """Account a request that did not go through the proxy (the API and OpenAI-compatible surfaces): in the
        stats and recent lists, not in the proxy's in-flight count or its Prometheus metrics."""
        self._keep(record, error, message)

    def _keep(self, record: RequestRecord, error: tuple[str, int, str] | None, message: str) -> None:
        self.changes += 1
        self.totals.add(record, self.max_keys)
        self.by_source.setdefault(record.source, Aggregate()).add(record, self.max_keys)
        self.recent.append(record)
        if error is not None:
            reason, upstream_status, upstream_body = error
            self.errors.append(
                ErrorRecord(
                    id=next(self._error_ids),
                    trace_id=record.trace_id,
                    time=record.time,
                    source=record.source,
                    method=record.method,
                    path=record.path,
                    model=record.model,
                    status=record.status,
                    reason=reason,
                    message=message,
                    upstream_status=upstream_status,
                    upstream_body=upstream_body,
                    latency=record.latency,
                )
            )

    def resize(self, recent_requests: int, recent_errors: int) -> None:
        if recent_requests != self.recent.maxlen:
            self.recent = deque(self.recent, maxlen=recent_requests)
        if recent_errors != self.errors.maxlen:
            self.errors = deque(self.errors, maxlen=recent_errors)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]
