"""A fake OpenAI-compatible upstream: a real HTTP server (Starlette + uvicorn on a loopback port) streaming chat
completions in OpenAI's SSE wire format, registered in Typecase as an openai_compatible provider.

The answer is shaped by directives in the last user message, e.g. "[tokens=200 delay=0.01 ttft=0.5] question":
  tokens=N   N content chunks (default 20), each one token of `token_text(i)`;
  delay=S    seconds between chunks (default 0); ttft=S seconds before the first chunk;
  status=C   answer HTTP status C (e.g. 500) instead of streaming;
  fail_at=N  drop the connection after N chunks;
  query=Q    a request whose system message asks for a "search query" (chat/search_query.py's rewriting) is answered
             with Q, underscores as spaces, in one chunk.
A conversation ending with an assistant message is a prefill: the answer continues after the tokens it holds.
POST /v1/embeddings answers deterministic bag-of-words vectors (see `embed`).
Every request body is recorded, and so is every stream the client closed before its end (`closed_early`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

DIRECTIVES = re.compile(r"\[([a-z_]+=[^\]\s]+(?:\s+[a-z_]+=[^\]\s]+)*)\]")
WORDS = ("alpha", "βeta", "gamma", "δelta", "中文", "emoji😀", "zeta", "eta")


EMBED_DIMS = 64


def embed(text: str) -> list[float]:
    vector = [0.0] * EMBED_DIMS
    for word in re.findall(r"\w+", text.lower()):
        vector[zlib.crc32(word.encode()) % EMBED_DIMS] += 1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def token_text(i: int) -> str:
    """The i-th chunk's text: words with multi-byte characters, so byte/character mix-ups show."""
    return f"{WORDS[i % len(WORDS)]}{i} "


def expected_answer(tokens: int) -> str:
    return "".join(token_text(i) for i in range(tokens))


def prefilled_tokens(messages: list[dict[str, Any]]) -> int:
    """How many answer tokens a trailing assistant message already holds (each token ends with one space)."""
    if not messages or messages[-1].get("role") != "assistant":
        return 0
    return (messages[-1].get("content") or "").count(" ")


def directives(messages: list[dict[str, Any]]) -> dict[str, str]:
    last_user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    found = DIRECTIVES.findall(last_user if isinstance(last_user, str) else "")
    if not found:
        return {}
    # the last one: a message quoting earlier questions (query rewriting) ends with the one that counts
    return dict(part.split("=", 1) for part in found[-1].split())


@dataclass
class FakeUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    closed_early: int = 0
    completed: int = 0
    close_times: list[float] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            ]
        )

    async def embeddings(self, request: Request):
        """Bag-of-words vectors hashed into EMBED_DIMS dimensions: texts sharing words are similar."""
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": embed(text)} for i, text in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(self, request: Request):
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def chat_completions(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        opts = directives(body.get("messages", []))
        if "status" in opts:
            code = int(opts["status"])
            return JSONResponse({"error": {"message": f"injected {code}", "type": "server_error"}}, status_code=code)
        tokens = int(opts.get("tokens", 20))
        asks_query = any(
            m.get("role") == "system" and "search query" in str(m.get("content")) for m in body.get("messages", [])
        )
        if "query" in opts and asks_query:
            text = opts["query"].replace("_", " ")
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}],
            }
            return StreamingResponse(
                iter([f"data: {json.dumps(chunk)}\n\n", "data: [DONE]\n\n"]), media_type="text/event-stream"
            )
        delay = float(opts.get("delay", 0))
        ttft = float(opts.get("ttft", 0))
        fail_at = int(opts.get("fail_at", -1))
        model = body.get("model", "fake")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if not body.get("stream"):
            text = expected_answer(tokens)
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens},
                }
            )

        async def stream():
            finished = False
            try:
                if ttft:
                    await asyncio.sleep(ttft)
                for i in range(prefilled_tokens(body.get("messages", [])), tokens):
                    if i == fail_at:
                        raise ConnectionResetError("injected mid-stream failure")
                    if delay and i:
                        await asyncio.sleep(delay)
                    chunk = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "delta": {"content": token_text(i)}, "finish_reason": None}],
                    }
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                final = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(final)}\n\n"
                if include_usage:
                    usage = {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}
                    yield f"data: {json.dumps({'id': 'chatcmpl-fake', 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
                finished = True
            finally:
                if finished:
                    self.completed += 1
                else:
                    self.closed_early += 1
                    self.close_times.append(time.monotonic())

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def start(self) -> FakeUpstream:
        config = uvicorn.Config(
            self.app(), host=self.host, port=self.port, lifespan="off", log_config=None, access_log=False
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield
