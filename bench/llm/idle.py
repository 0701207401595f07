"""What an idle pause costs the next request: time to first token of the same call made back to back and after the
process slept a little, for the direct read (raw HTTP client -> fake upstream) and for LLMService.generate called
in-process (no gRPC or HTTP surface: resolution, admission, the httpx/aiohttp upstream call, SSE parsing).

On this kind of machine (a 2-vCPU VM) code runs several times slower right after its CPU idled, so a 1-stream
benchmark, where every request arrives at an idle server, measures mostly that: the added time to first token
scales with how much code a request runs, not with what it waits for. Ratios are against back to back.

    .venv/bin/python bench/llm/idle.py [--requests 300]
"""

from __future__ import annotations

import argparse
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

PAUSES_MS = (0.0, 0.5, 2.0, 10.0)


async def measure(requests: int) -> dict[str, dict[float, float]]:
    import uvloop  # noqa: F401  (the server's loop; asyncio.run below is given it by main)

    from typecase.server.app import App
    from typecase.server.config import Settings
    from typecase.v1 import llm_pb2

    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench/llm/upstream.py"), str(port), "50"])
    tmp = tempfile.TemporaryDirectory(prefix="tc-idle-")
    app = App(
        Settings(
            _env_file=None,
            data_dir=tmp.name,
            grpc_port=0,
            http_port=0,
            admin_api_key="k" * 32,
            llm_local_enabled=False,
            log_level="WARNING",
        )
    )
    try:
        await app.start()
        llm = app.servicers["LLMService"]
        provider = await llm.catalog.create_provider(
            llm_pb2.Provider(
                name="idle", type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url=f"http://127.0.0.1:{port}/v1"
            )
        )
        model = await llm.catalog.create_model(
            llm_pb2.Model(provider_id=provider.id, name="idle", type=llm_pb2.MODEL_TYPE_LLM, online=True)
        )
        request = llm_pb2.GenerateRequest(model_id=model.id, messages=[llm_pb2.ChatMessage(role=2, content="go")])
        body = b'{"model":"idle","stream":true,"messages":[{"role":"user","content":"go"}]}'
        raw = RawHttp(port, "/v1/chat/completions", body, {})

        async def through_typecase() -> float:
            started = time.perf_counter()
            first = 0.0
            async for _message in llm.generate(request):
                if not first:
                    first = time.perf_counter() - started
            return first

        async def direct() -> float:
            return (await raw.call())[0]

        calls = {"direct": direct, "LLMService.generate": through_typecase}
        for call in calls.values():  # warm up
            for _ in range(30):
                await call()
        results: dict[str, dict[float, float]] = {name: {} for name in calls}
        for pause in PAUSES_MS:
            for name, call in calls.items():
                samples = []
                for _ in range(requests):
                    if pause:
                        time.sleep(pause / 1000)  # the process (and, here, its CPU) idles
                    samples.append(await call())
                results[name][pause] = statistics.median(samples) * 1000
        await raw.close()
        return results
    finally:
        await app.stop()
        upstream.terminate()
        upstream.wait(10)
        tmp.cleanup()


def main(argv: list[str] | None = None) -> dict[str, dict[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvloop

    results = uvloop.run(measure(args.requests))
    print(f"\nTime to first token p50 after an idle pause ({os.cpu_count()} cores), ratio to back to back\n")
    print(f"{'call':<22}" + "".join(f"{f'pause {p:g} ms':>22}" for p in PAUSES_MS))
    for name, by_pause in results.items():
        base = by_pause[0.0]
        print(f"{name:<22}" + "".join(f"{v:>10.3f} ms {v / base:>6.2f}x   " for v in by_pause.values()))
    gen, raw = results["LLMService.generate"], results["direct"]
    print(
        "\nadded by Typecase's own path: "
        + ", ".join(f"{gen[p] - raw[p]:+.2f} ms after {p:g} ms idle" for p in PAUSES_MS)
    )
    return results


if __name__ == "__main__":
    main()
