"""What traces cost: request latency with tracing off, on (exporting to an OTLP/HTTP receiver on loopback), off again.

    .venv/bin/python bench/tracing/overhead.py [--turns 100] [--calls 300] [--tokens 20]

One embedded App in this process, a fake OpenAI-compatible upstream (tests/chat/fake_upstream.py) as its chat
model; sequential requests over HTTP: unary `GET /v1/models` and chat turns (`POST /v1/sessions/{id}:chat`, NDJSON,
--tokens tokens). The phases run off, on, off: the two off phases bound the drift of a busy host, and "off" is
what every deployment without an endpoint pays. Printed beside them: what the off switch itself costs per call
site (the null span context manager), times the call sites a chat turn passes through.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _name in [n for n in os.environ if n.startswith(("TYPECASE_", "OTEL_"))]:
    del os.environ[_name]

from tests.conftest import ADMIN_KEY as KEY  # noqa: E402 - the key tests/chat's helpers register models with

HEADERS = {"authorization": f"Bearer {KEY}"}
SITES_PER_TURN = 6  # rpc span (x2: Chat and its title), chat turn, knowledge search, LLM call (+ title's)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * p)))]


async def phase(label: str, data_dir: Path, args, upstream, endpoint: str | None) -> dict:
    import grpc
    import httpx

    from tests.chat.conftest import register_fake_model
    from typecase.server.app import App
    from typecase.server.config import Settings
    from typecase.v1 import llm_pb2, llm_pb2_grpc

    app = App(
        Settings(
            _env_file=None,
            data_dir=data_dir,
            grpc_port=0,
            http_port=0,
            admin_api_key=KEY,
            shutdown_grace_seconds=1,
            log_level="WARNING",
            otel_endpoint=endpoint,
            otel_schedule_delay_seconds=1,
        )
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            llm = llm_pb2_grpc.LLMServiceStub(channel)
            models = await llm.ListModels(llm_pb2.ListModelsRequest(), metadata=tuple(HEADERS.items()))
            if not any(m.name == "fake-chat" for m in models.models):
                await register_fake_model(llm, upstream.base_url)
        unary, turns = [], []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http:
            for _ in range(5):  # warm-up
                await http.get("/v1/models", headers=HEADERS)
            for _ in range(args.calls):
                started = time.perf_counter()
                (await http.get("/v1/models", headers=HEADERS)).raise_for_status()
                unary.append(time.perf_counter() - started)
            for _ in range(args.turns):
                session = (await http.post("/v1/sessions", json={}, headers=HEADERS)).json()["session"]
                started = time.perf_counter()
                async with http.stream(
                    "POST",
                    f"/v1/sessions/{session['id']}:chat",
                    headers=HEADERS,
                    json={"content": f"[tokens={args.tokens}] hello"},
                ) as response:
                    async for _ in response.aiter_lines():
                        pass
                turns.append(time.perf_counter() - started)
    finally:
        await app.stop()
    return {"label": label, "unary": unary, "turns": turns}


def off_switch_cost() -> float:
    """Seconds per call site while tracing is off: what the instrumented code runs instead of a span."""
    from typecase.server.infra import tracing

    assert not tracing.enabled()

    def site() -> None:
        with tracing.span("x", {"a": 1}):
            pass

    n = 200_000
    return min(timeit.repeat(site, number=n, repeat=3)) / n


async def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args(argv)
    from tests.chat.fake_upstream import FakeUpstream
    from tests.tracing.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver().start()
    upstream = await FakeUpstream().start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="typecase-tracing-") as tmp:
            data = Path(tmp) / "data"
            for label, endpoint in (("off", None), ("on", receiver.url), ("off again", None)):
                results.append(await phase(label, data, args, upstream, endpoint))
    finally:
        await upstream.stop()
        receiver.stop()
    site = off_switch_cost()
    base_unary = statistics.median(results[0]["unary"])
    base_turn = statistics.median(results[0]["turns"])
    print(
        f"\n== tracing overhead: {args.calls} unary calls, {args.turns} chat turns of {args.tokens} tokens, "
        f"sequential over HTTP =="
    )
    for r in results:
        u50, u99 = statistics.median(r["unary"]), percentile(r["unary"], 0.99)
        t50, t99 = statistics.median(r["turns"]), percentile(r["turns"], 0.99)
        print(
            f"  {r['label']:>9}: GET /v1/models p50 {u50 * 1e3:6.2f} ms p99 {u99 * 1e3:6.2f} ms "
            f"({u50 / base_unary:4.2f}x off)   chat turn p50 {t50 * 1e3:6.2f} ms p99 {t99 * 1e3:6.2f} ms "
            f"({t50 / base_turn:4.2f}x off)"
        )
    print(f"  spans received while on: {len(receiver.spans)}")
    print(
        f"  off switch: {site * 1e9:.0f} ns per call site, {SITES_PER_TURN} sites per chat turn = "
        f"{site * SITES_PER_TURN * 1e6:.2f} us = {site * SITES_PER_TURN / base_turn:.5%} of a turn"
    )
    return results


if __name__ == "__main__":
    asyncio.run(main())
