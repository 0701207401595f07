"""The Anthropic-compatible Messages API under /anthropic/v1 (POST /messages, streamed or not), so the official
anthropic SDK and tools built on it can use any Typecase model, with its fallbacks, limits and metrics, with a
Typecase API key sent as `x-api-key` or `authorization: Bearer`. `anthropic-version` is accepted (any version:
the shape served is the 2023-06-01 one every SDK speaks).

A stream is Anthropic's event sequence: message_start, then per content block content_block_start, its deltas
(text_delta, or input_json_delta for a tool_use block) and content_block_stop, then message_delta (stop_reason,
usage) and message_stop; a failure after the start is an `error` event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from typecase.server.compat.anthropic_request import messages_request
from typecase.server.compat.common import SSE_HEADERS, CallerAuth, EventStream, Surface, dumps, status_of
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import common_pb2, llm_pb2

PREFIX = "/anthropic/v1"
STOP_REASONS = {
    common_pb2.FINISH_REASON_STOP: "end_turn",
    common_pb2.FINISH_REASON_LENGTH: "max_tokens",
    common_pb2.FINISH_REASON_TOOL_CALLS: "tool_use",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "refusal",
    common_pb2.FINISH_REASON_CANCELLED: "end_turn",
    common_pb2.FINISH_REASON_ERROR: "end_turn",
}
# Anthropic's error "type" for each HTTP status Typecase answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(error: TypecaseError, status: int) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": error.message}}


def error_response(error: TypecaseError, status: int) -> Response:
    headers = {"retry-after": str(max(1, round(error.retry_after)))} if error.retry_after else None
    return JSONResponse(error_body(error, status), status_code=status, headers=headers)


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {dumps({'type': name, **data})}\n\n"


class AnthropicCompat(Surface):
    def __init__(self, llm, auth: CallerAuth, max_body_bytes: int, reason_http_status: Mapping[str, int]):
        super().__init__(llm, auth, max_body_bytes, reason_http_status, error_response)

    async def messages(self, request: Request) -> Response:
        data = await self.body(request)
        generate = messages_request(data)
        message_id = f"msg_{time.time_ns():x}"
        if not data.get("stream"):
            complete = llm_pb2.CompleteRequest()
            complete.ParseFromString(generate.SerializeToString())  # the same fields, by number
            answer = await self.llm.complete(complete)
            content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] if answer.text else []
            content += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
                for c in answer.tool_calls
            ]
            return JSONResponse(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model_name(answer.served_model_id, generate.model_id),
                    "content": content,
                    "stop_reason": STOP_REASONS.get(answer.finish_reason, "end_turn"),
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": answer.usage.prompt_tokens,
                        "output_tokens": answer.usage.completion_tokens,
                    },
                }
            )
        stream = self.llm.generate(generate)
        try:
            first = await anext(stream)  # failures before the first token become a plain HTTP error
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        name = self.model_name(first.served_model_id if first else "", generate.model_id)
        return EventStream(self._events(stream, first, message_id, name), SSE_HEADERS)

    async def _events(
        self, stream: AsyncGenerator[llm_pb2.GenerateResponse, None], first, message_id: str, model: str
    ) -> AsyncIterator[str]:
        blocks: dict[Any, int] = {}  # "text" or a tool call index -> its (latest) content block index
        current: int | None = None

        def start(key: Any, block: dict[str, Any]) -> str:
            nonlocal current
            out = _event("content_block_stop", {"index": current}) if current is not None else ""
            blocks[key] = current = 0 if current is None else current + 1
            return out + _event("content_block_start", {"index": current, "content_block": block})

        try:
            yield _event(
                "message_start",
                {
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    }
                },
            )
            message = first
            while message is not None:
                out = []
                if message.text:
                    if current is None or blocks.get("text") != current:
                        out.append(start("text", {"type": "text", "text": ""}))
                    out.append(
                        _event(
                            "content_block_delta",
                            {"index": current, "delta": {"type": "text_delta", "text": message.text}},
                        )
                    )
                for piece in message.tool_calls:
                    if piece.index not in blocks:
                        out.append(
                            start(piece.index, {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}})
                        )
                    if piece.arguments:
                        out.append(
                            _event(
                                "content_block_delta",
                                {
                                    "index": blocks[piece.index],
                                    "delta": {"type": "input_json_delta", "partial_json": piece.arguments},
                                },
                            )
                        )
                if message.finish_reason:
                    if current is not None:
                        out.append(_event("content_block_stop", {"index": current}))
                    usage = message.usage
                    out.append(
                        _event(
                            "message_delta",
                            {
                                "delta": {
                                    "stop_reason": STOP_REASONS.get(message.finish_reason, "end_turn"),
                                    "stop_sequence": None,
                                },
                                "usage": {
                                    "input_tokens": usage.prompt_tokens,
                                    "output_tokens": usage.completion_tokens,
                                },
                            },
                        )
                    )
                    out.append(_event("message_stop", {}))
                    yield "".join(out)
                    break
                if out:
                    yield "".join(out)
                message = await anext(stream, None)
        except TypecaseError as error:  # mid-stream: the status line is long gone; Anthropic's error event
            yield _event("error", {"error": error_body(error, status_of(error, self.reason_http_status))["error"]})
        finally:
            await stream.aclose()  # client gone: closes the upstream call at once

    def routes(self) -> list[Route]:
        async def endpoint(request: Request) -> Response:
            return await self.call(request, self.messages)

        return [Route(PREFIX + "/messages", endpoint, methods=["POST"])]


def anthropic_routes(
    llm, auth: CallerAuth, max_body_bytes: int = 4 * 1024 * 1024, reason_http_status: Mapping[str, int] | None = None
) -> list[Route]:
    return AnthropicCompat(llm, auth, max_body_bytes, reason_http_status or {}).routes()
