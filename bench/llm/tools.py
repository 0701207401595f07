"""Time to the first tool-call delta against time to the first text token: what Typecase adds to each.

The fake upstream (bench/llm/upstream.py) answers a request that offers tools with a streamed tool call of as many
chunks as its text answers have tokens. Each round makes one call on every path, in turn (the VM's speed drifts,
so paths measured in blocks would be measured under different conditions):
  direct text / direct tools      raw HTTP/1.1 client -> the upstream
  openai text / openai tools      raw HTTP/1.1 client -> POST /openai/v1/chat/completions stream=true
  generate text / generate tools  LLMService.generate in-process (no HTTP or gRPC surface)
and the added time of a round is its Typecase call minus its direct call of the same kind. Printed: the median added
time to first token of text and of tool calls for each surface, and their ratio (the brief's bar: tool calls within
10% of text).

By default the upstream paces its tokens (--delay-ms 2, a fast model's 500 tokens/s), so the first network read
holds the first token, as from a real model. With --delay-ms 0 it bursts the whole answer, the first read holds
dozens of events, and every event parsed before the first delta goes out weighs on the time to first token: a
tool-call event's JSON is larger than a text token's, so there the ratio measures parsing, not relaying.

Measured on this 2-core VM while shared (load average 10-15), 400 rounds: paced, added TTFT text vs tools
/openai/v1 1.50 vs 1.62 ms (1.08x), LLMService.generate 0.55 vs 0.60 ms (1.08x); bursting (50 tokens, 300 rounds)
1.18x and 1.22x, the parsing of the larger events that share the first read.

    .venv/bin/python bench/llm/tools.py [--rounds 400] [--delay-ms 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.llm.relay import RawHttp, free_port  # noqa: E402

KEY = "tc-bench-admin-key-0123456789"
TOOL = {
    "type": "function",
    "function": {
        "name": "tok_lookup",
        "description": "look up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


async def measure(rounds: int, delay_ms: float, tokens: int) -> dict[str, list[float]]:
    from typecase.server.app import App
    from typecase.server.config import Settings
    from typecase.v1 import llm_pb2

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/llm/upstream.py"), str(port), str(tokens), str(delay_ms)]
    )
    tmp = tempfile.TemporaryDirectory(prefix="tc-tools-")
    app = App(
        Settings(
            _env_file=None,
            data_dir=tmp.name,
            grpc_port=0,
            http_port=0,
            admin_api_key=KEY,
            llm_local_enabled=False,
            log_level="WARNING",
            rate_limit_per_key="1000000/minute",
        )
    )
    clients: list[RawHttp] = []
    try:
        await app.start()
        llm = app.servicers["LLMService"]
        provider = await llm.catalog.create_provider(
            llm_pb2.Provider(
                name="bench", type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url=f"http://127.0.0.1:{port}/v1"
            )
        )
        model = await llm.catalog.create_model(
            llm_pb2.Model(provider_id=provider.id, name="bench", type=llm_pb2.MODEL_TYPE_LLM, online=True)
        )

        def body(tools: bool) -> bytes:
            return json.dumps(
                {
                    "model": "bench",
                    "stream": True,
                    "messages": [{"role": "user", "content": "go"}],
                    **({"tools": [TOOL]} if tools else {}),
                }
            ).encode()

        def raw(to: int, path: str, tools: bool) -> RawHttp:
            clients.append(RawHttp(to, path, body(tools), {"authorization": f"Bearer {KEY}"}))
            return clients[-1]

        tool_pb = llm_pb2.Tool(name="tok_lookup", description="look up")
        tool_pb.parameters.update(TOOL["function"]["parameters"])

        def generate(tools: bool):
            request = llm_pb2.GenerateRequest(
                model_id=model.id,
                messages=[llm_pb2.ChatMessage(role=2, content="go")],
                tools=[tool_pb] if tools else [],
            )

            async def call() -> tuple[float, int]:
                started, first = time.perf_counter(), 0.0
                async for message in llm.generate(request):
                    if not first and (message.text or message.tool_calls):
                        first = time.perf_counter() - started
                return first, 0

            return call

        paths = {}
        for kind, tools in (("text", False), ("tools", True)):
            paths[f"direct {kind}"] = raw(port, "/v1/chat/completions", tools).call
            paths[f"openai {kind}"] = raw(app.http_port, "/openai/v1/chat/completions", tools).call
            paths[f"generate {kind}"] = generate(tools)
        for _ in range(30):  # warm up, in turns too (an idle keep-alive connection would be closed meanwhile)
            for call in paths.values():
                await call()
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(rounds):
            for name, call in paths.items():
                samples[name].append((await call())[0])
        return samples
    finally:
        for client in clients:
            await client.close()
        await app.stop()
        upstream.terminate()
        upstream.wait(10)
        tmp.cleanup()


def added(samples: dict[str, list[float]], surface: str, kind: str) -> float:
    """Median over rounds of (Typecase - direct) for the same kind, in ms."""
    return statistics.median(t - d for t, d in zip(samples[f"{surface} {kind}"], samples[f"direct {kind}"])) * 1000


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--delay-ms", type=float, default=2.0, help="upstream pause between tokens")
    parser.add_argument("--tokens", type=int, default=20, help="tokens (or tool-call fragments) per answer")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvloop

    samples = uvloop.run(measure(args.rounds, args.delay_ms, args.tokens))
    print(
        f"\nTime to first token p50, {args.rounds} interleaved rounds, upstream {args.delay_ms:g} ms between "
        f"tokens ({os.cpu_count()} cores)\n"
    )
    for name, values in samples.items():
        print(f"  {name:<16} {statistics.median(values) * 1000:8.3f} ms")
    report: dict[str, dict[str, float]] = {}
    print(f"\n{'surface':<10}{'added TTFT text':>18}{'added TTFT tools':>18}{'ratio tools/text':>18}")
    for surface in ("openai", "generate"):
        text, tools = added(samples, surface, "text"), added(samples, surface, "tools")
        report[surface] = {"text_ms": text, "tools_ms": tools, "ratio": tools / text}
        print(f"{surface:<10}{text:>15.3f} ms{tools:>15.3f} ms{tools / text:>17.2f}x")
    return report


if __name__ == "__main__":
    main()
