"""The Anthropic Messages API.

base_url is "https://api.anthropic.com" (or a gateway in front of it); a trailing "/v1" is accepted too.
System messages become system blocks, stop sequences map to stop_sequences, usage comes from message_start
(input tokens) and message_delta (output tokens). Provider config: {"anthropic_version": "2023-06-01"}.

Tools translate both ways: tool definitions and the tool choice to Anthropic's, assistant tool calls to tool_use
blocks and tool messages to tool_result blocks (consecutive results in one user turn), images to image blocks;
streamed tool_use blocks (content_block_start, then input_json_delta fragments) come back as tool-call deltas.
A response format (JSON object or schema) is asked for the way Anthropic documents for JSON output: one forced
tool whose input schema is the format's, whose input is then handed to the caller as the answer's text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from . import (
    CONTENT_FILTER,
    LENGTH,
    RATE_LIMITED,
    STOP,
    TIMEOUT,
    TOOL_CALLS,
    UNAVAILABLE,
    UNFINISHED,
    UNSUPPORTED,
    Adapter,
    ChatCall,
    Delta,
    Message,
    Timeouts,
    ToolCallDelta,
    UpstreamError,
    merge_tool_deltas,
)
from .http import ClientPool, PoolLimits, SSEReader, open_stream, post_json

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens
FINISH = {
    "end_turn": STOP,
    "stop_sequence": STOP,
    "max_tokens": LENGTH,
    "tool_use": TOOL_CALLS,
    "refusal": CONTENT_FILTER,
    "pause_turn": STOP,
}
FORMAT_TOOL = "json_response"  # default name of the forced tool that carries a response format
ERROR_KINDS = {
    "overloaded_error": UNAVAILABLE,
    "api_error": UNAVAILABLE,
    "rate_limit_error": RATE_LIMITED,
    "timeout_error": TIMEOUT,
}


class AnthropicAdapter(Adapter):
    merges_reads = True  # SSEReader hands over everything one read holds

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        extra_headers: dict[str, str],
        config: dict[str, Any],
        limits: PoolLimits,
    ):
        base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = httpx.URL(f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages")
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(config.get("anthropic_version", DEFAULT_VERSION)),
            **extra_headers,
        }
        if api_key:
            headers["x-api-key"] = api_key
        self.pool = ClientPool(limits, headers)

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
        body.update(_tool_options(call))
        extra = dict(call.extra)
        body.update(extra.pop("extra_body", None) or {})
        body.update({k: v for k, v in extra.items() if k not in body})
        return body

    async def stream_chat(self, call: ChatCall, timeouts: Timeouts) -> AsyncGenerator[Delta, None]:
        async with open_stream(self.pool, self.url, self._body(call, True), timeouts) as (response, deadline):
            reader = SSEReader(response, deadline, timeouts.idle, self.pool.limits.max_event_chars)
            finish, prompt, completion, done = UNFINISHED, None, None, False
            text: list[str] = []
            reasoning: list[str] = []
            calls: list[ToolCallDelta] = []
            as_text = _format_tool(call)  # a response format's forced tool: its input is the answer's text
            tool_index: dict[int, int] = {}  # content block index -> tool call index
            while not done and (batch := await reader.next_batch()) is not None:
                text, reasoning, calls = [], [], []
                for event in batch:
                    kind = event.event
                    if kind in ("ping", ""):
                        continue
                    try:
                        data = orjson.loads(event.data)
                    except ValueError:
                        raise UpstreamError(
                            UNAVAILABLE, f"the upstream sent a malformed event: {event.data[:200]!r}"
                        ) from None
                    if kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            text.append(delta.get("text", ""))
                        elif delta.get("type") == "thinking_delta":
                            reasoning.append(delta.get("thinking", ""))
                        elif delta.get("type") == "input_json_delta" and data.get("index") in tool_index:
                            fragment = str(delta.get("partial_json") or "")
                            if as_text:
                                text.append(fragment)
                            elif fragment:
                                calls.append(ToolCallDelta(tool_index[data["index"]], arguments=fragment))
                    elif kind == "content_block_start":
                        block = data.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            tool_index[data.get("index")] = len(tool_index)
                            if not as_text:
                                calls.append(
                                    ToolCallDelta(
                                        tool_index[data.get("index")],
                                        str(block.get("id") or ""),
                                        str(block.get("name") or ""),
                                    )
                                )
                    elif kind == "message_start":
                        usage = (data.get("message") or {}).get("usage") or {}
                        prompt = (
                            (usage.get("input_tokens") or 0)
                            + (usage.get("cache_read_input_tokens") or 0)
                            + (usage.get("cache_creation_input_tokens") or 0)
                        )
                    elif kind == "message_delta":
                        if reason := (data.get("delta") or {}).get("stop_reason"):
                            finish = STOP if as_text and reason == "tool_use" else FINISH.get(reason, STOP)
                        if (usage := data.get("usage")) and usage.get("output_tokens") is not None:
                            completion = usage["output_tokens"]
                    elif kind == "message_stop":
                        done = True
                        break
                    elif kind == "error":
                        error = data.get("error") or {}
                        raise UpstreamError(
                            ERROR_KINDS.get(str(error.get("type")), UNAVAILABLE),
                            f"upstream error mid-stream: {error.get('message', event.data)}",
                        )
                if (text or reasoning or calls) and not done:
                    reader.started = True
                    yield Delta(
                        "".join(text), "".join(reasoning), tool_calls=merge_tool_deltas(calls) if calls else None
                    )
            if not done:
                raise UpstreamError(UNAVAILABLE, "the upstream closed the stream before message_stop")
            # The last batch's text rides on the final delta (the stream ended in that same read).
            try:
                yield Delta(
                    "".join(text),
                    "".join(reasoning),
                    finish_reason=finish or STOP,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    tool_calls=merge_tool_deltas(calls) if calls else None,
                )
            finally:
                await reader.drain()  # after the final delta went out: keeps the connection reusable

    async def chat(self, call: ChatCall, timeouts: Timeouts) -> Delta:
        data = await post_json(self.pool, self.url, self._body(call, False), timeouts)
        blocks = data.get("content") or []
        usage = data.get("usage") or {}
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        finish = FINISH.get(data.get("stop_reason") or "end_turn", STOP)
        calls = [
            ToolCallDelta(
                i,
                str(b.get("id") or ""),
                str(b.get("name") or ""),
                json.dumps(b.get("input") or {}, ensure_ascii=False),
            )
            for i, b in enumerate(uses)
        ]
        if _format_tool(call):
            text, calls, finish = "".join(c.arguments for c in calls), [], STOP if finish == TOOL_CALLS else finish
        return Delta(
            text,
            "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking"),
            finish,
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            calls or None,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


def _format_tool(call: ChatCall) -> str:
    """The name of the forced tool that carries the call's response format, or "" when it has none."""
    return (call.response_format.name or FORMAT_TOOL) if call.response_format is not None else ""


def _tool_options(call: ChatCall) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if name := _format_tool(call):
        if call.tools:
            raise UpstreamError(UNSUPPORTED, "an Anthropic model cannot take tools and a response format together")
        rf = call.response_format
        schema = rf.schema if rf is not None and rf.schema else {"type": "object"}
        body["tools"] = [
            {"name": name, "description": "Answer with your response as this tool's input.", "input_schema": schema}
        ]
        body["tool_choice"] = {"type": "tool", "name": name}
        return body
    if not call.tools:
        return body
    body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in call.tools]
    choice: dict[str, Any] = {"type": "auto"}
    if call.tool_choice == "none":
        choice = {"type": "none"}
    elif call.tool_choice == "required":
        choice = {"type": "any"}
    elif call.tool_choice not in ("", "auto"):
        choice = {"type": "tool", "name": call.tool_choice}
    if call.parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    body["tool_choice"] = choice
    return body


def _blocks(m: Message) -> str | list[dict[str, Any]]:
    """A message's content: its text, or Anthropic content blocks when it has images, tool calls or results."""
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text()}]
    blocks: list[dict[str, Any]] = []
    for part in m.parts if m.parts is not None else ([m.content] if m.content else []):
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
        elif part.url:
            blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
        else:
            blocks.append(
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": part.media_type,
                        "data": base64.b64encode(part.data).decode(),
                    },
                }
            )
    for call in m.tool_calls or ():
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {"_raw": call.arguments}  # the model's own malformed arguments, handed back as they were
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    if m.parts is None and not m.tool_calls:
        return m.content
    return blocks


def _split(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts, and the conversation with consecutive same-role turns merged (the API alternates roles)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.text())
            continue
        role = "assistant" if m.role == "assistant" else "user"
        content = _blocks(m)
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            if isinstance(previous, str) and isinstance(content, str):
                turns[-1]["content"] = previous + "\n\n" + content
            else:
                as_list = (
                    ([{"type": "text", "text": previous}] if previous else [])
                    if isinstance(previous, str)
                    else previous
                )
                turns[-1]["content"] = as_list + (
                    [{"type": "text", "text": content}] if isinstance(content, str) else content
                )
        else:
            turns.append({"role": role, "content": content})
    return system, turns
