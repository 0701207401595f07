"""Token relay benchmark: a fake upstream streaming as fast as it can, read directly and through Typecase.

Starts the fake upstream (bench/llm/upstream.py) and a real `typecase serve` (embedded mode) as subprocesses,
registers the upstream as a model, then measures each surface against the direct read:
  direct      raw HTTP/1.1 SSE client -> upstream
  grpc        grpc.aio client -> LLMService.Generate
  sse         raw HTTP client -> POST /v1/models/{id}:generate, Accept: text/event-stream (the transcoder)
  websocket   websockets client -> the same route upgraded (the transcoder)
  openai      raw HTTP client -> POST /openai/v1/chat/completions stream=true (what LiteLLM serves)
and prints, with 1 and with N concurrent streams, the added time to first token and the relay throughput as
ratios to direct; then streamed requests/s with 50 concurrent clients and the server's CPU per request (the
LiteLLM comparison: 22 ms added TTFT p50, ~100 ms CPU per 50-chunk request, 9.4 requests/s). The 1-stream runs
also measure bare grpc.aio and uvicorn (SSE and WebSocket) relays with none of Typecase's code (bench/llm/floor.py):
what the frameworks alone add on this machine, and so what Typecase's own code adds on top of them, per surface
against the bare relay of its framework (/openai/v1 against the uvicorn SSE one), target <= 0.5 ms.

    .venv/bin/python bench/llm/relay.py [--tokens 50] [--concurrency 500] [--sequential 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[2]
KEY = "tc-bench-admin-key-0123456789"
AUTH = f"Bearer {KEY}"
LITELLM = {"ttft_added_ms": 22.0, "cpu_ms_per_request": 100.0, "requests_per_s": 9.4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def ttft_p50_ms(self) -> float:
        return statistics.median(self.ttfts) * 1000 if self.ttfts else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


# -------------------------------------------------------------------------------------------------- clients


def tokens(data: bytes | str) -> int:
    """The fake's tokens are "tokN "; usage field names ("prompt_tokens", ...) contain "tok" too."""
    if isinstance(data, str):
        return data.count("tok") - data.count("tokens")
    return data.count(b"tok") - data.count(b"tokens")


class RawHttp:
    """One keep-alive HTTP/1.1 connection reading chunked SSE/NDJSON bodies; counts "tok" markers (the fake's
    tokens are "tokN "), which stays right however a relay regroups them."""

    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str]):
        self.port = port
        lines = [
            f"POST {path} HTTP/1.1",
            "host: 127.0.0.1",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> tuple[float, int]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        started = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:200])
        ttft, body = 0.0, []
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise RuntimeError("connection closed mid-body")
            if not ttft and tokens(data):
                ttft = time.perf_counter() - started
            body.append(data)
            if (data if len(data) >= 7 else b"".join(body[-2:])).endswith(b"\r\n0\r\n\r\n"):  # chunked end
                return ttft, tokens(b"".join(body))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Surfaces:
    def __init__(
        self,
        upstream_port: int,
        http_port: int,
        grpc_port: int,
        model_id: str,
        tokens: int,
        floor_ports: tuple[int, int] = (0, 0),
    ):
        self.upstream_port, self.http_port, self.grpc_port = upstream_port, http_port, grpc_port
        self.floor_grpc_port, self.floor_http_port = floor_ports
        self.model_id, self.tokens = model_id, tokens
        self.chat_body = json.dumps(
            {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}
        ).encode()
        self.generate_body = json.dumps({"messages": [{"role": "MESSAGE_ROLE_USER", "content": "go"}]}).encode()
        self.channel: grpc.aio.Channel | None = None
        self.ws_handshakes: list[float] = []
        self.floor_ws_handshakes: list[float] = []

    async def __aenter__(self) -> Surfaces:
        from typecase.v1 import llm_pb2, llm_pb2_grpc

        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = llm_pb2_grpc.LLMServiceStub(self.channel)
        self.floor_channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.floor_grpc_port}")
        self.floor_stub = llm_pb2_grpc.LLMServiceStub(self.floor_channel)
        self.grpc_request = llm_pb2.GenerateRequest(
            model_id=self.model_id, messages=[llm_pb2.ChatMessage(role=2, content="go")]
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.floor_channel.close()

    def client(self, surface: str):
        """An async callable doing one streamed request -> (ttft seconds, tokens)."""
        if surface == "direct":
            return RawHttp(self.upstream_port, "/v1/chat/completions", self.chat_body, {})
        if surface == "openai":
            body = self.chat_body.replace(b'"bench"', json.dumps(self.model_id).encode())
            return RawHttp(self.http_port, "/openai/v1/chat/completions", body, {"authorization": AUTH})
        if surface == "sse":
            return RawHttp(
                self.http_port,
                f"/v1/models/{self.model_id}:generate",
                self.generate_body,
                {"authorization": AUTH, "accept": "text/event-stream"},
            )
        if surface == "grpc":
            return GrpcClient(self, self.stub)
        if surface == "grpc-floor":
            return GrpcClient(self, self.floor_stub)
        if surface == "sse-floor":
            return RawHttp(self.floor_http_port, "/", self.generate_body, {})
        if surface == "websocket":
            return WsClient(self, f"ws://127.0.0.1:{self.http_port}/v1/models/{self.model_id}:generate")
        if surface == "ws-floor":
            return WsClient(self, f"ws://127.0.0.1:{self.floor_http_port}/", self.floor_ws_handshakes)
        raise ValueError(surface)


class GrpcClient:
    def __init__(self, s: Surfaces, stub):
        self.s = s
        self.stub = stub

    async def call(self) -> tuple[float, int]:
        started = time.perf_counter()
        ttft, count = 0.0, 0
        async for message in self.stub.Generate(self.s.grpc_request, metadata=(("authorization", AUTH),)):
            n = tokens(message.text)
            if n and not count:
                ttft = time.perf_counter() - started
            count += n
        return ttft, count

    async def close(self) -> None:
        pass


class WsClient:
    def __init__(self, s: Surfaces, url: str, handshakes: list[float] | None = None):
        self.s = s
        self.url = url
        self.handshakes = s.ws_handshakes if handshakes is None else handshakes

    async def call(self) -> tuple[float, int]:
        from websockets.asyncio.client import connect

        connecting = time.perf_counter()
        ttft, count = 0.0, 0
        async with connect(self.url, additional_headers={"authorization": AUTH}, compression=None) as ws:
            # A WebSocket carries one call (the protocol's first frame is the request), so each call opens one;
            # TTFT counts from the request frame, like the keep-alive HTTP clients' from the request, and the
            # handshake is reported on its own.
            started = time.perf_counter()
            self.handshakes.append(started - connecting)
            await ws.send(self.s.generate_body.decode())
            async for frame in ws:
                n = tokens(frame)
                if n and not count:
                    ttft = time.perf_counter() - started
                count += n
        return ttft, count

    async def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- workloads


async def record_call(client, result: Result) -> None:
    """One streamed request, counted in `result` (a failed one as an error, its connection dropped)."""
    try:
        ttft, count = await client.call()
    except Exception:
        result.errors += 1
        await client.close()
        if isinstance(client, RawHttp):
            client.writer = None
        return
    result.requests += 1
    result.tokens += count
    result.ttfts.append(ttft)


async def run_workers(
    surfaces: Surfaces, surface: str, workers: int, requests_each: int = 0, seconds: float = 0.0
) -> Result:
    """`workers` concurrent clients, each doing `requests_each` requests (or requests until `seconds` passed)."""
    result = Result()
    clients = [surfaces.client(surface) for _ in range(workers)]
    deadline = time.perf_counter() + seconds if seconds else None

    async def worker(client) -> None:
        done = 0
        while (deadline is None and done < requests_each) or (deadline is not None and time.perf_counter() < deadline):
            await record_call(client, result)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    result.seconds = time.perf_counter() - started
    for c in clients:
        await c.close()
    return result


async def interleaved(surfaces: Surfaces, rounds: int) -> dict[str, Result]:
    """One stream at a time, every surface in turn each round: this machine's speed drifts over seconds (a VM's
    host), and taking turns exposes every surface to the same drift, which back-to-back blocks would not."""
    clients = {surface: surfaces.client(surface) for surface in (*SURFACES, *FLOORS)}
    results = {surface: Result() for surface in clients}
    busy = {surface: 0.0 for surface in clients}
    for _ in range(rounds):
        for surface, client in clients.items():
            began = time.perf_counter()
            await record_call(client, results[surface])
            busy[surface] += time.perf_counter() - began
    for surface, client in clients.items():
        results[surface].seconds = busy[surface]
        await client.close()
    return results


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------ the stack


class Stack:
    """The fake upstream and a `typecase serve` in subprocesses, with the upstream registered as a model."""

    def __init__(self, tokens: int, server_env: dict[str, str] | None = None):
        self.tokens = tokens
        self.server_env = server_env or {}
        self.tmp = tempfile.TemporaryDirectory(prefix="tc-bench-")
        self.upstream_port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()
        self.floor_ports = (free_port(), free_port())
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        python = sys.executable
        self.procs.append(
            subprocess.Popen(
                [python, str(ROOT / "bench/llm/upstream.py"), str(self.upstream_port), str(self.tokens)],
                stdout=subprocess.DEVNULL,
            )
        )
        self.procs.append(
            subprocess.Popen(
                [python, str(ROOT / "bench/llm/floor.py"), str(self.upstream_port), *map(str, self.floor_ports)]
            )
        )
        env = {
            **os.environ,
            "TYPECASE_DATA_DIR": self.tmp.name,
            "TYPECASE_HTTP_PORT": str(self.http_port),
            "TYPECASE_GRPC_PORT": str(self.grpc_port),
            "TYPECASE_ADMIN_API_KEY": KEY,
            "HF_HUB_OFFLINE": "1",
            "TYPECASE_RATE_LIMIT_PER_KEY": "100000000/minute",
            "TYPECASE_RATE_LIMIT_PER_USER": "100000000/minute",
            "TYPECASE_LOG_LEVEL": "WARNING",
            "TYPECASE_SHUTDOWN_GRACE_SECONDS": "1",
        }
        env = {k: v for k, v in env.items() if not (k.startswith("TYPECASE_") and k.endswith("_URL"))}
        env.update(self.server_env)
        self.log = open(Path(self.tmp.name) / "server.log", "wb")
        self.server = subprocess.Popen(
            [python, "-m", "typecase.server", "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.procs.append(self.server)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise RuntimeError("typecase did not start:\n" + (Path(self.tmp.name) / "server.log").read_text())
            time.sleep(0.1)
        while True:  # the bare relays (bench/llm/floor.py) are up long before Typecase; checked all the same
            try:
                socket.create_connection(("127.0.0.1", self.floor_ports[1]), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.procs[1].poll() is not None:
                    raise RuntimeError("bench/llm/floor.py did not start") from None
                time.sleep(0.1)
        headers = {"authorization": AUTH}
        base = f"http://127.0.0.1:{self.http_port}"
        provider = httpx.post(
            f"{base}/v1/providers",
            headers=headers,
            json={
                "name": "bench",
                "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
                "base_url": f"http://127.0.0.1:{self.upstream_port}/v1",
            },
        ).json()["provider"]
        model = httpx.post(
            f"{base}/v1/models",
            headers=headers,
            json={"provider_id": provider["id"], "name": "bench-model", "type": "MODEL_TYPE_LLM", "online": True},
        ).json()
        self.model_id = model["model"]["id"]

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if hasattr(self, "log"):
            self.log.close()
        self.tmp.cleanup()


SURFACES = ("direct", "grpc", "sse", "websocket", "openai")
FLOORS = ("grpc-floor", "sse-floor", "ws-floor")  # bare framework relays (bench/llm/floor.py), 1-stream runs only
# Each surface against the bare relay of its framework: /openai/v1 is plain HTTP streaming on uvicorn, like SSE.
FLOOR_OF = {"grpc": "grpc-floor", "sse": "sse-floor", "websocket": "ws-floor", "openai": "sse-floor"}
OWN_TARGET_MS = 0.5


async def bench(args) -> dict:
    with Stack(args.tokens, dict(kv.split("=", 1) for kv in args.server_env)) as stack:
        async with Surfaces(
            stack.upstream_port, stack.http_port, stack.grpc_port, stack.model_id, args.tokens, stack.floor_ports
        ) as surfaces:
            report: dict = {"tokens_per_request": args.tokens, "single": {}, "concurrent": {}}
            for surface in (*SURFACES, *FLOORS):  # warm up connections, the model snapshot, code paths
                await run_workers(surfaces, surface, 4, requests_each=10)
            surfaces.ws_handshakes.clear()
            surfaces.floor_ws_handshakes.clear()
            report["single"] = await interleaved(surfaces, args.sequential)
            report["ws_handshake_ms"] = statistics.median(surfaces.ws_handshakes) * 1000
            report["floor_ws_handshake_ms"] = statistics.median(surfaces.floor_ws_handshakes) * 1000
            for surface in SURFACES:
                report["concurrent"][surface] = await run_workers(
                    surfaces, surface, args.concurrency, requests_each=args.requests_each
                )
            load = {}
            for surface in ("openai", "grpc"):
                before = cpu_seconds(stack.server.pid)
                result = await run_workers(surfaces, surface, 50, seconds=args.seconds)
                load[surface] = (result, (cpu_seconds(stack.server.pid) - before) / max(1, result.requests))
            report["load"] = load
    return report


def print_report(report: dict, args) -> None:
    single, concurrent = report["single"], report["concurrent"]
    d1, dn = single["direct"], concurrent["direct"]
    print(
        f"\nToken relay: {args.tokens}-chunk streams from a fake upstream, direct vs through Typecase "
        f"({os.cpu_count()} cores)\n"
    )
    print(
        f"{'surface':<10} | {'1 stream: TTFT p50':>18} {'added':>9} {'tokens/s':>10} {'ratio':>6} | "
        f"{args.concurrency} streams: {'TTFT p50':>9} {'tokens/s':>10} {'ratio':>6} {'errors':>6}"
    )
    for surface in SURFACES:
        s, c = single[surface], concurrent[surface]
        added = s.ttft_p50_ms - d1.ttft_p50_ms
        print(
            f"{surface:<10} | {s.ttft_p50_ms:>15.2f} ms {added:>+6.2f} ms {s.tokens_per_s:>10.0f} "
            f"{s.tokens_per_s / d1.tokens_per_s:>6.2f} | {'':>12}{c.ttft_p50_ms:>6.1f} ms {c.tokens_per_s:>10.0f} "
            f"{c.tokens_per_s / dn.tokens_per_s:>6.2f} {c.errors:>6}"
        )
    print(
        f"\n50 concurrent clients for {args.seconds:g}s (LiteLLM 1.106.2 on this machine: "
        f"{LITELLM['requests_per_s']} streamed requests/s, ~{LITELLM['cpu_ms_per_request']:.0f} ms CPU/request, "
        f"+{LITELLM['ttft_added_ms']:.0f} ms TTFT p50)"
    )
    for surface, (result, cpu) in report["load"].items():
        rps = result.requests / result.seconds
        print(
            f"  {surface:<8} {rps:>8.1f} streamed requests/s = {rps / LITELLM['requests_per_s']:>5.1f}x LiteLLM; "
            f"server CPU {cpu * 1000:>5.2f} ms/request = {LITELLM['cpu_ms_per_request'] / (cpu * 1000):>5.1f}x less; "
            f"TTFT p50 {result.ttft_p50_ms:.1f} ms; errors {result.errors}"
        )
    added = {s: single[s].ttft_p50_ms - d1.ttft_p50_ms for s in (*SURFACES[1:], *FLOORS)}
    print("\nadded TTFT p50 (1 stream), target < 2 ms: " + ", ".join(f"{s} {added[s]:+.2f} ms" for s in SURFACES[1:]))
    print(
        f"bare relays, no Typecase code (bench/llm/floor.py): grpc.aio {added['grpc-floor']:+.2f} ms, "
        f"uvicorn SSE {added['sse-floor']:+.2f} ms, uvicorn WebSocket {added['ws-floor']:+.2f} ms"
    )
    own = {s: single[s].ttft_p50_ms - single[f].ttft_p50_ms for s, f in FLOOR_OF.items()}
    print(
        f"so Typecase's own code adds (target <= {OWN_TARGET_MS} ms): "
        + ", ".join(f"{s} {own[s]:+.2f} ms{'' if own[s] <= OWN_TARGET_MS else ' (over)'}" for s in FLOOR_OF)
    )
    report["own_ms"] = own
    print(
        f"(websocket TTFT counts from the request frame; its connection and upgrade, one per call, took "
        f"{report['ws_handshake_ms']:.2f} ms p50 before that, {report['floor_ws_handshake_ms']:.2f} ms on the bare relay)"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--sequential", type=int, default=200, help="requests of the 1-stream runs")
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--requests-each", type=int, default=2, help="requests per stream of the concurrent runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the 50-client load runs")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the server (compare settings)",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(bench(args))
    print_report(report, args)
    return report


if __name__ == "__main__":
    main()
