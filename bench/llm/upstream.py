"""A fake OpenAI-compatible upstream: raw asyncio, HTTP/1.1 keep-alive, chunked SSE, as fast as it can or paced
like a model (`DELAY_MS` between tokens).

Every POST (any path) answers a chat.completion.chunk stream of `tokens` content chunks ("tok0 ", "tok1 ", ...),
a finish chunk, a usage chunk and `data: [DONE]`, each chunk its own write with a loop turn in between, as a
server generating tokens would. A request that offers tools (its body has "tools") gets the same number of chunks
as one tool call instead: the call's first delta (id, and the name "tok_lookup", so that time-to-first-token
clients see it as a token), then argument fragments ("tokN "), finish_reason "tool_calls". Run: python bench/llm/upstream.py PORT [TOKENS [DELAY_MS]]
"""

from __future__ import annotations

import asyncio
import json
import sys


def _chunk(payload: dict) -> bytes:
    event = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _call_delta(i: int, tokens: int) -> dict:
    if i == 0:
        return {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_bench",
                    "type": "function",
                    "function": {"name": "tok_lookup", "arguments": '{"q":"'},
                }
            ]
        }
    return {"tool_calls": [{"index": 0, "function": {"arguments": f"tok{i} " + ('"}' if i == tokens - 1 else "")}}]}


def events(tokens: int, tools: bool = False) -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench"}
    out = [
        _chunk(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
    ]
    out += [
        _chunk(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": _call_delta(i, tokens) if tools else {"content": f"tok{i} "},
                        "finish_reason": None,
                    }
                ],
            }
        )
        for i in range(tokens)
    ]
    out.append(
        _chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tools else "stop"}]})
    )
    out.append(
        _chunk(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens},
            }
        )
    )
    done = b"data: [DONE]\n\n"
    out.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    return out


HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class Upstream(asyncio.Protocol):
    def __init__(self, chunks: list[bytes], tokens: int, delay: float, tool_chunks: list[bytes] | None = None):
        self.chunks = chunks
        self.tool_chunks = tool_chunks or chunks
        self.tokens = tokens
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[bool] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.task = asyncio.get_running_loop().create_task(self.serve())

    def connection_lost(self, exc) -> None:
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:  # complete requests (headers + content-length body) in the buffer
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower() + b"\r\n"
            at = head.find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            tools = b'"tools"' in self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.queue.put_nowait(tools)

    async def serve(self) -> None:
        while True:
            tools = await self.queue.get()
            self.transport.write(HEAD)
            for i, chunk in enumerate(
                self.tool_chunks if tools else self.chunks
            ):  # chunk 0 is the role, chunks 1..tokens the tokens
                # One loop turn per chunk at least: other streams interleave, writes stay separate. A paced
                # upstream "thinks" between tokens.
                await asyncio.sleep(self.delay if self.delay and 1 < i <= self.tokens else 0)
                if self.transport.is_closing():
                    return
                self.transport.write(chunk)


async def main(port: int, tokens: int, delay_ms: float) -> None:
    chunks, tool_chunks = events(tokens), events(tokens, tools=True)
    server = await asyncio.get_running_loop().create_server(
        lambda: Upstream(chunks, tokens, delay_ms / 1000, tool_chunks), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]), int(args[1]) if len(args) > 1 else 50, float(args[2]) if len(args) > 2 else 0.0))
