"""A real HTTP server speaking OpenAI's and Anthropic's wire formats, with injectable faults.

Run in a thread of the test process (`FakeUpstream().start()`) or as a subprocess
(`python -m tests.llm.fake_upstream PORT`). Each request takes the next fault from the plan (default "ok"):

  "ok"                  answer normally
  "status:503"          answer that HTTP status with an error body ("status:429:2" adds Retry-After: 2)
  "reset:K"             stream K content chunks, then drop the connection mid-body
  "slow_first:S"        wait S seconds before the first content chunk (headers are sent at once)
  "stall:K:S"           stream K content chunks, then go silent for S seconds
  "hang"                never answer
  "gzip"                send the whole stream gzip-compressed (Content-Encoding: gzip), whatever was asked for
  "flood:K:N"           stream K content chunks, then an event that does not end for N pieces of 64 KiB
  "bloat:N[:sized]"     (embeddings) an answer padded with N pieces of 64 KiB, chunked (with Content-Length: sized)

Tools, as the vendors do them: when a request offers tools (and its tool choice allows), the answer calls them -
the named one, or the first (and, with parallel calls allowed and two or more tools, the second too) - with
arguments made up from each tool's schema (strings carry non-ASCII: "Paris ☀"), streamed in OpenAI's
`delta.tool_calls` chunks or Anthropic's tool_use blocks with input_json_delta, the arguments cut into
ARGUMENT_PIECE-character fragments, and every event holding a multi-byte character written in two network writes
cut inside that character. When the last message answers a tool call, the answer is text quoting the result
("Answer: <result>"). Anthropic answers with a short text block before its tool_use blocks unless forced.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ARGUMENT_PIECE = 5  # characters of tool arguments per streamed fragment
PIECE = "x" * 65536  # what "flood" and "bloat" send, again and again
BLOAT_HEAD, BLOAT_TAIL = '{"object": "list", "padding": "', ', "usage": {"prompt_tokens": 1, "total_tokens": 1}}'
BLOAT_FRAME = len(BLOAT_HEAD) + len('", "data": ') + len(BLOAT_TAIL)


class Half(bytes):
    """The first part of an event cut inside a multi-byte character; a short pause follows it on the wire."""


def split_mid_utf8(event: str) -> list[bytes]:
    """The event's bytes, cut inside its first multi-byte character (as one write when it has none)."""
    data = event.encode()
    for i, byte in enumerate(data):
        if byte >= 0x80:
            return [Half(data[: i + 1]), data[i + 1 :]]
    return [data]


def sample(schema: dict[str, Any]) -> Any:
    """A value that fits a (simple) JSON Schema."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return sample(schema["anyOf"][0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: sample(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample(schema.get("items") or {"type": "string"})]
    return {"string": "Paris ☀", "integer": 21, "number": 21.5, "boolean": True, "null": None}.get(kind, "x")


def pieces(text: str) -> list[str]:
    return [text[i : i + ARGUMENT_PIECE] for i in range(0, len(text), ARGUMENT_PIECE)] or [""]


class Reset(Exception):
    """Raised inside a streaming body: uvicorn drops the connection without finishing the chunked body."""


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    time: float = field(default_factory=time.monotonic)
    completed: bool = False  # the whole body was sent
    closed_early: bool = False  # the client went away mid-stream
    closed_time: float | None = None
    sent: int = 0  # bytes of PIECE written ("flood", "bloat")


class FakeUpstream:
    def __init__(self, tokens: int = 5, token_delay: float = 0.0):
        self.tokens = tokens  # content chunks per answer
        self.token_delay = token_delay
        self.plan: deque[str] = deque()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.openai_chat, methods=["POST"]),
                Route("/v1/embeddings", self.openai_embeddings, methods=["POST"]),
                Route("/v1/rerank", self.rerank, methods=["POST"]),
                Route("/v1/messages", self.anthropic_messages, methods=["POST"]),
            ]
        )

    # -- control -------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def faults(self, *steps: str) -> None:
        with self._lock:
            self.plan.extend(steps)

    def reset(self) -> None:
        with self._lock:
            self.plan.clear()
            self.seen.clear()
        self.tokens, self.token_delay = 5, 0.0

    def hits(self, path_suffix: str = "") -> int:
        return sum(1 for s in self.seen if s.path.endswith(path_suffix))

    def _next(self, request: Request, body: dict[str, Any]) -> tuple[str, Seen]:
        seen = Seen(request.url.path, body, dict(request.headers))
        with self._lock:
            step = self.plan.popleft() if self.plan else "ok"
            self.seen.append(seen)
        return step, seen

    def start(self) -> FakeUpstream:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(5)

    # -- shared fault handling -----------------------------------------------------------------------------------
    @staticmethod
    def _error(step: str) -> Response | None:
        if step.startswith("status:"):
            parts = step.split(":")
            status = int(parts[1])
            headers = {"retry-after": parts[2]} if len(parts) > 2 else {}
            body = {
                "error": {
                    "message": f"injected {status}",
                    "type": "server_error"
                    if status >= 500
                    else "rate_limit_error"
                    if status == 429
                    else "invalid_request_error",
                }
            }
            if status == 400 and len(parts) > 2 and parts[2] == "context":
                body["error"]["code"] = "context_length_exceeded"
                headers = {}
            return JSONResponse(body, status_code=status, headers=headers)
        return None

    async def _paced(self, step: str, seen: Seen, chunks, head=(), tail=()):
        """Yield head events, content chunks with faults applied, then tail events."""
        try:
            for event in head:
                yield event
            if step == "hang":
                await asyncio.sleep(3600)
            if step.startswith("slow_first:"):
                await asyncio.sleep(float(step.split(":")[1]))
            for i, chunk in enumerate(chunks):
                if step.startswith("reset:") and i == int(step.split(":")[1]):
                    raise Reset()
                if step.startswith("stall:") and i == int(step.split(":")[1]):
                    await asyncio.sleep(float(step.split(":")[2]))
                if step.startswith("flood:") and i == int(step.split(":")[1]):
                    yield "data: "
                    for _ in range(int(step.split(":")[2])):
                        yield PIECE
                        seen.sent += len(PIECE)
                        await asyncio.sleep(0)  # a write to a closed connection returns at once: notice the hang-up
                if self.token_delay and i:
                    await asyncio.sleep(self.token_delay)
                yield chunk
                if isinstance(chunk, Half):  # the rest of the character comes in a later network read
                    await asyncio.sleep(0.005)
            for event in tail:
                yield event
            seen.completed = True
        except (asyncio.CancelledError, GeneratorExit):
            seen.closed_early = True
            seen.closed_time = time.monotonic()
            raise

    def _words(self, body: dict[str, Any]) -> list[str]:
        n = self.tokens
        if body.get("max_tokens"):
            n = min(n, int(body["max_tokens"]))
        return [f"tok{i} " for i in range(n)]

    # -- OpenAI --------------------------------------------------------------------------------------------------
    async def openai_chat(self, request: Request) -> Response:
        body = await request.json()
        step, seen = self._next(request, body)
        if (error := self._error(step)) is not None:
            return error
        if step == "hang" and not body.get("stream"):
            await asyncio.sleep(3600)
        words = self._words(body)
        finish = "length" if body.get("max_tokens") and len(words) >= int(body["max_tokens"]) else "stop"
        calls = self._openai_calls(body)
        if calls:
            finish = "tool_calls"
        elif (result := self._openai_tool_result(body)) is not None:
            words = pieces(f"Answer: {result}")
        usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
        if not body.get("stream"):
            seen.completed = True
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else "".join(words)}
            if calls:
                message["tool_calls"] = [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls
                ]
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        head = [chunk({"role": "assistant", "content": ""})]
        tail = [chunk({}, finish)]
        if (body.get("stream_options") or {}).get("include_usage"):
            tail.append(
                "data: "
                + json.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": body["model"],
                        "choices": [],
                        "usage": usage,
                    }
                )
                + "\n\n"
            )
        tail.append("data: [DONE]\n\n")
        if step == "gzip":
            seen.completed = True
            text = "".join([*head, *(chunk({"content": w}) for w in words), *tail])
            return Response(
                gzip.compress(text.encode()), media_type="text/event-stream", headers={"content-encoding": "gzip"}
            )
        if calls:
            content = []
            for i, c in enumerate(calls):
                content.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": c["id"],
                                    "type": "function",
                                    "function": {"name": c["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                content += [
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                    for piece in pieces(c["arguments"])
                ]
        else:
            content = [chunk({"content": w}) for w in words]
        content = [part for event in content for part in split_mid_utf8(event)]
        return StreamingResponse(self._paced(step, seen, content, head, tail), media_type="text/event-stream")

    @staticmethod
    def _openai_tool_result(body: dict[str, Any]) -> str | None:
        last = (body.get("messages") or [{}])[-1]
        return str(last.get("content")) if last.get("role") == "tool" else None

    def _openai_calls(self, body: dict[str, Any]) -> list[dict[str, str]]:
        tools = [t["function"] for t in body.get("tools") or ()]
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none" or self._openai_tool_result(body) is not None:
            return []
        if isinstance(choice, dict):
            tools = [t for t in tools if t["name"] == choice["function"]["name"]]
        chosen = tools[:2] if body.get("parallel_tool_calls", True) and len(tools) > 1 else tools[:1]
        return [
            {
                "id": f"call_fake{i}",
                "name": t["name"],
                "arguments": json.dumps(sample(t.get("parameters") or {}), ensure_ascii=False),
            }
            for i, t in enumerate(chosen)
        ]

    async def openai_embeddings(self, request: Request) -> Response:
        body = await request.json()
        step, seen = self._next(request, body)
        if (error := self._error(step)) is not None:
            return error
        if step == "hang":
            await asyncio.sleep(3600)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 8)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), float(i)] + [0.5] * (dims - 2)}
            for i, t in enumerate(inputs)
        ]
        if step.startswith("bloat:"):
            _, pieces, *sized = step.split(":")
            headers = (
                {"content-length": str(len(PIECE) * int(pieces) + BLOAT_FRAME + len(json.dumps(data)))}
                if sized
                else None
            )
            return StreamingResponse(
                self._bloated(seen, int(pieces), data), media_type="application/json", headers=headers
            )
        seen.completed = True
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            }
        )

    @staticmethod
    async def _bloated(seen: Seen, pieces: int, data: list[dict[str, Any]]):
        yield BLOAT_HEAD
        for _ in range(pieces):
            yield PIECE
            seen.sent += len(PIECE)
            await asyncio.sleep(0)  # as in "flood"
        yield '", "data": ' + json.dumps(data) + BLOAT_TAIL
        seen.completed = True

    async def rerank(self, request: Request) -> Response:
        body = await request.json()
        step, seen = self._next(request, body)
        if (error := self._error(step)) is not None:
            return error
        query = set(body["query"].split())
        results = [
            {"index": i, "relevance_score": len(query & set(d.split())) / (1 + len(query))}
            for i, d in enumerate(body["documents"])
        ]
        seen.completed = True
        return JSONResponse({"results": results})

    # -- Anthropic -----------------------------------------------------------------------------------------------
    async def anthropic_messages(self, request: Request) -> Response:
        body = await request.json()
        step, seen = self._next(request, body)
        if (error := self._error(step)) is not None:
            return error
        words = self._words(body)
        stop = "max_tokens" if len(words) >= int(body["max_tokens"]) else "end_turn"
        uses = self._anthropic_uses(body)
        if uses:
            stop = "tool_use"
            forced = (body.get("tool_choice") or {}).get("type") in ("any", "tool")
            words = [] if forced else ["Let me ", "check."]
        elif (result := self._anthropic_tool_result(body)) is not None:
            words = pieces(f"Answer: {result}")
        if not body.get("stream"):
            seen.completed = True
            blocks = [{"type": "text", "text": "".join(words)}] if words else []
            blocks += [{"type": "tool_use", "id": u["id"], "name": u["name"], "input": u["input"]} for u in uses]
            return JSONResponse(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": blocks,
                    "stop_reason": stop,
                    "usage": {"input_tokens": 13, "output_tokens": len(words)},
                }
            )

        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        head = [
            event(
                "message_start",
                {
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": body["model"],
                        "stop_reason": None,
                        "usage": {"input_tokens": 13, "output_tokens": 1},
                    }
                },
            ),
            event("ping", {}),
        ]
        chunks: list[str] = []
        index = 0
        if words:
            chunks.append(event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
            chunks += [
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words
            ]
            chunks.append(event("content_block_stop", {"index": 0}))
            index = 1
        for use in uses:
            chunks.append(
                event(
                    "content_block_start",
                    {
                        "index": index,
                        "content_block": {"type": "tool_use", "id": use["id"], "name": use["name"], "input": {}},
                    },
                )
            )
            chunks += [
                event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
                for piece in pieces(json.dumps(use["input"], ensure_ascii=False))
            ]
            chunks.append(event("content_block_stop", {"index": index}))
            index += 1
        chunks = [part for e in chunks for part in split_mid_utf8(e)]
        tail = [
            event(
                "message_delta",
                {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": len(words)}},
            ),
            event("message_stop", {}),
        ]
        return StreamingResponse(self._paced(step, seen, chunks, head, tail), media_type="text/event-stream")

    @staticmethod
    def _anthropic_tool_result(body: dict[str, Any]) -> str | None:
        content = (body.get("messages") or [{}])[-1].get("content")
        for block in content if isinstance(content, list) else ():
            if block.get("type") == "tool_result":
                inner = block.get("content")
                return inner if isinstance(inner, str) else "".join(b.get("text", "") for b in inner or ())
        return None

    def _anthropic_uses(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        if not tools or choice.get("type") == "none" or self._anthropic_tool_result(body) is not None:
            return []
        if choice.get("type") == "tool":
            tools = [t for t in tools if t["name"] == choice["name"]]
        parallel = not choice.get("disable_parallel_tool_use") and len(tools) > 1
        return [
            {"id": f"toolu_fake{i}", "name": t["name"], "input": sample(t.get("input_schema") or {})}
            for i, t in enumerate(tools[:2] if parallel else tools[:1])
        ]


if __name__ == "__main__":  # a standalone upstream for other processes (benchmarks, multi-process tests)
    upstream = FakeUpstream(tokens=int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    server = uvicorn.Server(
        uvicorn.Config(upstream.app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
    )
    server.run()
