"""Inference: resolves a model, walks its fallback chain, and runs each candidate behind the breaker, the limits
and the retry policy. Generation is relayed as the upstream produces it.

Order per candidate: breaker (fail fast), rate limits, concurrency slot, then the upstream call with retries.
Retries and fallbacks happen only before the first token reached the caller; after that a failure ends the
stream with its error (the caller already holds part of an answer).

Over 600 lines on purpose: one class, Inference, whose entry points (generate, complete, embed, rerank)
share one walk over a model's candidates (resolve, admit, call with retries, fall back, record) and its adapter
cache; breaker, limits, slots and providers are modules of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from typecase.server.config import Settings
from typecase.server.infra import tracing
from typecase.server.infra.slots import Concurrency
from typecase.server.llm import errors, metrics
from typecase.server.llm.answers import add_tool_calls, check_answer
from typecase.server.llm.coalesce import Coalescer
from typecase.server.llm.models import ModelRow, ProviderRow
from typecase.server.llm.prompt import FileReader, Limits, Prompt, build_prompt, chat_call, resolve_files
from typecase.server.llm.providers import (
    BREAKER_FAILURES,
    RATE_LIMITED,
    TIMEOUT,
    UNAVAILABLE,
    Adapter,
    ChatCall,
    Delta,
    Message,
    Timeouts,
    UpstreamError,
    estimate_tokens,
)
from typecase.server.llm.providers.types import PROVIDER_TYPES, AdapterArgs, capabilities
from typecase.server.llm.registry import Registry
from typecase.server.llm.resilience import (
    Breaker,
    BreakerOpen,
    LimitExceeded,
    RateLimits,
    RetryWait,
    StatusLog,
    Ticket,
    retryable,
)
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import common_pb2, llm_pb2

log = logging.getLogger("typecase.llm")
T = TypeVar("T")

# Failures after which the next model in the chain is tried.
FALLBACK_KINDS = frozenset({UNAVAILABLE, RATE_LIMITED, TIMEOUT})
_NO_SPAN = nullcontext()  # traces off: tracing.ended(None)'s generator-based context manager would do nothing
RETIRED_ADAPTER_GRACE = 600.0  # seconds an adapter replaced by a provider edit stays open for streams still using it


class Unserved(Exception):
    """A candidate model could not serve the request before producing output."""

    def __init__(self, error: TypecaseError, fallback: bool):
        super().__init__(error.message)
        self.error = error
        self.fallback = fallback


@dataclass(slots=True)
class Target:
    model: ModelRow
    provider: ProviderRow
    adapter: Adapter
    timeouts: Timeouts
    max_retries: int
    labels: tuple[str, str]
    # The model's admission settings as plain values: an ORM attribute read costs ~0.5 us through SQLAlchemy's
    # descriptor, and admission read ten of them on every call (the rows change only with a registry reload, which
    # makes new Targets).
    model_id: str = ""
    max_concurrency: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    gate: tuple[str | None, int] = (None, 0)  # Breaker.gate(model_id): fixed per model and process


class Inference:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        breaker: Breaker,
        concurrency: Concurrency,
        rate_limits: RateLimits,
        status_log: StatusLog,
        files: FileReader | None = None,
    ):
        self.registry = registry
        self.settings = settings
        self.breaker = breaker
        self.concurrency = concurrency
        self.rate_limits = rate_limits
        self.status_log = status_log
        self.retry_wait = RetryWait(settings.llm_retry_backoff_seconds, settings.llm_retry_backoff_max_seconds)
        self.is_retryable = retryable(settings.llm_retry_after_max_seconds)
        self.retryable = retry_if_exception(self.is_retryable)
        self.files = files
        self.limits = Limits(max_tools=settings.llm_max_tools, max_image_bytes=settings.llm_max_image_bytes)
        self._shared: dict[str, Adapter] = {}  # per provider type, for types whose one adapter serves all
        self._adapters: dict[str, tuple[Any, Adapter]] = {}
        self._retired: list[tuple[float, Adapter]] = []
        self._dimensions: dict[str, int] = {}
        self._targets: dict[str, Target] = {}  # by model id, for the registry snapshot of _targets_version
        self._targets_version = -1

    async def aclose(self) -> None:
        for _, adapter in self._adapters.values():
            await adapter.aclose()
        for _, adapter in self._retired:
            await adapter.aclose()
        for adapter in self._shared.values():
            await adapter.aclose()
        self._adapters.clear()
        self._retired.clear()
        self._shared.clear()

    # -- resolution ----------------------------------------------------------------------------------------------
    async def resolve(self, ref: str, use: str, model_type: str) -> ModelRow:
        """The model a request names (id or name), or the default for `use` when it names none."""
        snapshot = self.registry.snapshot
        if not (ref or snapshot.defaults.get(use)) or (ref and snapshot.model(ref) is None):
            if await self.registry.reload_on_miss():
                snapshot = self.registry.snapshot
        if not ref:
            ref = snapshot.defaults.get(use, "")
            if not ref:
                raise errors.model_not_found("", f"no model given and no default {use} model is set")
        model = snapshot.model(ref)
        if model is None:
            raise errors.model_not_found(ref)
        if model.type != model_type:
            raise errors.wrong_type(model, model_type)
        return model

    def chain(self, primary: ModelRow, disable_fallback: bool) -> list[ModelRow]:
        if disable_fallback:
            return [primary]
        models, seen = [primary], {primary.id}
        for ref in primary.fallback_model_ids or ():
            fallback = self.registry.snapshot.models.get(ref)
            if fallback is not None and fallback.id not in seen and fallback.type == primary.type:
                models.append(fallback)
                seen.add(fallback.id)
        return models

    def missing_capability(self, model: ModelRow, needs: tuple[str, ...]) -> str | None:
        """The first capability in `needs` the model lacks, or None."""
        if not needs:
            return None
        provider = self.registry.snapshot.providers.get(model.provider_id)
        have = capabilities(provider.type if provider else "", model.capabilities)
        return next((need for need in needs if not have.get(need)), None)

    def capable_chain(self, primary: ModelRow, disable_fallback: bool, needs: tuple[str, ...]) -> list[ModelRow]:
        """The fallback chain without the models that cannot serve the request; the primary must be able to."""
        if (missing := self.missing_capability(primary, needs)) is not None:
            raise errors.capability_missing(primary, missing)
        return [
            m
            for m in self.chain(primary, disable_fallback)
            if m is primary or self.missing_capability(m, needs) is None
        ]

    def target(self, model: ModelRow) -> Target:
        """The model's provider, adapter, timeouts and retry budget; made once per model and registry snapshot (the
        rows, keys and headers it reads change only with a reload), ~15 us less on every call's path."""
        if self._targets_version != self.registry.version:
            self._targets.clear()
            self._targets_version = self.registry.version
        cached = self._targets.get(model.id)
        if cached is not None and cached.model is model:
            return cached
        target = self._target(model)
        self._targets[model.id] = target
        return target

    def _target(self, model: ModelRow) -> Target:
        provider = self.registry.snapshot.providers.get(model.provider_id)
        if provider is None:
            raise errors.model_offline(model, "served by a provider that no longer exists")
        s = self.settings
        timeouts = Timeouts(
            connect=(provider.connect_timeout_ms or s.llm_connect_timeout_seconds * 1000) / 1000,
            first_token=(provider.first_token_timeout_ms or s.llm_first_token_timeout_seconds * 1000) / 1000,
            idle=(provider.idle_timeout_ms or s.llm_idle_timeout_seconds * 1000) / 1000,
        )
        retries = provider.max_retries if provider.max_retries is not None else s.llm_max_retries
        return Target(
            model,
            provider,
            self.adapter(provider),
            timeouts,
            retries,
            (provider.name, model.name),
            model.id,
            model.max_concurrency,
            model.requests_per_minute,
            model.tokens_per_minute,
            self.breaker.gate(model.id),
        )

    def adapter(self, provider: ProviderRow) -> Adapter:
        spec = PROVIDER_TYPES[provider.type]
        if spec.shared:
            if provider.type not in self._shared:
                self._shared[provider.type] = spec.build(AdapterArgs("", None, {}, {}, self.settings))
            return self._shared[provider.type]
        snapshot = self.registry.snapshot
        version = (provider.update_time, snapshot.api_keys.get(provider.id), snapshot.extra_headers.get(provider.id))
        cached = self._adapters.get(provider.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        if cached is not None:  # the provider was edited: new requests get a new client, running streams finish
            self._retire(cached[1])
        adapter = spec.build(
            AdapterArgs(
                provider.base_url,
                snapshot.api_keys.get(provider.id),
                dict(snapshot.extra_headers.get(provider.id) or {}),
                provider.config or {},
                self.settings,
            )
        )
        self._adapters[provider.id] = (version, adapter)
        return adapter

    def _retire(self, adapter: Adapter) -> None:
        now = time.monotonic()
        self._retired.append((now, adapter))
        expired = [a for t, a in self._retired if now - t > RETIRED_ADAPTER_GRACE]
        self._retired = [(t, a) for t, a in self._retired if now - t <= RETIRED_ADAPTER_GRACE]
        for old in expired:
            asyncio.get_running_loop().create_task(old.aclose())

    def usable(self, target: Target) -> TypecaseError | None:
        if not target.model.online:
            return errors.model_offline(target.model)
        if not target.provider.enabled:
            return errors.model_offline(target.model, f"served by the disabled provider {target.provider.name!r}")
        return None

    # -- admission -----------------------------------------------------------------------------------------------
    def admitted(self, target: Target, prompt_tokens: int) -> _Admitted:
        """Breaker, rate limits and a concurrency slot (`async with`: the breaker's Ticket), released on exit. Raises
        Unserved when refused."""
        return _Admitted(self, target, prompt_tokens)

    async def _retrying(self, target: Target, call: Callable[[], Awaitable[T]]) -> T:
        """One upstream operation with the provider's retry budget (retryable failures only)."""
        try:  # the first attempt runs bare: tenacity's machinery costs ~80 us, worth paying only once retrying
            return await call()
        except UpstreamError as exc:
            if not target.max_retries or not self.is_retryable(exc):
                raise
            failure = exc
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(target.max_retries + 1),
            wait=self.retry_wait,
            retry=self.retryable,
            before_sleep=self._before_retry(target),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    raise failure  # replayed, so that tenacity counts it and waits what it asked for
                return await call()
        raise AssertionError("unreachable")

    def _before_retry(self, target: Target):
        def log_retry(state: RetryCallState) -> None:
            metrics.RETRIES.labels(*target.labels).inc()
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "retrying model %s (attempt %d failed: %s); next in %.2fs",
                target.model.name,
                state.attempt_number,
                exc,
                state.upcoming_sleep,
            )

        return log_retry

    async def _failed(
        self, target: Target, ticket: Ticket, exc: UpstreamError, error: TypecaseError, operation: str
    ) -> None:
        if exc.kind in BREAKER_FAILURES:
            if await self.breaker.failure(ticket):
                metrics.BREAKER_STATE.labels(*target.labels).set(llm_pb2.BREAKER_STATE_OPEN)
        else:
            await self.breaker.release(ticket)
        metrics.REQUESTS.labels(*target.labels, operation, "error").inc()
        self._count_failure(target, error.reason)
        try:
            await self.status_log.error(target.model.id, error.code.value[0], error.reason, error.message)
        except Exception:
            log.warning("could not record the last error of model %s", target.model.name, exc_info=True)
        log.warning("model %s failed: %s", target.model.name, error.message)

    async def _succeeded(self, target: Target, ticket: Ticket, operation: str, started: float) -> None:
        if await self.breaker.success(ticket) or ticket.dirty:
            metrics.BREAKER_STATE.labels(*target.labels).set(llm_pb2.BREAKER_STATE_CLOSED)
        metrics.requests(target.labels, operation, "ok").inc()
        metrics.duration(target.labels, operation).observe(time.perf_counter() - started)
        await self.status_log.success(target.model.id)

    @staticmethod
    def _count_failure(target: Target, reason: str) -> None:
        metrics.FAILURES.labels(*target.labels, reason).inc()

    # -- generation ----------------------------------------------------------------------------------------------
    async def prompt(self, request) -> Prompt:
        """The request's prompt, checked, with its file images read."""
        built = build_prompt(request, self.limits)
        if "vision" in built.needs:
            await resolve_files(built, self.files, self.limits)
        return built

    @staticmethod
    def validate_config(config: llm_pb2.GenerationConfig) -> None:
        if config.HasField("temperature") and not 0 <= config.temperature <= 2:
            raise invalid_argument("config.temperature", "must be between 0 and 2")
        if config.HasField("top_p") and not 0 <= config.top_p <= 1:
            raise invalid_argument("config.top_p", "must be between 0 and 1")
        if config.HasField("max_tokens") and config.max_tokens <= 0:
            raise invalid_argument("config.max_tokens", "must be positive")
        if len(config.stop) > 4:
            raise invalid_argument("config.stop", "at most 4 stop sequences")

    async def generate(
        self, request: llm_pb2.GenerateRequest, access: Callable[[ModelRow, str], Awaitable[None]] | None = None
    ) -> AsyncGenerator[llm_pb2.GenerateResponse, None]:
        """`access(model, ref)`: raises when the caller may not use the model the request resolves to."""
        started = time.perf_counter()
        primary = await self.resolve(request.model_id, "chat", "llm")
        if access is not None:
            await access(primary, request.model_id)
        self.validate_config(request.config)
        built = await self.prompt(request)
        prompt_tokens = built.estimate_tokens()
        first_error: Unserved | None = None
        for model in self.capable_chain(primary, request.disable_fallback, built.needs):
            try:
                target = self.target(model)
                if (offline := self.usable(target)) is not None:
                    raise Unserved(offline, fallback=model is not primary)
                call = chat_call(model, built, request.config, request.user)
                span = (  # its name and attributes (a dict, five ORM reads) made only when traces are on
                    tracing.start_span(f"chat {model.name}", _gen_ai_request(target), kind="CLIENT")
                    if tracing.enabled()
                    else None
                )
                with tracing.ended(span) if span is not None else _NO_SPAN:
                    async for response in self._stream(target, call, prompt_tokens, started):
                        if span is not None:
                            _trace_response(span, response)
                        yield response
                return
            except Unserved as unserved:
                first_error = first_error or unserved
                if not unserved.fallback:
                    break
                metrics.FALLBACKS.labels(self._provider_name(model), model.name).inc()
            except TypecaseError as error:
                if error.reason == "MODEL_OFFLINE" and model is not primary:
                    first_error = first_error or Unserved(error, True)
                    continue
                raise
        raise first_error.error if first_error else errors.model_not_found(request.model_id)

    def _provider_name(self, model: ModelRow) -> str:
        provider = self.registry.snapshot.providers.get(model.provider_id)
        return provider.name if provider else ""

    async def _open(self, target: Target, call: ChatCall) -> tuple[AsyncGenerator[Delta, None], Delta]:
        """The upstream stream and its first output, retried while nothing was produced."""

        async def attempt() -> tuple[AsyncGenerator[Delta, None], Delta]:
            stream = target.adapter.stream_chat(call, target.timeouts)
            try:
                return stream, await anext(stream)
            except StopAsyncIteration:
                raise UpstreamError(UNAVAILABLE, "the upstream ended the stream without any output") from None
            except BaseException:
                await stream.aclose()
                raise

        return await self._retrying(target, attempt)

    async def _stream(
        self, target: Target, call: ChatCall, prompt_estimate: int, started: float
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        model, labels = target.model, target.labels
        async with self.admitted(target, prompt_estimate) as ticket:
            try:
                stream, delta = await self._open(target, call)
            except UpstreamError as exc:
                error = errors.upstream_error(exc, model, target.provider.name)
                await self._failed(target, ticket, exc, error, "generate")
                raise Unserved(error, fallback=exc.kind in FALLBACK_KINDS) from None

            now = time.perf_counter()
            GenerateResponse = llm_pb2.GenerateResponse
            first = GenerateResponse(seq=1, served_model_id=target.model_id)
            if delta.text or delta.reasoning or delta.tool_calls:  # a tool call's first piece is its first token
                first.ttft.FromNanoseconds(int((now - started) * 1e9))
            seq, last, produced, outcome = 1, now, 0, "cancelled"
            coalescer: Coalescer | None = None
            try:
                while True:
                    produced += len(delta.text) + len(delta.reasoning)
                    if delta.finish_reason:
                        prompt = delta.prompt_tokens if delta.prompt_tokens is not None else prompt_estimate
                        completion = (
                            delta.completion_tokens if delta.completion_tokens is not None else (produced + 3) // 4
                        )
                        usage = common_pb2.Usage(
                            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
                        )
                        final = first if seq == 1 else GenerateResponse(seq=seq)
                        final.text, final.reasoning_text = delta.text, delta.reasoning
                        if delta.tool_calls:
                            add_tool_calls(final, delta.tool_calls)
                        final.finish_reason = delta.finish_reason
                        final.usage.CopyFrom(usage)
                        outcome = "ok"
                        if coalescer is None:  # the first token was the last
                            metrics.children(labels).ttft.observe(now - started)
                        await self._finished(target, ticket, started, prompt, completion)
                        yield final
                        return
                    message = (
                        first
                        if seq == 1
                        else GenerateResponse(seq=seq, text=delta.text, reasoning_text=delta.reasoning)
                    )
                    if seq == 1:
                        message.text, message.reasoning_text = delta.text, delta.reasoning
                    if delta.tool_calls:
                        produced += sum(len(c.arguments) + len(c.name) for c in delta.tool_calls)
                        add_tool_calls(message, delta.tool_calls)
                    yield message
                    if coalescer is None:  # merges from here on what the caller is slow to take
                        coalescer = Coalescer(stream, read_ahead=not target.adapter.merges_reads)
                        # Bookkeeping of the first token once it is out, not between it and the caller.
                        children = metrics.children(labels)
                        children.ttft.observe(now - started)
                        inter_token = children.inter_token
                    taken = await coalescer.take()
                    if taken is None:
                        raise UpstreamError(UNAVAILABLE, "the upstream stream ended without a finish")
                    delta = taken
                    seq += 1
                    now = time.perf_counter()
                    inter_token.observe(now - last)
                    last = now
            except UpstreamError as exc:
                outcome = "error"
                exc.message += " (mid-stream, after the first token: not retried)"
                error = errors.upstream_error(exc, model, target.provider.name)
                await self._failed(target, ticket, exc, error, "generate")
                raise error from None
            finally:  # closes the upstream connection at once when the caller went away
                await (coalescer.aclose() if coalescer is not None else stream.aclose())
                if outcome == "cancelled":
                    metrics.requests(labels, "generate", "cancelled").inc()
                    await self._charge(model, prompt_estimate, (produced + 3) // 4)

    async def _finished(self, target: Target, ticket: Ticket, started: float, prompt: int, completion: int) -> None:
        children = metrics.children(target.labels)
        children.input_tokens.inc(prompt)
        children.output_tokens.inc(completion)
        await self._succeeded(target, ticket, "generate", started)
        await self._charge(target.model, prompt, completion)

    async def _charge(self, model: ModelRow, prompt: int, completion: int) -> None:
        if model.tokens_per_minute:
            await self.rate_limits.charge_tokens(model.id, model.tokens_per_minute, prompt + completion)

    # -- unary calls ---------------------------------------------------------------------------------------------
    async def _unary(
        self, chain: list[ModelRow], prompt_tokens: int, operation: str, run: Callable[[Target], Awaitable[T]]
    ) -> tuple[Target, T]:
        """Fallback chain + admission for a unary operation; `run` does the upstream work with _retrying."""
        first_error: Unserved | None = None
        for model in chain:
            started = time.perf_counter()
            try:
                target = self.target(model)
                if (offline := self.usable(target)) is not None:
                    raise Unserved(offline, fallback=model is not chain[0])
                async with self.admitted(target, prompt_tokens) as ticket:
                    try:
                        result = await run(target)
                    except UpstreamError as exc:
                        error = errors.upstream_error(exc, model, target.provider.name)
                        await self._failed(target, ticket, exc, error, operation)
                        raise Unserved(error, fallback=exc.kind in FALLBACK_KINDS) from None
                    await self._succeeded(target, ticket, operation, started)
                    return target, result
            except Unserved as unserved:
                first_error = first_error or unserved
                if not unserved.fallback:
                    break
                metrics.FALLBACKS.labels(self._provider_name(model), model.name).inc()
            except TypecaseError as error:
                if error.reason == "MODEL_OFFLINE" and model is not chain[0]:
                    first_error = first_error or Unserved(error, True)
                    continue
                raise
        assert first_error is not None
        raise first_error.error

    async def complete(self, request: llm_pb2.CompleteRequest) -> llm_pb2.CompleteResponse:
        started = time.perf_counter()
        primary = await self.resolve(request.model_id, "chat", "llm")
        self.validate_config(request.config)
        built = await self.prompt(request)
        prompt_estimate = built.estimate_tokens()

        async def run(target: Target) -> Delta:
            call = chat_call(target.model, built, request.config, request.user)
            return await self._retrying(target, lambda: target.adapter.chat(call, target.timeouts))

        target, answer = await self._unary(
            self.capable_chain(primary, request.disable_fallback, built.needs), prompt_estimate, "complete", run
        )
        check_answer(built, answer, target.model)
        prompt = answer.prompt_tokens if answer.prompt_tokens is not None else prompt_estimate
        completion = answer.completion_tokens if answer.completion_tokens is not None else estimate_tokens(answer.text)
        metrics.INPUT_TOKENS.labels(*target.labels).inc(prompt)
        metrics.OUTPUT_TOKENS.labels(*target.labels).inc(completion)
        await self._charge(target.model, prompt, completion)
        response = llm_pb2.CompleteResponse(
            text=answer.text,
            reasoning_text=answer.reasoning,
            finish_reason=answer.finish_reason or common_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            ),
            served_model_id=target.model.id,
            tool_calls=[llm_pb2.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in answer.tool_calls or ()],
        )
        response.latency.FromNanoseconds(int((time.perf_counter() - started) * 1e9))
        return response

    async def embed(
        self,
        model_ref: str,
        texts: list[str],
        *,
        dimensions: int = 0,
        input_type: str = "",
        use: str = "knowledge_embedding",
    ) -> tuple[ModelRow, list[list[float]], int]:
        """(served model, one vector per text, prompt tokens). Batches of llm_embed_batch_size go upstream."""
        primary = await self.resolve(model_ref, use, "embedding")
        if not texts:
            return primary, [], 0
        chain = [
            m
            for m in self.chain(primary, False)
            if m is primary
            or not (
                primary.embedding_dimensions
                and m.embedding_dimensions
                and m.embedding_dimensions != primary.embedding_dimensions
            )
        ]  # never mix vector spaces of different sizes
        size = self.settings.llm_embed_batch_size

        async def run(target: Target) -> tuple[list[list[float]], int]:
            vectors: list[list[float]] = []
            tokens = 0
            for i in range(0, len(texts), size):
                batch = texts[i : i + size]
                result = await self._retrying(
                    target,
                    lambda: target.adapter.embed(
                        target.model.upstream_name or target.model.name,
                        batch,
                        target.timeouts,
                        dimensions=dimensions,
                        input_type=input_type,
                    ),
                )
                if len(result.vectors) != len(batch):
                    raise UpstreamError(UNAVAILABLE, "the upstream returned the wrong number of vectors")
                vectors.extend(result.vectors)
                tokens += result.prompt_tokens
            return vectors, tokens

        prompt_estimate = sum(estimate_tokens(t) for t in texts)
        target, (vectors, tokens) = await self._unary(chain, prompt_estimate, "embed", run)
        metrics.INPUT_TOKENS.labels(*target.labels).inc(tokens)
        await self._charge(target.model, tokens, 0)
        if vectors and target.model.id not in self._dimensions:
            self._dimensions[target.model.id] = len(vectors[0])
        return target.model, vectors, tokens

    async def embedding_dimensions(self, model_ref: str) -> int:
        model = await self.resolve(model_ref, "knowledge_embedding", "embedding")
        if model.embedding_dimensions:
            return model.embedding_dimensions
        if model.id not in self._dimensions:
            await self.embed(model.id, ["dimension probe"])
        return self._dimensions[model.id]

    async def rerank(self, request: llm_pb2.RerankRequest) -> llm_pb2.RerankResponse:
        primary = await self.resolve(request.model_id, "rerank", "rerank")
        if not request.query:
            raise invalid_argument("query", "must not be empty")
        if request.top_n < 0:
            raise invalid_argument("top_n", "must not be negative")
        documents = list(request.documents)
        if not documents:
            return llm_pb2.RerankResponse(served_model_id=primary.id)

        async def run(target: Target):
            return await self._retrying(
                target,
                lambda: target.adapter.rerank(
                    target.model.upstream_name or target.model.name, request.query, documents, target.timeouts
                ),
            )

        tokens = estimate_tokens(request.query) * len(documents) + sum(estimate_tokens(d) for d in documents)
        target, items = await self._unary(self.chain(primary, False), tokens, "rerank", run)
        items = sorted((i for i in items if 0 <= i.index < len(documents)), key=lambda i: -i.score)
        if request.top_n:
            items = items[: request.top_n]
        response = llm_pb2.RerankResponse(served_model_id=target.model.id)
        for item in items:
            response.results.add(
                index=item.index,
                relevance_score=item.score,
                document=documents[item.index] if request.return_documents else "",
            )
        return response

    # -- diagnostics ---------------------------------------------------------------------------------------------
    async def test(self, model: ModelRow, prompt: str) -> llm_pb2.TestModelResponse:
        """One direct call: no fallback, breaker, limits or retries; works on offline models."""
        response = llm_pb2.TestModelResponse()
        started = time.perf_counter()
        try:
            target = self.target(model)
            if model.type == "llm":
                call = ChatCall(
                    model.upstream_name or model.name, [Message("user", prompt or "Say hello.")], max_tokens=16
                )
                stream = target.adapter.stream_chat(call, target.timeouts)
                text: list[str] = []
                try:
                    async for delta in stream:
                        if not text and (delta.text or delta.reasoning):
                            response.ttft.FromNanoseconds(int((time.perf_counter() - started) * 1e9))
                        text.append(delta.text)
                finally:
                    await stream.aclose()
                response.output = "".join(text)[:200]
            elif model.type == "embedding":
                result = await target.adapter.embed(
                    model.upstream_name or model.name, [prompt or "hello"], target.timeouts
                )
                response.output = f"{len(result.vectors[0])}-dim vector"
            else:
                items = await target.adapter.rerank(
                    model.upstream_name or model.name, prompt or "hello", ["hello", "world"], target.timeouts
                )
                response.output = f"{len(items)} scores"
            response.ok = True
        except UpstreamError as exc:
            error = errors.upstream_error(exc, model, self._provider_name(model))
            response.error.CopyFrom(error.to_status())
        except TypecaseError as error:
            response.error.CopyFrom(error.to_status())
        response.latency.FromNanoseconds(int((time.perf_counter() - started) * 1e9))
        return response


def _gen_ai_request(target: Target) -> dict[str, Any]:
    """OpenTelemetry GenAI semantic-convention attributes of one upstream chat call."""
    model = target.model
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": target.provider.type,
        "gen_ai.request.model": model.upstream_name or model.name,
        "typecase.model_id": model.id,
        "typecase.provider": target.provider.name,
    }


def _trace_response(span: Any, response: llm_pb2.GenerateResponse) -> None:
    if response.HasField("ttft"):
        seconds = response.ttft.ToNanoseconds() / 1e9
        span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
        span.add_event("gen_ai.first_token", {"time_to_first_token_seconds": seconds})
    if response.finish_reason:
        name = common_pb2.FinishReason.Name(response.finish_reason).removeprefix("FINISH_REASON_").lower()
        span.set_attribute("gen_ai.response.finish_reasons", [name])
    if response.HasField("usage"):
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": response.usage.completion_tokens,
            }
        )


class _Admitted:
    """Inference.admitted: a plain async context manager (an @asynccontextmanager generator costs a few microseconds
    more on every call)."""

    __slots__ = ("inference", "target", "prompt_tokens", "ticket", "lease", "in_flight")

    def __init__(self, inference: Inference, target: Target, prompt_tokens: int):
        self.inference = inference
        self.target = target
        self.prompt_tokens = prompt_tokens

    async def __aenter__(self) -> Ticket:
        inference, target = self.inference, self.target
        model_id, limit, rpm, tpm = (
            target.model_id,
            target.max_concurrency,
            target.requests_per_minute,
            target.tokens_per_minute,
        )
        wait = inference.settings.llm_concurrency_wait_seconds
        ticket = lease = None
        # Without rate limits nothing comes between the breaker and the slot: on Redis one script reads the breaker's
        # failure count and takes the slot while it is closed (an open or half-open breaker takes the usual path).
        fused = not rpm and not tpm and target.gate[0] is not None  # off Redis there is no script to fuse them in
        if fused:
            gated = await inference.concurrency.acquire_gated(model_id, limit, wait, *target.gate)
            if gated is not None:
                lease, failures = gated
                ticket = inference.breaker.admit_counted(model_id, failures)
        if ticket is None:
            fused = False
            try:
                ticket = await inference.breaker.admit(model_id)
            except BreakerOpen as exc:
                metrics.BREAKER_STATE.labels(*target.labels).set(llm_pb2.BREAKER_STATE_OPEN)
                inference._count_failure(target, "CIRCUIT_OPEN")
                raise Unserved(
                    errors.circuit_open(target.model, target.provider.name, exc.retry_after), fallback=True
                ) from None
        try:
            if not fused:
                if rpm or tpm:  # without either, RateLimits.admit does nothing: not even its coroutine is made
                    try:
                        await inference.rate_limits.admit(model_id, rpm, tpm, self.prompt_tokens)
                    except LimitExceeded as exc:
                        inference._count_failure(target, "RATE_LIMITED")
                        raise Unserved(
                            errors.rate_limited(target.model, target.provider.name, exc.what, exc.retry_after), True
                        ) from None
                lease = await inference.concurrency.acquire(model_id, limit, wait)
            if lease is None:
                inference._count_failure(target, "RATE_LIMITED")
                raise Unserved(errors.rate_limited(target.model, target.provider.name, "concurrency", 1.0), True)
        except BaseException:
            await inference.breaker.release(ticket)
            raise
        self.ticket, self.lease = ticket, lease
        self.in_flight = metrics.children(target.labels).in_flight
        self.in_flight.inc()
        return ticket

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            self.in_flight.dec()
            await self.inference.concurrency.release(self.target.model_id, self.lease)
        finally:
            if exc_type is not None:  # no upstream outcome was recorded: let another probe through
                await self.inference.breaker.release(self.ticket)
        return False
