"""What flow authors write, evaluated off the event loop: templates, and conditions that match regexes, run in
worker processes (infra/bounded.py) killed at a deadline and capped in memory.

Measured before: a template of nested `range()` loops that print nothing ran 4.6 s past its 2 s limit (checked
only between output pieces) on the event loop, `~` concatenation built a 256 MB string in 0.4 s, and a condition
`matches` with `^(a+)+$` took 2.7 s on 26 characters; each stalled every gRPC call, HTTP request and proxied stream
of the process. Now templates.py caps what a template builds, regexes are RE2 (linear, but up to ~15 ns per byte
per instruction when RE2 falls back to its NFA: still seconds on large text), and both run here, in processes.
Plain text, whole-value references (`{{kr.citations}}`) and expressions without `matches` (bounded by expr.py's
size limits) stay on the event loop: they cost microseconds and would pay ~0.1 ms for the round trip.
"""

from __future__ import annotations

from typing import Any

from typecase.server.flow import expr, templates
from typecase.server.flow.templates import Limits, TemplateFailed
from typecase.server.infra.bounded import DeadlineExceeded, OutOfMemory, WorkerError, WorkerPool

# A rendered text is JSON-encoded back; an escaped control character takes 6 bytes.
_REPLY_BYTES_PER_CHAR = 6
KILL_GRACE_SECONDS = 0.25


class FlowWorkers:
    def __init__(self, limits: Limits, *, condition_seconds: float, workers: int, memory_bytes: int):
        self.limits = limits
        self.condition_seconds = condition_seconds
        self.memory_bytes = memory_bytes
        self.pool = WorkerPool(
            f"{__name__}:run_job",
            workers=workers,
            memory_bytes=memory_bytes,
            max_reply_bytes=limits.max_output_chars * _REPLY_BYTES_PER_CHAR + 65_536,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> FlowWorkers:
        return cls(
            Limits.from_settings(settings),
            condition_seconds=settings.flow_condition_timeout_seconds,
            workers=settings.flow_eval_workers,
            memory_bytes=settings.flow_eval_memory_bytes,
        )

    # -- templates ---------------------------------------------------------------------------------------------
    async def render(self, source: str, scope: dict[str, Any]) -> str:
        """A template rendered to text (a plain string renders to itself). Raises TemplateFailed naming the
        limit a template ran into."""
        if not templates.has_template(source):
            return source
        if len(source) > self.limits.max_chars:
            raise TemplateFailed(f"template longer than {self.limits.max_chars} characters (flow_template_max_chars)")
        request = {"job": "render", **templates.render_request(source, scope, self.limits)}
        try:
            # A template checks its own deadline and says so; the kill, a little later, is for what it cannot
            # check (one long C call), and costs a new worker.
            return await self.pool.call(request, self.limits.timeout_seconds + KILL_GRACE_SECONDS)
        except DeadlineExceeded:
            raise TemplateFailed(
                f"template took longer than {self.limits.timeout_seconds:g}s (flow_template_timeout_seconds)"
            ) from None
        except OutOfMemory:
            raise TemplateFailed(
                f"template needed more than {self.memory_bytes} bytes of memory (flow_eval_memory_bytes)"
            ) from None
        except WorkerError as exc:
            raise TemplateFailed(str(exc)) from None

    async def resolve(self, value: Any, scope: dict[str, Any]) -> Any:
        """Templates anywhere in a JSON value resolved: a whole-value reference keeps the referenced value's type,
        other strings render to text; lists and objects are resolved item by item."""
        if isinstance(value, str):
            if not templates.has_template(value):
                return value
            path = templates.reference_path(value)
            if path is not None:
                return templates.lookup(path, scope)
            return await self.render(value, scope)
        if isinstance(value, list):
            return [await self.resolve(item, scope) for item in value]
        if isinstance(value, dict):
            return {key: await self.resolve(item, scope) for key, item in value.items()}
        return value

    # -- conditions --------------------------------------------------------------------------------------------
    async def evaluate(self, source: str, scope: dict[str, Any]) -> Any:
        """A condition expression's value (raises ExpressionError). One that calls matches() runs in a worker."""
        if not expr.uses_regex(source):
            return expr.evaluate(source, scope)
        names = {name for name, _ in expr.names(source)}
        return await self._condition(
            {"job": "expression", "source": source, "scope": {name: scope[name] for name in names if name in scope}}
        )

    async def matches(self, text: Any, pattern: Any) -> bool:
        """Whether the RE2 pattern matches anywhere in the text (raises ExpressionError)."""
        return bool(await self._condition({"job": "match", "text": str(text), "pattern": str(pattern)}))

    async def _condition(self, request: dict[str, Any]) -> Any:
        try:
            return await self.pool.call(request, self.condition_seconds)
        except DeadlineExceeded:
            raise expr.ExpressionError(
                f"took longer than {self.condition_seconds:g}s (flow_condition_timeout_seconds)"
            ) from None
        except OutOfMemory:
            raise expr.ExpressionError(
                f"needed more than {self.memory_bytes} bytes of memory (flow_eval_memory_bytes)"
            ) from None
        except WorkerError as exc:
            raise expr.ExpressionError(str(exc)) from None

    async def close(self) -> None:
        await self.pool.close()


# -- in the worker processes ---------------------------------------------------------------------------------------
JOBS = {
    "render": templates.render_job,
    "expression": lambda request: expr.evaluate(request["source"], request["scope"]),
    "match": lambda request: expr.FUNCTIONS["matches"](request["text"], request["pattern"]),
}


def run_job(request: dict[str, Any]) -> Any:
    return JOBS[request["job"]](request)
