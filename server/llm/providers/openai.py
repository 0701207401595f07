"""OpenAI-compatible upstreams (OpenAI, Azure OpenAI, vLLM, Ollama's /v1, Xinference, DeepSeek, Qwen, ...).

base_url is the API root including its version, e.g. "https://api.openai.com/v1"; we append /chat/completions,
/embeddings and /rerank (the Jina/Cohere-style rerank route that vLLM and Xinference serve).
Provider config: {"stream_usage": false} for servers that reject stream_options; {"api_version": "..."} adds the
api-version query parameter Azure wants.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from . import (
    CONTENT_FILTER,
    ERROR,
    LENGTH,
    RATE_LIMITED,
    STOP,
    TOOL_CALLS,
    UNAVAILABLE,
    UNFINISHED,
    Adapter,
    ChatCall,
    Delta,
    EmbedResult,
    Message,
    RerankItem,
    Timeouts,
    ToolCallDelta,
    UpstreamError,
    estimate_tokens,
)
from .http import ClientPool, PoolLimits, SSEReader, open_stream, post_json

FINISH = {
    "stop": STOP,
    "length": LENGTH,
    "content_filter": CONTENT_FILTER,
    "tool_calls": TOOL_CALLS,
    "function_call": TOOL_CALLS,
}
SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class OpenAIAdapter(Adapter):
    merges_reads = True  # SSEReader hands over everything one read holds

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        extra_headers: dict[str, str],
        config: dict[str, Any],
        limits: PoolLimits,
    ):
        self.base_url = base_url.rstrip("/")
        headers = {"content-type": "application/json", **extra_headers}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
            headers["api-key"] = api_key  # Azure's header; ignored elsewhere
        self.pool = ClientPool(limits, headers)
        self.stream_usage = config.get("stream_usage", True)
        self.params = {"api-version": config["api_version"]} if config.get("api_version") else None
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(f"{self.base_url}/{path}", params=self.params)
        return url

    def _body(self, call: ChatCall, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "messages": [_message(m) for m in call.messages],
            "stream": stream,
        }
        for name in SAMPLING:
            if (value := getattr(call, name)) is not None:
                body[name] = value
        if call.max_tokens is not None:
            body["max_tokens"] = call.max_tokens
        if call.stop:
            body["stop"] = call.stop
        if call.user:
            body["user"] = call.user
        body.update(tool_options(call))
        if stream and self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        extra = dict(call.extra)
        body.update(extra.pop("extra_body", None) or {})
        body.update({k: v for k, v in extra.items() if k not in body})
        return body

    async def stream_chat(self, call: ChatCall, timeouts: Timeouts) -> AsyncGenerator[Delta, None]:
        async with open_stream(self.pool, self._url("chat/completions"), self._body(call, True), timeouts) as (
            response,
            deadline,
        ):
            content_type = (response.header(b"content-type") or b"").decode("latin-1")
            if not content_type.startswith("text/event-stream"):
                raise UpstreamError(
                    ERROR, f"the upstream did not stream (content-type {content_type!r})", status=response.status
                )
            reader = SSEReader(response, deadline, timeouts.idle, self.pool.limits.max_event_chars)
            finish, usage, produced, done = UNFINISHED, None, 0, False
            text: list[str] = []
            reasoning: list[str] = []
            calls: list[ToolCallDelta] = []
            fragments: list[list[str]] = []  # argument text per entry of calls, joined once per batch
            while not done and (batch := await reader.next_batch()) is not None:
                text, reasoning, calls, fragments = [], [], [], []
                for event in batch:
                    data = event.data
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(data)  # ~4x json.loads per event: on every token
                    except ValueError:
                        raise UpstreamError(
                            UNAVAILABLE, f"the upstream sent a malformed chunk: {data[:200]!r}"
                        ) from None
                    if "error" in chunk:
                        raise _stream_error(chunk["error"])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if content := delta.get("content"):
                            text.append(content)
                        if thought := delta.get("reasoning_content") or delta.get("reasoning"):
                            reasoning.append(thought)
                        if pieces := delta.get("tool_calls"):
                            _add_tool_pieces(pieces, calls, fragments)
                        if reason := choice.get("finish_reason"):
                            finish = FINISH.get(reason, STOP)
                for tool_call, pieces in zip(calls, fragments):
                    tool_call.arguments = "".join(pieces)
                produced += len(text) + len(reasoning) + len(calls)
                if (text or reasoning or calls) and not done:
                    reader.started = True
                    yield Delta("".join(text), "".join(reasoning), tool_calls=calls or None)
            if not finish:
                raise UpstreamError(UNAVAILABLE, "the upstream closed the stream before finishing")
            prompt = usage.get("prompt_tokens") if usage else None
            completion = usage.get("completion_tokens") if usage else produced
            if prompt is None:
                prompt = sum(estimate_tokens(m.text()) + 4 for m in call.messages)
            # The last batch's text rides on the final delta when the stream ended in that same read.
            rest = ("".join(text), "".join(reasoning), calls or None) if done else ("", "", None)
            try:
                yield Delta(
                    rest[0],
                    rest[1],
                    finish_reason=finish,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    tool_calls=rest[2],
                )
            finally:
                await reader.drain()  # after the final delta went out: keeps the connection reusable

    async def chat(self, call: ChatCall, timeouts: Timeouts) -> Delta:
        data = await self._post("chat/completions", self._body(call, False), timeouts)
        choices = data.get("choices") or []
        if not choices:
            raise UpstreamError(UNAVAILABLE, "the upstream answered without choices")
        message = choices[0].get("message") or {}
        usage = data.get("usage") or {}
        text = message.get("content") or ""
        calls = [
            ToolCallDelta(
                i,
                str(c.get("id") or ""),
                str((c.get("function") or {}).get("name") or ""),
                str((c.get("function") or {}).get("arguments") or ""),
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        ]
        return Delta(
            text,
            message.get("reasoning_content") or message.get("reasoning") or "",
            FINISH.get(choices[0].get("finish_reason") or "stop", STOP),
            usage.get("prompt_tokens", sum(estimate_tokens(m.text()) for m in call.messages)),
            usage.get("completion_tokens", estimate_tokens(text)),
            calls or None,
        )

    async def embed(
        self, model: str, texts: list[str], timeouts: Timeouts, *, dimensions: int = 0, input_type: str = ""
    ) -> EmbedResult:
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
        if dimensions:
            body["dimensions"] = dimensions
        data = await self._post("embeddings", body, timeouts)
        items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        if len(items) != len(texts):
            raise UpstreamError(UNAVAILABLE, f"the upstream returned {len(items)} embeddings for {len(texts)} inputs")
        usage = data.get("usage") or {}
        tokens = usage.get("prompt_tokens") or sum(estimate_tokens(t) for t in texts)
        return EmbedResult([item["embedding"] for item in items], tokens)

    async def rerank(self, model: str, query: str, documents: list[str], timeouts: Timeouts) -> list[RerankItem]:
        data = await self._post("rerank", {"model": model, "query": query, "documents": documents}, timeouts)
        results = data.get("results") or data.get("data") or []
        return [RerankItem(int(r["index"]), float(r.get("relevance_score", r.get("score", 0.0)))) for r in results]

    async def _post(self, path: str, body: dict[str, Any], timeouts: Timeouts) -> dict[str, Any]:
        return await post_json(self.pool, self._url(path), body, timeouts)

    async def aclose(self) -> None:
        await self.pool.aclose()


def _message(m: Message) -> dict[str, Any]:
    content: Any = m.content
    if m.parts is not None:
        content = [
            {"type": "text", "text": p}
            if isinstance(p, str)
            else {"type": "image_url", "image_url": {"url": p.data_uri(), **({"detail": p.detail} if p.detail else {})}}
            for p in m.parts
        ]
    out: dict[str, Any] = {"role": m.role, "content": content}
    if m.name:
        out["name"] = m.name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["content"] = content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def tool_options(call: ChatCall) -> dict[str, Any]:
    """tools, tool_choice, parallel_tool_calls and response_format in OpenAI's request shape."""
    body: dict[str, Any] = {}
    if call.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    **({"strict": True} if t.strict else {}),
                },
            }
            for t in call.tools
        ]
    if call.tool_choice in ("auto", "none", "required"):
        body["tool_choice"] = call.tool_choice
    elif call.tool_choice:
        body["tool_choice"] = {"type": "function", "function": {"name": call.tool_choice}}
    if call.parallel_tool_calls is not None and call.tools:
        body["parallel_tool_calls"] = call.parallel_tool_calls
    rf = call.response_format
    if rf is not None and rf.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif rf is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": rf.name, "schema": rf.schema, **({"strict": True} if rf.strict else {})},
        }
    return body


def _add_tool_pieces(pieces: Any, calls: list[ToolCallDelta], fragments: list[list[str]]) -> None:
    """Streamed tool-call pieces onto the batch's calls: a piece continuing the batch's last call adds its
    argument text to it (a burst of fragments becomes one delta, not one object per fragment)."""
    for piece in pieces if isinstance(pieces, list) else ():
        function = piece.get("function") or EMPTY
        index, call_id, name = piece.get("index") or 0, piece.get("id") or "", function.get("name") or ""
        if calls and calls[-1].index == index and not call_id and not name:
            fragments[-1].append(function.get("arguments") or "")
        else:
            calls.append(ToolCallDelta(index, call_id, name))
            fragments.append([function.get("arguments") or ""])


EMPTY: dict[str, Any] = {}


def _stream_error(error: Any) -> UpstreamError:
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    code = str(error.get("code") or error.get("type") or "") if isinstance(error, dict) else ""
    if "rate" in code:
        return UpstreamError(RATE_LIMITED, f"upstream error mid-stream: {message}")
    return UpstreamError(UNAVAILABLE, f"upstream error mid-stream: {message}")
