"""Chat turns under load: N concurrent streaming turns through one `typecase serve` process, beside the same load
sent straight to the fake upstream.

Both runs use the same raw-asyncio HTTP client reading Server-Sent Events (what a browser does): the direct run
POSTs /v1/chat/completions to the upstream; the Typecase run POSTs /v1/sessions/{id}:chat (one session per turn)
with `Accept: text/event-stream`, so each token goes upstream -> LLM service -> turn runner -> event log ->
reader -> SSE. Prints p50/p99 time to first token and inter-token gap for both with their ratios, and the
server's peak RSS and CPU.

Run: .venv/bin/python bench/chat/bench_chat.py [--turns 500] [--tokens 50] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
KEY = "tc-bench-admin-key-0123456789"
TOKEN = re.compile(rb"tok\d+ ")  # the fake upstream's tokens are "tok0 ", "tok1 ", ...
AUTH = f"Bearer {KEY}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------------------ the client


@dataclass
class Stream:
    sent: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    ended: bool = False
    error: str = ""


async def sse_stream(port: int, path: str, body: bytes, headers: dict[str, str], is_token, is_end) -> Stream:
    """One POST on a fresh HTTP/1.1 connection; records when each token event arrives."""
    lines = [
        f"POST {path} HTTP/1.1",
        "host: 127.0.0.1",
        "content-type: application/json",
        "accept: text/event-stream",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    result = Stream()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        result.sent = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            result.error = head[:200].decode(errors="replace")
            return result
        chunked = b"transfer-encoding: chunked" in head.lower()
        raw, body_buf = b"", b""
        while not result.ended:
            data = await reader.read(65536)
            if not data:
                result.error = result.error or "connection closed before the end"
                return result
            now = time.perf_counter()
            if chunked:  # de-chunk what is complete
                raw += data
                while True:
                    line_end = raw.find(b"\r\n")
                    if line_end < 0:
                        break
                    size = int(raw[:line_end].split(b";")[0], 16)
                    if len(raw) < line_end + 2 + size + 2:
                        break
                    body_buf += raw[line_end + 2 : line_end + 2 + size]
                    raw = raw[line_end + 2 + size + 2 :]
                    if size == 0:
                        break
            else:
                body_buf += data
            while (cut := body_buf.find(b"\n\n")) >= 0:
                event, body_buf = body_buf[:cut], body_buf[cut + 2 :]
                if is_token(event):  # an event may carry several tokens when the relay merged them
                    result.arrivals.extend([now] * max(1, len(TOKEN.findall(event))))
                elif is_end(event):
                    result.ended = True
                    if b'"error"' in event and b'"ended"' not in event:
                        result.error = event[:300].decode(errors="replace")
                    break
        return result
    finally:
        writer.close()


async def run_load(
    port: int, paths_bodies: list[tuple[str, bytes]], headers: dict[str, str], is_token, is_end
) -> tuple[list[Stream], float]:
    started = time.perf_counter()
    streams = await asyncio.gather(
        *[sse_stream(port, path, body, headers, is_token, is_end) for path, body in paths_bodies]
    )
    return list(streams), time.perf_counter() - started


def summarize(streams: list[Stream], wall: float) -> dict[str, float]:
    ttft = [(s.arrivals[0] - s.sent) * 1000 for s in streams if s.arrivals]
    gaps = [(b - a) * 1000 for s in streams for a, b in zip(s.arrivals, s.arrivals[1:])]
    tokens = sum(len(s.arrivals) for s in streams)
    return {
        "ttft_p50": percentile(ttft, 50),
        "ttft_p99": percentile(ttft, 99),
        "gap_p50": percentile(gaps, 50),
        "gap_p99": percentile(gaps, 99),
        "wall": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "complete": sum(1 for s in streams if s.ended and not s.error),
        "tokens": tokens,
        "errors": sorted({s.error for s in streams if s.error})[:3],
    }


def direct_token(event: bytes) -> bool:
    return b'"content":"tok' in event


def direct_end(event: bytes) -> bool:
    return b"[DONE]" in event


def typecase_token(event: bytes) -> bool:
    return b'"token":{' in event


def typecase_end(event: bytes) -> bool:
    return b'"ended":{' in event or b'"error":{' in event


# ------------------------------------------------------------------------------------------ the stack


class Stack:
    """The paced fake upstream and a `typecase serve` (embedded: SQLite, in-memory cache and bus) in subprocesses,
    the upstream registered as the default chat model."""

    def __init__(self, tokens: int, delay_ms: float, turns: int, extra_env: dict[str, str] | None = None):
        self.tokens, self.delay_ms, self.turns = tokens, delay_ms, turns
        self.extra_env = extra_env or {}
        self.tmp = tempfile.TemporaryDirectory(prefix="tc-chat-bench-")
        self.upstream_port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Stack:
        python = sys.executable
        self.procs.append(
            subprocess.Popen(
                [
                    python,
                    str(ROOT / "bench/llm/upstream.py"),
                    str(self.upstream_port),
                    str(self.tokens),
                    str(self.delay_ms),
                ]
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TYPECASE_")}
        env.update(
            {
                "TYPECASE_DATA_DIR": self.tmp.name,
                "TYPECASE_HTTP_PORT": str(self.http_port),
                "TYPECASE_GRPC_PORT": str(self.grpc_port),
                "TYPECASE_ADMIN_API_KEY": KEY,
                "HF_HUB_OFFLINE": "1",
                "TYPECASE_RATE_LIMIT_PER_KEY": "100000000/minute",
                "TYPECASE_RATE_LIMIT_PER_USER": "100000000/minute",
                "TYPECASE_LOG_LEVEL": "WARNING",
                "TYPECASE_SHUTDOWN_GRACE_SECONDS": "1",
                "TYPECASE_LLM_LOCAL_ENABLED": "false",
                "TYPECASE_LLM_MAX_KEEPALIVE_CONNECTIONS": str(max(200, self.turns)),
                **self.extra_env,
            }
        )
        self.log_path = Path(self.tmp.name) / "server.log"
        self.log = open(self.log_path, "wb")
        self.server = subprocess.Popen(
            [python, "-m", "typecase.server", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp.name,
        )
        self.procs.append(self.server)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise RuntimeError("typecase did not start:\n" + self.log_path.read_text())
            time.sleep(0.1)
        headers = {"authorization": AUTH}
        provider = httpx.post(
            f"{self.base}/v1/providers",
            headers=headers,
            json={
                "name": "bench",
                "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
                "base_url": f"http://127.0.0.1:{self.upstream_port}/v1",
            },
        ).json()["provider"]
        model = httpx.post(
            f"{self.base}/v1/models",
            headers=headers,
            json={
                "provider_id": provider["id"],
                "name": "bench-model",
                "type": "MODEL_TYPE_LLM",
                "online": True,
                "context_length": 8192,
            },
        ).json()["model"]
        httpx.patch(
            f"{self.base}/v1/llm/defaults", headers=headers, json={"chat_model_id": model["id"]}
        ).raise_for_status()
        self.model_id = model["id"]
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def sessions(self, count: int) -> list[str]:
        with httpx.Client(base_url=self.base, headers={"authorization": AUTH}, timeout=30) as client:
            return [
                client.post("/v1/sessions", json={"title": f"bench {i}"}).json()["session"]["id"] for i in range(count)
            ]

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()
        self.tmp.cleanup()


async def bench(args) -> dict:
    load_average = os.getloadavg()[0]
    with Stack(args.tokens, args.delay_ms, args.turns) as stack:
        ids = stack.sessions(args.turns + args.warmup)
        question = json.dumps({"content": "Tell me a story."}).encode()
        direct = (
            "/v1/chat/completions",
            json.dumps(
                {
                    "model": "bench",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Tell me a story."}],
                    "stream_options": {"include_usage": True},
                }
            ).encode(),
        )
        auth = {"authorization": AUTH}

        idle = proc_status(stack.server.pid)  # started, sessions created, nothing streamed yet
        # Warm up both paths (connections, code paths, the model registry snapshot).
        await run_load(stack.upstream_port, [direct] * args.warmup, {}, direct_token, direct_end)
        await run_load(
            stack.http_port,
            [(f"/v1/sessions/{s}:chat", question) for s in ids[: args.warmup]],
            auth,
            typecase_token,
            typecase_end,
        )

        streams, wall = await run_load(stack.upstream_port, [direct] * args.turns, {}, direct_token, direct_end)
        report = {"direct": summarize(streams, wall), "load_average": load_average}
        cpu_before = cpu_seconds(stack.server.pid)
        streams, wall = await run_load(
            stack.http_port,
            [(f"/v1/sessions/{s}:chat", question) for s in ids[args.warmup :]],
            auth,
            typecase_token,
            typecase_end,
        )
        report["typecase"] = summarize(streams, wall)
        report["server_cpu_s"] = cpu_seconds(stack.server.pid) - cpu_before
        peak = proc_status(stack.server.pid)
        report["idle_rss_mib"] = idle["VmRSS"] / 1024
        report["peak_rss_mib"] = peak["VmHWM"] / 1024
        # Every turn's stored answer is the whole text.
        with httpx.Client(base_url=stack.base, headers=auth, timeout=30) as client:
            sample = ids[args.warmup :: max(1, args.turns // 20)]
            expected = "".join(f"tok{i} " for i in range(args.tokens))
            stored = [client.get(f"/v1/sessions/{s}/messages").json()["messages"][-1] for s in sample]
            report["stored_ok"] = sum(
                1 for m in stored if m["content"] == expected and m["status"] == "MESSAGE_STATUS_COMPLETE"
            )
            report["stored_checked"] = len(stored)
        return report


def print_report(report: dict, args) -> None:
    d, t = report["direct"], report["typecase"]
    print(
        f"\nchat bench: {args.turns} concurrent streaming turns, {args.tokens} tokens each, "
        f"{args.delay_ms:g} ms apart (fake upstream); one `typecase serve` (SQLite, in-memory cache), SSE clients"
    )
    print(
        f"({os.cpu_count()} CPUs, load average {report['load_average']:.1f} when it started: other processes "
        "share these cores)"
    )
    print(f"{'':26}{'direct':>12}{'typecase':>12}{'ratio':>9}")
    rows = [
        ("time to first token p50", "ttft_p50", "ms"),
        ("time to first token p99", "ttft_p99", "ms"),
        ("inter-token gap p50", "gap_p50", "ms"),
        ("inter-token gap p99", "gap_p99", "ms"),
        ("wall time", "wall", "s"),
        ("tokens/s delivered", "tokens_per_s", ""),
    ]
    for label, key, unit in rows:
        ratio = t[key] / d[key] if d[key] else float("nan")
        print(f"{label + (f' ({unit})' if unit else ''):26}{d[key]:>12.1f}{t[key]:>12.1f}{ratio:>8.2f}x")
    print(f"{'turns complete':26}{d['complete']:>12}{t['complete']:>12}")
    added = report["peak_rss_mib"] - report["idle_rss_mib"]
    tokens = max(1, t["tokens"])
    print(
        f"server peak RSS {report['peak_rss_mib']:.0f} MiB (before any turn {report['idle_rss_mib']:.0f} MiB: "
        f"+{added * 1024 / max(1, args.turns):.0f} KiB per concurrent turn); server CPU during the run "
        f"{report['server_cpu_s']:.1f} s ({report['server_cpu_s'] / tokens * 1e6:.0f} us per token delivered)"
    )
    print(f"stored answers checked: {report['stored_ok']}/{report['stored_checked']} complete and exact")
    for err in d["errors"] + t["errors"]:
        print("error:", err)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=500, help="concurrent streaming turns")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="upstream pause between tokens")
    parser.add_argument(
        "--warmup",
        type=int,
        default=-1,
        help="turns of the warm-up round (default: as many as --turns, so connection pools are warm)",
    )
    args = parser.parse_args(argv)
    if args.warmup < 0:
        args.warmup = args.turns
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    report = asyncio.run(bench(args))
    print_report(report, args)
    return report


if __name__ == "__main__":
    main()
