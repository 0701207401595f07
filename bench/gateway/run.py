"""Gateway benchmark: ``.venv/bin/python bench/gateway/run.py [--quick]``.

Servers run in subprocesses on 127.0.0.1 (uvicorn, one worker each): the gateway with the InProcess
target, the gateway in front of a grpc.aio server through a channel, the grpc.aio server itself
(direct gRPC), and a bare Starlette app doing the same work (parse JSON, build the reply or the
stream items, dump JSON). The client (this process) uses raw sockets so that its own cost stays
small next to the servers'. Measured:

* unary: p50 latency of a trivial POST /v1/echo (sequential, keep-alive);
* streams: messages/s for one stream of N messages and for C concurrent streams of M messages,
  as NDJSON, SSE and WebSocket frames.

Prints a table with ratios to the bare Starlette baseline and saves bench/out/gateway.png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(out: Path) -> None:
    import google.api.http_pb2
    import grpc_tools
    from grpc_tools import protoc

    includes = [
        HERE / "protos",
        ROOT / "proto",
        Path(google.api.http_pb2.__file__).resolve().parents[2],
        Path(grpc_tools.__file__).parent / "_proto",
    ]
    args = [
        "protoc",
        *(f"-I{p}" for p in includes if p.is_dir()),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "gwbench/v1/bench.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


# -- raw HTTP/1.1 client ---------------------------------------------------------------------------


class Http:
    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        self.writer.close()

    async def _head(self) -> tuple[int, dict[bytes, bytes]]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        req = (
            f"{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: application/json\r\n{headers}\r\n"
        ).encode() + body
        self.writer.write(req)
        status, hdrs = await self._head()
        if b"content-length" in hdrs:
            return status, await self.reader.readexactly(int(hdrs[b"content-length"]))
        data = bytearray()
        while True:  # chunked
            size = int((await self.reader.readline()).strip(), 16)
            if size == 0:
                await self.reader.readline()
                return status, bytes(data)
            data += await self.reader.readexactly(size)
            await self.reader.readline()


async def ws_stream(port: int, path: str, count: int) -> int:
    """Raw WebSocket client: send the first frame, count text frames until close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps({"count": count}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    frames = 0
    buf = b""
    pos = 0
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        buf = buf[pos:] + chunk
        pos = 0
        closed = False
        while len(buf) - pos >= 2:
            op = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if len(buf) - pos < hdr + n:
                break
            pos += hdr + n
            if op == 1:
                frames += 1
            elif op == 8:
                closed = True
                break
        if closed:
            break
    writer.close()
    return frames


# -- measurements -----------------------------------------------------------------------------------


async def unary_p50(port: int, n: int) -> float:
    http = Http(port)
    await http.open()
    body = json.dumps({"text": "hello", "n": 7}).encode()
    for _ in range(min(200, n)):
        status, _ = await http.request("POST", "/v1/echo", body)
        assert status == 200, status
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await http.request("POST", "/v1/echo", body)
        samples.append(time.perf_counter() - t)
    await http.close()
    return statistics.median(samples)


async def http_stream(port: int, count: int, sse: bool) -> int:
    http = Http(port)
    await http.open()
    status, data = await http.request(
        "GET", f"/v1/stream?count={count}", headers="Accept: text/event-stream\r\n" if sse else ""
    )
    await http.close()
    assert status == 200, status
    return data.count(b"\n\n") if sse else data.count(b"\n")


async def stream_rate(kind: str, port: int, count: int, concurrency: int) -> float:
    async def one() -> int:
        if kind == "ws":
            return await ws_stream(port, "/v1/stream", count)
        return await http_stream(port, count, kind == "sse")

    async def warm() -> None:
        if kind == "ws":
            await ws_stream(port, "/v1/stream", 200)
        else:
            await http_stream(port, 200, kind == "sse")

    await warm()
    t = time.perf_counter()
    got = await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t
    assert all(g == count for g in got), (kind, got[:3], count)
    return count * concurrency / elapsed


async def grpc_measure(port: int, gen: Path, unary_n: int, count: int, concurrency: int) -> tuple[float, float]:
    import grpc

    sys.path.insert(0, str(gen))
    from gwbench.v1 import bench_pb2, bench_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = bench_pb2_grpc.BenchStub(ch)
        req = bench_pb2.EchoRequest(text="hello", n=7)
        for _ in range(200):
            await stub.Echo(req)
        samples = []
        for _ in range(unary_n):
            t = time.perf_counter()
            await stub.Echo(req)
            samples.append(time.perf_counter() - t)

        async def one() -> int:
            return sum([1 async for _ in stub.Stream(bench_pb2.StreamRequest(count=count))])

        t = time.perf_counter()
        got = await asyncio.gather(*(one() for _ in range(concurrency)))
        rate = sum(got) / (time.perf_counter() - t)
    return statistics.median(samples), rate


def chart(rows: list[tuple[str, dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in rows[0][1]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4.2))
    for ax, metric in zip(axes, metrics):
        names = [name for name, vals in rows if metric in vals]
        vals = [vals[metric] for _, vals in rows if metric in vals]
        ax.bar(range(len(vals)), vals, color=["#607d8b" if n.startswith("bare") else "#1565c0" for n in names])
        ax.set_xticks(range(len(vals)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    fig.suptitle("Typecase gateway vs bare Starlette and direct gRPC (127.0.0.1, 2 cores)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts (for the smoke test)")
    ap.add_argument("--unary", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=10_000, help="messages in the single stream")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--per-stream", type=int, default=1000, help="messages per stream when concurrent")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gateway.png"))
    args = ap.parse_args(argv)
    if args.quick:
        args.unary, args.messages, args.concurrency, args.per_stream = 200, 2000, 10, 200

    gen = Path(tempfile.mkdtemp(prefix="gwbench-"))
    generate(gen)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(gen), os.environ.get("PYTHONPATH", "")])}
    ports = {k: free_port() for k in ("grpc", "inprocess", "channel", "bare")}
    procs = []
    try:
        for kind in ("grpc", "inprocess", "bare", "channel"):
            cmd = [PY, str(HERE / "servers.py"), kind, str(ports[kind])]
            if kind == "channel":
                cmd.append(str(ports["grpc"]))
            cmd.append(str(gen))
            procs.append(subprocess.Popen(cmd, env=env, cwd=str(ROOT)))
            wait_port(ports[kind])

        async def measure() -> list[tuple[str, dict[str, float]]]:
            rows = []
            c1 = f"stream x1 ({args.messages} msgs) msg/s"
            cn = f"streams x{args.concurrency} ({args.per_stream} msgs) msg/s"
            for name, port in (
                ("bare starlette", ports["bare"]),
                ("gateway in-process", ports["inprocess"]),
                ("gateway channel", ports["channel"]),
            ):
                vals = {"unary p50 us": await unary_p50(port, args.unary) * 1e6}
                for kind in ("ndjson", "sse", "ws"):
                    vals[f"{kind} {c1}"] = await stream_rate(kind, port, args.messages, 1)
                    vals[f"{kind} {cn}"] = await stream_rate(kind, port, args.per_stream, args.concurrency)
                rows.append((name, vals))
            p50, rate1 = await grpc_measure(ports["grpc"], gen, args.unary, args.messages, 1)
            _, raten = await grpc_measure(ports["grpc"], gen, 10, args.per_stream, args.concurrency)
            grpc_vals = {"unary p50 us": p50 * 1e6}
            for kind in ("ndjson", "sse", "ws"):
                grpc_vals[f"{kind} {c1}"] = rate1
                grpc_vals[f"{kind} {cn}"] = raten
            rows.append(("direct gRPC", grpc_vals))
            return rows

        rows = asyncio.run(measure())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)

    base = dict(rows[0][1])
    metrics = list(base)
    width = max(len(m) for m in metrics) + 2
    print(f"\n{'':{width}}" + "".join(f"{name:>22}" for name, _ in rows))
    for m in metrics:
        line = f"{m:{width}}"
        for _, vals in rows:
            v = vals[m]
            ratio = v / base[m]
            line += f"{v:>12,.0f} ({ratio:4.2f}x)"
        print(line)
    print(
        "\nratios are to bare Starlette (unary: latency, lower is better; streams: msg/s, higher is better);"
        " direct gRPC stream rates are repeated per transport column."
    )
    chart(
        [
            (
                name,
                {
                    m: v
                    for m, v in vals.items()
                    if not (name == "direct gRPC" and not m.startswith(("unary", "ndjson")))
                },
            )
            for name, vals in rows
        ],
        Path(args.out),
    )
    print(f"chart: {args.out}")
    return {name: vals for name, vals in rows}


if __name__ == "__main__":
    main()
