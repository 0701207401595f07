"""Upstream adapters: one per wire protocol, all speaking the same small vocabulary.

An adapter turns a ChatCall into a stream of Deltas (or one Delta, unary), embeds texts, or reranks documents,
and reports every failure as an UpstreamError whose `kind` decides what the resilience layer does with it.
Adapters know nothing about retries, breakers, limits or fallbacks.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from typecase.v1 import common_pb2

UNFINISHED = common_pb2.FINISH_REASON_UNSPECIFIED  # no finish seen (yet)
STOP = common_pb2.FINISH_REASON_STOP
LENGTH = common_pb2.FINISH_REASON_LENGTH
CONTENT_FILTER = common_pb2.FINISH_REASON_CONTENT_FILTER
TOOL_CALLS = common_pb2.FINISH_REASON_TOOL_CALLS

# UpstreamError kinds.
UNAVAILABLE = "unavailable"  # connect error, reset, 5xx, overloaded: retryable, counts against the breaker
RATE_LIMITED = "rate_limited"  # upstream 429: retryable (after Retry-After), does not trip the breaker
TIMEOUT = "timeout"  # connect / first token / idle timeout: retryable, counts against the breaker
CONTEXT = "context"  # prompt too long for the model
ERROR = "error"  # any other upstream answer (400, 401, 404, ...): not retried
UNSUPPORTED = "unsupported"  # the provider cannot do this operation at all

RETRYABLE = frozenset({UNAVAILABLE, RATE_LIMITED, TIMEOUT})
BREAKER_FAILURES = frozenset({UNAVAILABLE, TIMEOUT})


class UpstreamError(Exception):
    def __init__(self, kind: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def __repr__(self) -> str:
        return f"UpstreamError({self.kind!r}, {self.message!r}, status={self.status})"


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of a call carries id and name, later ones argument text."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class Delta:
    """A piece of output. Streams end with a Delta carrying finish_reason (and usage when the upstream told).
    A unary answer's tool calls are whole ToolCallDeltas, one per call."""

    text: str = ""
    reasoning: str = ""
    finish_reason: common_pb2.FinishReason = UNFINISHED
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(slots=True)
class Image:
    """An image part: an https URL, or the bytes (from a data: URI or a Typecase file) with their media type."""

    url: str = ""
    data: bytes = b""
    media_type: str = ""
    detail: str = ""  # auto | low | high | "" (the provider's default)

    def data_uri(self) -> str:
        import base64

        return self.url or f"data:{self.media_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass(slots=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str
    name: str = ""
    tool_call_id: str = ""
    parts: list[str | Image] | None = None  # ordered text and images, instead of content
    tool_calls: list[ToolCall] | None = None  # an assistant's calls

    def text(self) -> str:
        """The message's text (its text parts joined when it has parts)."""
        if self.parts is None:
            return self.content
        return "".join(p for p in self.parts if type(p) is str)  # not images, nor file ids (str subclasses)


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments object
    strict: bool = False
    schema_chars: int = 0  # size of the schema's text, for prompt-size estimates


@dataclass(slots=True)
class ResponseFormat:
    type: str  # json_object | json_schema
    name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool = False


@dataclass(slots=True)
class ChatCall:
    model: str  # the upstream model name
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = ""  # "" (auto) | auto | none | required | the name of the one tool to call
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the model's config extras (e.g. extra_body)


@dataclass(slots=True)
class Timeouts:
    connect: float
    first_token: float  # also the whole-answer timeout of unary calls
    idle: float


@dataclass(slots=True)
class EmbedResult:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(slots=True)
class RerankItem:
    index: int
    score: float


class Adapter(abc.ABC):
    """One provider's upstream. Instances are shared by all requests to that provider."""

    # Each delta of stream_chat holds everything the upstream sent since the previous one was taken (it reads
    # whatever its connection buffered, as SSEReader does): a consumer that falls behind gets merged deltas
    # without a task reading ahead for it (llm/coalesce.py).
    merges_reads = False

    @abc.abstractmethod
    def stream_chat(self, call: ChatCall, timeouts: Timeouts) -> AsyncGenerator[Delta, None]:
        """Deltas as they arrive. Closing the iterator (aclose, or cancelling its consumer) closes the upstream."""

    async def chat(self, call: ChatCall, timeouts: Timeouts) -> Delta:
        """The whole answer; the default joins the stream."""
        text, reasoning, last = [], [], Delta()
        calls = ToolCallJoiner()
        stream = self.stream_chat(call, timeouts)
        try:
            async for delta in stream:
                text.append(delta.text)
                reasoning.append(delta.reasoning)
                calls.add(delta.tool_calls)
                last = delta
        finally:
            await stream.aclose()
        return Delta(
            "".join(text),
            "".join(reasoning),
            last.finish_reason,
            last.prompt_tokens,
            last.completion_tokens,
            calls.whole(),
        )

    async def embed(
        self, model: str, texts: list[str], timeouts: Timeouts, *, dimensions: int = 0, input_type: str = ""
    ) -> EmbedResult:
        raise UpstreamError(UNSUPPORTED, "this provider does not serve embeddings")

    async def rerank(self, model: str, query: str, documents: list[str], timeouts: Timeouts) -> list[RerankItem]:
        raise UpstreamError(UNSUPPORTED, "this provider does not serve reranking")

    async def aclose(self) -> None:
        return None


class ToolCallJoiner:
    """Joins streamed tool-call pieces into whole calls, by index."""

    def __init__(self) -> None:
        self.calls: dict[int, ToolCallDelta] = {}

    def add(self, pieces: list[ToolCallDelta] | None) -> None:
        for piece in pieces or ():
            call = self.calls.get(piece.index)
            if call is None:
                self.calls[piece.index] = ToolCallDelta(piece.index, piece.id, piece.name, piece.arguments)
            else:
                call.id = call.id or piece.id
                call.name = call.name or piece.name
                call.arguments += piece.arguments

    def whole(self) -> list[ToolCallDelta] | None:
        return [self.calls[i] for i in sorted(self.calls)] or None


def merge_tool_deltas(pieces: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive pieces of the same call merged (what a coalesced batch carries): fewer, longer pieces."""
    merged: list[ToolCallDelta] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if last is not None and last.index == piece.index and not piece.id and not piece.name:
            last.arguments += piece.arguments
        else:
            merged.append(ToolCallDelta(piece.index, piece.id, piece.name, piece.arguments))
    return merged


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters per token) for upstreams that do not report usage."""
    return (len(text) + 3) // 4
