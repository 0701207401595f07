"""The Anthropic Messages API.

base_url is "https://api.anthropic.com" (or a gateway in front of it); a trailing "/v1" is accepted too.
System messages become system blocks, stop sequences map to stop_sequences, usage comes from message_start
(input tokens) and message_delta (output tokens). Provider config: {"anthropic_version": "2023-06-01"}.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


from . import (CONTENT_FILTER, LENGTH, RATE_LIMITED, STOP, TIMEOUT, TOOL_CALLS, UNAVAILABLE, Adapter,
               ChatCall, Delta, Message, Timeouts, UpstreamError)
from .http import ClientPool, SSEReader, open_stream, post_json

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens
FINISH = {"end_turn": STOP, "stop_sequence": STOP, "max_tokens": LENGTH, "tool_use": TOOL_CALLS,
          "refusal": CONTENT_FILTER, "pause_turn": STOP}
ERROR_KINDS = {"overloaded_error": UNAVAILABLE, "api_error": UNAVAILABLE, "rate_limit_error": RATE_LIMITED,
               "timeout_error": TIMEOUT}


class AnthropicAdapter(Adapter):
    def __init__(self, base_url: str, api_key: str | None, extra_headers: dict[str, str], config: dict[str, Any],
                 *, max_connections: int, keepalive_expiry: float):
        base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = httpx.URL(f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages")
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(config.get("anthropic_version", DEFAULT_VERSION)),
            **extra_headers,
        }
        if api_key:
            headers["x-api-key"] = api_key
        self.pool = ClientPool(max_connections=max_connections, keepalive_expiry=keepalive_expiry, headers=headers)

    def _body(self, call: ChatCall, stream: bool) -> dict[str, Any]:
        system, messages = _split(call.messages)
        body: dict[str, Any] = {
            "model": call.model,
            "messages": messages,
            "max_tokens": call.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        if system:
            body["system"] = [{"type": "text", "text": text} for text in system]
        if call.stop:
            body["stop_sequences"] = call.stop
        if call.temperature is not None:
            body["temperature"] = min(call.temperature, 1.0)  # Anthropic's range is 0-1
        if call.top_p is not None:
            body["top_p"] = call.top_p
        if call.user:
            body["metadata"] = {"user_id": call.user}
        extra = dict(call.extra)
        body.update(extra.pop("extra_body", None) or {})
        body.update({k: v for k, v in extra.items() if k not in body})
        return body

    async def stream_chat(self, call: ChatCall, timeouts: Timeouts) -> AsyncIterator[Delta]:
        async with open_stream(self.pool, self.url, self._body(call, True), timeouts) as (response, deadline):
            reader = SSEReader(response, deadline, timeouts.idle)
            finish, prompt, completion, done = 0, None, None, False
            text: list[str] = []
            reasoning: list[str] = []
            while not done and (batch := await reader.next_batch()) is not None:
                text, reasoning = [], []
                for event in batch:
                    kind = event.event
                    if kind in ("ping", ""):
                        continue
                    try:
                        data = json.loads(event.data)
                    except ValueError:
                        raise UpstreamError(UNAVAILABLE, f"the upstream sent a malformed event: {event.data[:200]!r}") from None
                    if kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            text.append(delta.get("text", ""))
                        elif delta.get("type") == "thinking_delta":
                            reasoning.append(delta.get("thinking", ""))
                    elif kind == "message_start":
                        usage = (data.get("message") or {}).get("usage") or {}
                        prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_read_input_tokens") or 0) + (
                            usage.get("cache_creation_input_tokens") or 0)
                    elif kind == "message_delta":
                        if reason := (data.get("delta") or {}).get("stop_reason"):
                            finish = FINISH.get(reason, STOP)
                        if (usage := data.get("usage")) and usage.get("output_tokens") is not None:
                            completion = usage["output_tokens"]
                    elif kind == "message_stop":
                        done = True
                        break
                    elif kind == "error":
                        error = data.get("error") or {}
                        raise UpstreamError(ERROR_KINDS.get(error.get("type"), UNAVAILABLE),
                                            f"upstream error mid-stream: {error.get('message', event.data)}")
                if (text or reasoning) and not done:
                    reader.started = True
                    yield Delta("".join(text), "".join(reasoning))
            if not done:
                raise UpstreamError(UNAVAILABLE, "the upstream closed the stream before message_stop")
            # The last batch's text rides on the final delta (the stream ended in that same read).
            try:
                yield Delta("".join(text), "".join(reasoning), finish_reason=finish or STOP, prompt_tokens=prompt,
                            completion_tokens=completion)
            finally:
                await reader.drain()  # after the final delta went out: keeps the connection reusable

    async def chat(self, call: ChatCall, timeouts: Timeouts) -> Delta:
        data = await post_json(self.pool, self.url, self._body(call, False), timeouts)
        blocks = data.get("content") or []
        usage = data.get("usage") or {}
        return Delta(
            "".join(b.get("text", "") for b in blocks if b.get("type") == "text"),
            "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking"),
            FINISH.get(data.get("stop_reason") or "end_turn", STOP),
            usage.get("input_tokens"),
            usage.get("output_tokens"),
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


def _split(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts, and the conversation with consecutive same-role turns merged (the API alternates roles)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
            continue
        role = "assistant" if m.role == "assistant" else "user"
        content = f"[{m.name or 'tool'} result]\n{m.content}" if m.role == "tool" else m.content
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    return system, turns
