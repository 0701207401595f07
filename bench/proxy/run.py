"""LLM API proxy overhead: streamed responses straight from an upstream vs through `typecase serve`'s proxy.

Three processes on this machine: the upstream (bench/proxy/upstream.py), a real `typecase serve` with the proxy
enabled and pointed at it, and this client (raw asyncio HTTP/1.1 on keep-alive connections, so the client's own
cost is small and the same for both paths). For 1 and for 200 concurrent clients it measures
  - time to first byte (first SSE event) and total time of a small stream (20 events of 100 bytes), and
  - throughput of large streams (16 KiB events),
direct and through the proxy, and prints them side by side with the added latency and the ratios, plus the proxy
process's CPU time per request. Target: p50 added time to first byte under 1 ms.

With 200 clients each sending its next request as soon as the last ended (a closed loop) the machine is saturated
on both paths, so "added latency" there is queueing: 200 requests in line, each costing the proxy's CPU on top of
the client's and the upstream's on the same 2 cores (no proxy that costs CPU can add < 1 ms there). The paced
run keeps the 200 connections but offers a fixed rate below saturation, which is what a latency target means.

With `--workers 1,2` it instead starts one `typecase serve --workers W` per W on shared stores (PostgreSQL, Redis,
a milvus-lite server: what --workers requires), all running at once, and measures them in interleaved rounds
(direct, 1 worker, 2 workers, direct, ...), so that each sees the same machine load over the run; it prints each
one's added TTFB p50 and small streams per second, and the ratio of each to the first W.

On 2 cores the Python client and upstream take CPU a second worker needs, so with --workers the load comes from `wrk`
(C, epoll; one thread, a Lua script sending the same POST) and the upstream is nginx (one worker process, `return 200`
with upstream.py's small SSE body) when both are installed (`apt-get install -y wrk nginx`; --client/--upstream
python forces the Python ones, which are also the fallback). Each round is then a warm-up, a saturating wrk run and
a paced one (wrk's delay() between requests: --paced-rate offered) per target, direct (wrk -> nginx) first; a
Python probe on its own connection measures time to first byte a few times a second meanwhile (wrk's own latency is
the whole request). Next to the ratios it prints each process's CPU from /proc (server workers, wrk, nginx, the
probe, and what other processes on the machine took) and requests per second of server CPU.

Run: .venv/bin/python bench/proxy/run.py [--quick] [--requests 1000] [--concurrency 1,200]
     .venv/bin/python bench/proxy/run.py --workers 1,2 --concurrency 200 [--rounds 3] [--seconds 5]
         [--client auto|python|wrk] [--upstream auto|python|nginx] [--paced-rate 300] [--probe-rate 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
KEY = "tc-bench-admin-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_tree(pid: int) -> float:
    """CPU time of a process and its children (a supervisor and its workers)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = cpu_seconds(pid)
    for child in found:
        try:
            total += cpu_seconds(int(child))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# -- a small HTTP/1.1 client ---------------------------------------------------------------------------------
class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass

    async def stream(self, events: int, event_bytes: int) -> tuple[float, float, int]:
        """POST /v1/messages and read the whole chunked response: (ttfb, total, body bytes)."""
        body = b'{"model":"bench","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
        request = (
            b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"anthropic-version: 2023-06-01\r\nx-api-key: sk-bench\r\n"
            + f"x-events: {events}\r\nx-event-bytes: {event_bytes}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reader = self.reader
        started = time.perf_counter()
        self.writer.write(request)
        status = await reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {status!r}")
        chunked, length = False, None
        while True:
            line = await reader.readline()
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"content-length":
                length = int(value)
        ttfb = None
        total_bytes = 0
        if chunked:
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                data = await reader.readexactly(size + 2)
                if ttfb is None:
                    ttfb = time.perf_counter() - started
                total_bytes += len(data) - 2
        else:
            data = await reader.readexactly(length or 0)
            ttfb = time.perf_counter() - started
            total_bytes = len(data)
        return ttfb, time.perf_counter() - started, total_bytes


@dataclass
class Result:
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    bytes: int = 0
    wall: float = 0.0
    requests: int = 0
    cpu: float = 0.0


async def run_load(
    port: int,
    clients: int,
    per_client: int,
    events: int,
    event_bytes: int,
    warmup: int = 5,
    cpu_pid: int | None = None,
    rate: float = 0.0,
) -> Result:
    """`warmup` rounds on every connection first, then the measured requests (and, with `cpu_pid`, that
    process's CPU time over the measured part only, in Result.cpu). With `rate`, requests start on a fixed
    schedule of `rate` per second spread over the clients (an open loop, below saturation) instead of each
    client sending its next request as soon as the last one ended."""
    connections = [Connection(port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in connections))
    try:
        await asyncio.gather(*(c.stream(events, event_bytes) for c in connections for _ in range(1)))
        for _ in range(max(0, warmup - 1)):
            await asyncio.gather(*(c.stream(events, event_bytes) for c in connections))
        result = Result()

        loop = asyncio.get_running_loop()
        begin = loop.time() + 0.05

        async def worker(conn: Connection, index: int) -> None:
            for k in range(per_client):
                if rate:
                    await asyncio.sleep(max(0.0, begin + (k * clients + index) / rate - loop.time()))
                ttfb, total, n = await conn.stream(events, event_bytes)
                result.ttfb.append(ttfb)
                result.total.append(total)
                result.bytes += n
                result.requests += 1

        cpu0 = cpu_seconds_tree(cpu_pid) if cpu_pid else 0.0
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, i) for i, c in enumerate(connections)))
        result.wall = time.perf_counter() - started
        result.cpu = cpu_seconds_tree(cpu_pid) - cpu0 if cpu_pid else 0.0
        return result
    finally:
        await asyncio.gather(*(c.close() for c in connections))


# -- processes -----------------------------------------------------------------------------------------------
def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


class Processes:
    """The upstream (upstream.py, or nginx with upstream="nginx": small streams only) and one `typecase serve`."""

    def __init__(self, upstream: str = "python") -> None:
        self.upstream_kind = upstream
        self.upstream_port = free_port()
        self.proxy_port = free_port()
        self.http_port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="typecase-proxy-bench-")
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        self.upstream_server = (NginxUpstream if self.upstream_kind == "nginx" else PythonUpstream)(self.upstream_port)
        self.upstream_server.__enter__()
        self.upstream = self.upstream_server.proc
        env = {
            **os.environ,
            "TYPECASE_DATA_DIR": self.tmp.name,
            "TYPECASE_GRPC_PORT": str(free_port()),
            "TYPECASE_HTTP_PORT": str(self.http_port),
            "TYPECASE_ADMIN_API_KEY": KEY,
            "TYPECASE_PROXY_ENABLED": "true",
            "TYPECASE_PROXY_PORT": str(self.proxy_port),
            "TYPECASE_PROXY_TARGET_BASE_URL": f"http://127.0.0.1:{self.upstream_port}",
            "TYPECASE_LLM_LOCAL_ENABLED": "false",
            "TYPECASE_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
        self.log = open(Path(self.tmp.name) / "server.log", "wb")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "typecase.server", "serve"],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(self.server)
        try:
            wait_port(self.upstream_port, self.upstream)
            deadline = time.monotonic() + 90
            while True:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "typecase serve did not become ready:\n"
                        + (Path(self.tmp.name) / "server.log").read_text(errors="replace")[-3000:]
                    )
                try:
                    if httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            wait_port(self.proxy_port, self.server)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.upstream_server.__exit__(None, None, None)
        self.log.close()
        self.tmp.cleanup()


# -- the benchmark -------------------------------------------------------------------------------------------
@dataclass
class Row:
    kind: str
    clients: int
    direct: Result
    proxy: Result
    proxy_cpu_us: float


async def measure(
    p: Processes, concurrency: list[int], requests: int, mib_per_client: float, paced_rate: float = 0.0
) -> list[Row]:
    rows = []
    for clients in concurrency:
        per_client = max(1, requests // clients)
        direct = await run_load(p.upstream_port, clients, per_client, 20, 100)
        proxy = await run_load(p.proxy_port, clients, per_client, 20, 100, cpu_pid=p.server.pid)
        rows.append(Row("ttfb", clients, direct, proxy, proxy.cpu / max(1, proxy.requests) * 1e6))
        if clients > 1 and paced_rate:
            direct = await run_load(p.upstream_port, clients, per_client, 20, 100, rate=paced_rate)
            proxy = await run_load(p.proxy_port, clients, per_client, 20, 100, cpu_pid=p.server.pid, rate=paced_rate)
            rows.append(Row("paced", clients, direct, proxy, proxy.cpu / max(1, proxy.requests) * 1e6))

        mib = mib_per_client if clients == 1 else mib_per_client / 16
        events = max(1, int(mib * 1024 * 1024 / 16384))
        big_per_client = 1 if clients > 1 else 5
        direct = await run_load(p.upstream_port, clients, big_per_client, events, 16384, warmup=1)
        proxy = await run_load(p.proxy_port, clients, big_per_client, events, 16384, warmup=1, cpu_pid=p.server.pid)
        rows.append(Row("throughput", clients, direct, proxy, proxy.cpu / max(1, proxy.requests) * 1e6))
    return rows


def report(rows: list[Row]) -> list[str]:
    ms = 1000
    lines = [
        "LLM API proxy: streamed responses, direct vs through the proxy (same machine, 2 cores shared by all)",
        f"{'':26}{'clients':>8}{'direct':>12}{'proxy':>12}{'added':>12}{'ratio':>8}   proxy CPU/req",
    ]
    for r in rows:
        if r.kind == "ttfb":
            for name, d, x in (
                ("time to first byte p50", pct(r.direct.ttfb, 50), pct(r.proxy.ttfb, 50)),
                ("time to first byte p95", pct(r.direct.ttfb, 95), pct(r.proxy.ttfb, 95)),
                ("stream total p50", pct(r.direct.total, 50), pct(r.proxy.total, 50)),
            ):
                lines.append(
                    f"{name:26}{r.clients:>8}{d * ms:>10.3f}ms{x * ms:>10.3f}ms{(x - d) * ms:>10.3f}ms"
                    f"{x / d:>7.2f}x" + (f"   {r.proxy_cpu_us:.0f} us" if name.endswith("byte p50") else "")
                )
            rps_d, rps_x = r.direct.requests / r.direct.wall, r.proxy.requests / r.proxy.wall
            lines.append(
                f"{'small streams per second':26}{r.clients:>8}{rps_d:>12.0f}{rps_x:>12.0f}{'':12}"
                f"{rps_x / rps_d:>7.2f}x"
            )
        elif r.kind == "paced":
            rate = r.proxy.requests / r.proxy.wall
            for name, q in (("  paced: TTFB p50", 50), ("  paced: TTFB p95", 95)):
                d, x = pct(r.direct.ttfb, q), pct(r.proxy.ttfb, q)
                lines.append(
                    f"{name:26}{r.clients:>8}{d * ms:>10.3f}ms{x * ms:>10.3f}ms{(x - d) * ms:>10.3f}ms"
                    f"{x / d:>7.2f}x"
                    + (
                        f"   {r.proxy_cpu_us:.0f} us  ({rate:.0f} requests/s offered to both, below saturation)"
                        if q == 50
                        else ""
                    )
                )
        else:
            d = r.direct.bytes / r.direct.wall / 2**20
            x = r.proxy.bytes / r.proxy.wall / 2**20
            lines.append(
                f"{'throughput MiB/s':26}{r.clients:>8}{d:>12.0f}{x:>12.0f}{'':12}{x / d:>7.2f}x"
                f"   {r.proxy_cpu_us:.0f} us"
            )
    one = next((r for r in rows if r.kind == "ttfb" and r.clients == 1), None)
    if one is not None:
        added = (pct(one.proxy.ttfb, 50) - pct(one.direct.ttfb, 50)) * ms
        lines.append(
            f"p50 added time to first byte, 1 client: {added:.3f} ms (target < 1 ms): "
            + ("met" if added < 1 else "NOT met")
        )
    return lines


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a reduced run (a few seconds)")
    parser.add_argument("--requests", type=int, default=2000, help="small streams per client count")
    parser.add_argument("--concurrency", default="1,200")
    parser.add_argument(
        "--paced-rate", type=float, default=300.0, help="requests/s of the open-loop run with many clients (0: skip it)"
    )
    parser.add_argument(
        "--mib", type=float, default=4.0, help="MiB per large stream for 1 client (concurrent clients get 1/16 each)"
    )
    parser.add_argument(
        "--workers", default="", help="e.g. 1,2: compare `serve --workers W` servers on shared stores, interleaved"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds with --workers")
    parser.add_argument(
        "--client",
        choices=("auto", "python", "wrk"),
        default="auto",
        help="load generator with --workers (auto: wrk when installed, else this script's Python client)",
    )
    parser.add_argument(
        "--upstream",
        choices=("auto", "python", "nginx"),
        default="auto",
        help="upstream with --workers (auto: nginx when installed, else bench/proxy/upstream.py)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--probe-rate", type=float, default=5.0, help="requests/s of the TTFB probe during wrk runs")
    args = parser.parse_args(argv)
    if args.workers:
        return workers_main(args)
    if args.quick:
        args.requests, args.mib = 400, 1.0
    concurrency = [int(c) for c in args.concurrency.split(",")]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with Processes() as processes:
        rows = asyncio.run(measure(processes, concurrency, args.requests, args.mib, args.paced_rate))
    for line in report(rows):
        print(line)
    return rows


# -- several workers ---------------------------------------------------------------------------------------------
class SharedStores:
    """What `serve --workers N` needs: a PostgreSQL database of its own, a Redis database (flushed), a milvus-lite
    server. PostgreSQL and Redis are the machine's (TYPECASE_TEST_PG_DSN, TYPECASE_TEST_REDIS_URL)."""

    PG = os.environ.get("TYPECASE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    REDIS = os.environ.get("TYPECASE_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/12"

    def __init__(self, tmp: Path):
        self.name = f"tc_proxy_bench_{os.getpid()}"
        self.milvus_port = free_port()
        self.tmp = tmp

    def _pg(self, sql: str) -> None:
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.PG, timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(run())

    def __enter__(self) -> SharedStores:
        import redis

        redis.Redis.from_url(self.REDIS).flushdb()
        self._pg(f'CREATE DATABASE "{self.name}"')
        self.milvus = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(self.tmp / "milvus"),
                "--port",
                str(self.milvus_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.milvus_port, self.milvus)
        return self

    def env(self) -> dict[str, str]:
        host = self.PG.split("://", 1)[1].rsplit("/", 1)[0]
        return {
            "TYPECASE_DATABASE_URL": f"postgresql+asyncpg://{host}/{self.name}",
            "TYPECASE_REDIS_URL": self.REDIS,
            "TYPECASE_MILVUS_URI": f"http://127.0.0.1:{self.milvus_port}",
        }

    def __exit__(self, *exc) -> None:
        import redis

        self.milvus.send_signal(signal.SIGTERM)
        try:
            self.milvus.wait(15)
        except subprocess.TimeoutExpired:
            self.milvus.kill()
        redis.Redis.from_url(self.REDIS).flushdb()
        self._pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@dataclass
class Server:
    workers: int
    proxy_port: int
    http_port: int
    proc: subprocess.Popen


def start_servers(tmp: Path, stores: SharedStores, upstream_port: int, counts: list[int]) -> list[Server]:
    servers = []
    for i, count in enumerate(counts):
        server = Server(count, free_port(), free_port(), None)
        data = tmp / f"server-{i}"
        env = {
            **os.environ,
            **stores.env(),
            "TYPECASE_DATA_DIR": str(data),
            "TYPECASE_GRPC_PORT": str(free_port()),
            "TYPECASE_HTTP_PORT": str(server.http_port),
            "TYPECASE_ADMIN_API_KEY": KEY,
            "TYPECASE_PROXY_ENABLED": "true",
            "TYPECASE_PROXY_PORT": str(server.proxy_port),
            "TYPECASE_PROXY_TARGET_BASE_URL": f"http://127.0.0.1:{upstream_port}",
            "TYPECASE_LLM_LOCAL_ENABLED": "false",
            "TYPECASE_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
        data.mkdir(parents=True)
        log = open(data.with_suffix(".log"), "wb")
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "typecase.server", "serve", "--workers", str(count)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        servers.append(server)
        deadline = time.monotonic() + 180
        while True:  # one at a time: the first migrates the schema
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"serve --workers {count} did not become ready:\n"
                    + data.with_suffix(".log").read_text(errors="replace")[-3000:]
                )
            try:
                if httpx.get(f"http://127.0.0.1:{server.http_port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        wait_port(server.proxy_port, server.proc)
        if count > 1:  # the others start once the first is ready; wait until every worker serves
            deadline = time.monotonic() + 120
            while (
                len(
                    subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
                )
                < count
                and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            time.sleep(5)  # their imports and start
    return servers


def stop_servers(servers: list[Server]) -> None:
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()


async def measure_workers(
    upstream_port: int, servers: list[Server], clients: int, requests: int, rounds: int
) -> dict[str, Result]:
    """Interleaved rounds: direct, then each server, `rounds` times; samples pooled per target."""
    per_client = max(1, requests // clients)
    pooled: dict[str, Result] = {}
    targets = [("direct", upstream_port, None)] + [
        (f"{s.workers} worker(s)", s.proxy_port, s.proc.pid) for s in servers
    ]
    for _ in range(rounds):
        for name, port, pid in targets:
            r = await run_load(port, clients, per_client, 20, 100, cpu_pid=pid)
            into = pooled.setdefault(name, Result())
            into.ttfb += r.ttfb
            into.total += r.total
            into.requests += r.requests
            into.wall += r.wall
            into.cpu += r.cpu
    return pooled


def workers_report(clients: int, pooled: dict[str, Result]) -> list[str]:
    direct = pooled["direct"]
    d50 = pct(direct.ttfb, 50)
    lines = [
        f"LLM API proxy with several workers: {clients} clients, interleaved rounds, samples pooled "
        f"(same machine, {os.cpu_count()} cores shared by client, upstream and servers)",
        f"{'':14}{'TTFB p50':>10}{'added':>10}{'TTFB p95':>10}{'streams/s':>11}{'vs first':>10}{'CPU/req':>10}",
    ]
    first_rps = None
    for name, r in pooled.items():
        rps = r.requests / r.wall
        first_rps = first_rps or (rps if name != "direct" else None)
        added = "" if name == "direct" else f"{(pct(r.ttfb, 50) - d50) * 1000:>8.2f}ms"
        ratio = "" if name == "direct" else f"{rps / first_rps:>9.2f}x"
        cpu = "" if name == "direct" else f"{r.cpu / max(1, r.requests) * 1e6:>8.0f}us"
        lines.append(
            f"{name:14}{pct(r.ttfb, 50) * 1000:>8.2f}ms{added:>10}{pct(r.ttfb, 95) * 1000:>8.2f}ms"
            f"{rps:>11.0f}{ratio:>10}{cpu:>10}"
        )
    return lines


def workers_main(args) -> dict:
    counts = [int(c) for c in args.workers.split(",")]
    clients = int(args.concurrency.split(",")[-1]) if args.concurrency != "1,200" else 200
    client = args.client if args.client != "auto" else ("wrk" if have_wrk() else "python")
    upstream_kind = args.upstream if args.upstream != "auto" else ("nginx" if have_nginx() else "python")
    if client == "wrk" and not have_wrk() or upstream_kind == "nginx" and not have_nginx():
        raise SystemExit("--client wrk needs `wrk`, --upstream nginx needs `nginx` (apt-get install -y wrk nginx)")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(f"client {client}, upstream {upstream_kind}; start: {uptime()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="typecase-proxy-workers-") as tmp_name:
        tmp = Path(tmp_name)
        upstream_cls = NginxUpstream if upstream_kind == "nginx" else PythonUpstream
        with upstream_cls(free_port()) as upstream, SharedStores(tmp) as stores:
            servers = start_servers(tmp, stores, upstream.port, counts)
            try:
                if client == "wrk":
                    targets = [(f"{s.workers} worker(s)", s.proxy_port, s.proc.pid) for s in servers]
                    pooled = asyncio.run(
                        measure_wrk(
                            upstream,
                            targets,
                            clients,
                            args.seconds,
                            args.rounds,
                            args.paced_rate,
                            args.probe_rate,
                            also={"milvus-lite": stores.milvus.pid},
                        )
                    )
                else:
                    pooled = asyncio.run(measure_workers(upstream.port, servers, clients, args.requests, args.rounds))
            finally:
                stop_servers(servers)
    lines = wrk_report(clients, pooled, upstream_kind) if client == "wrk" else workers_report(clients, pooled)
    for line in lines:
        print(line)
    print(f"end: {uptime()}")
    return pooled


# -- wrk load and an nginx upstream ------------------------------------------------------------------------------
# On 2 cores the Python client and the uvicorn upstream take CPU the proxy's second worker needs; wrk (C, epoll) and
# nginx (one worker process) do the same job for a small fraction of it, so the bench measures the proxy.
SMALL_EVENT = b"event: content_block_delta\ndata: " + b"x" * 60 + b"\n\n"  # upstream.py's default event
SMALL_BODY = SMALL_EVENT * 20
REQUEST_BODY = '{"model":"bench","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}'


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def have_nginx() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


class NginxUpstream:
    """nginx on loopback as a non-daemon child with its own prefix and conf: one worker process, no access log,
    `return 200` with upstream.py's small SSE body (20 events of 100 bytes) for POST /v1/messages; stopped by pid.
    It ignores x-events/x-event-bytes: small streams only."""

    def __init__(self, port: int):
        self.port = port
        self.tmp = tempfile.TemporaryDirectory(prefix="typecase-bench-nginx-")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> NginxUpstream:
        prefix = Path(self.tmp.name)
        os.chmod(prefix, 0o755)
        escaped = SMALL_BODY.decode().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        temp = "\n".join(
            f"  {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    location / {{
      default_type text/event-stream;
      add_header cache-control no-cache;
      return 200 "{escaped}";
    }}
  }}
}}
"""
        (prefix / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: the master stops its worker
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.tmp.cleanup()


class PythonUpstream:
    def __init__(self, port: int):
        self.port = port

    def __enter__(self) -> PythonUpstream:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("upstream.py")), str(self.port)])
        wait_port(self.port, self.proc)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wrk_script(delay_ms: float = 0.0) -> str:
    """The same POST as Connection.stream (headers and body); `delay_ms` pauses each connection between requests
    (an offered rate below saturation); done() prints the numbers as one line of JSON."""
    headers = {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-bench",
        "x-events": "20",
        "x-event-bytes": "100",
    }
    lines = ['wrk.method = "POST"', f"wrk.body = '{REQUEST_BODY}'"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if delay_ms:  # uniform in [0, 2 x mean]: connections that start together do not stay in step (bursts)
        lines.append("math.randomseed(os.time())")
        lines.append(f"function delay() return math.random() * {2 * delay_ms:.1f} end")
    lines.append(
        """function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'TCWRK {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"errors": %d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end"""
    )
    return "\n".join(lines) + "\n"


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(c) for c in children]


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


@dataclass
class WrkRun:
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    p50: list[float] = field(default_factory=list)  # wrk's whole-request latency p50 of each round
    p99: list[float] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)  # TTFB of the sparse Python probe's requests
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by role over the measured windows
    rps: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # cores used by processes not ours, each round


async def wrk_once(
    port: int,
    clients: int,
    seconds: float,
    pids: dict[str, int],
    delay_ms: float = 0.0,
    probe_rate: float = 0.0,
    into: WrkRun | None = None,
) -> WrkRun:
    """One wrk run (one thread, `clients` connections) against 127.0.0.1:port, with, when probe_rate, a sparse
    Python probe on its own connection measuring time to first byte meanwhile, and the CPU time of each process
    in `pids` (role -> pid, with its children), of wrk, of this process (the probe) and of the whole machine."""
    into = into or WrkRun()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(wrk_script(delay_ms))
        script = f.name
    trees = {role: process_tree(pid) for role, pid in pids.items()}
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    window: dict[str, object] = {}

    def run_wrk() -> tuple[str, float]:
        window["cpu0"] = {role: cpu_of(tree) for role, tree in trees.items()}
        window["machine0"] = machine_busy()
        window["self0"] = cpu_seconds(os.getpid())
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{clients}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                script,
                f"http://127.0.0.1:{port}/v1/messages",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        window["cpu1"] = {role: cpu_of(tree) for role, tree in trees.items()}
        window["machine1"] = machine_busy()
        window["self1"] = cpu_seconds(os.getpid())
        loop.call_soon_threadsafe(done.set)
        return out, usage.ru_utime + usage.ru_stime, wall

    async def probe() -> list[float]:
        samples: list[float] = []
        if not probe_rate:
            return samples
        await asyncio.sleep(min(1.0, seconds / 4))  # past wrk's connection ramp
        conn = Connection(port)
        await conn.open()
        try:
            while not done.is_set():
                ttfb, _, _ = await conn.stream(20, 100)
                samples.append(ttfb)  # sent during the load, even if its answer came after wrk's end
                try:
                    await asyncio.wait_for(done.wait(), 1 / probe_rate)
                except TimeoutError:
                    pass
        finally:
            await conn.close()
        return samples

    try:
        (out, wrk_cpu, wall), samples = await asyncio.gather(loop.run_in_executor(None, run_wrk), probe())
    finally:
        os.unlink(script)
    line = next((x for x in out.splitlines() if x.startswith("TCWRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    import json

    numbers = json.loads(line[6:])
    into.requests += numbers["requests"]
    into.seconds += numbers["duration_us"] / 1e6
    into.errors += numbers["errors"]
    into.p50.append(numbers["p50_us"] / 1e6)
    into.p99.append(numbers["p99_us"] / 1e6)
    into.rps.append(numbers["requests"] / (numbers["duration_us"] / 1e6))
    into.probe += samples
    cpu0, cpu1 = window["cpu0"], window["cpu1"]
    ours = 0.0
    for role, tree in trees.items():
        for pid in tree:
            if pid in cpu0[role] and pid in cpu1[role]:
                used = cpu1[role][pid] - cpu0[role][pid]
                key = role if pid == pids[role] else f"{role} child {tree.index(pid)}"
                into.cpu[key] = into.cpu.get(key, 0.0) + used
                ours += used
    into.cpu["wrk"] = into.cpu.get("wrk", 0.0) + wrk_cpu
    probe_cpu = window["self1"] - window["self0"]
    into.cpu["probe (bench process)"] = into.cpu.get("probe (bench process)", 0.0) + probe_cpu
    busy = window["machine1"][0] - window["machine0"][0]
    total = window["machine1"][1] - window["machine0"][1]
    others = max(0.0, busy - ours - wrk_cpu - probe_cpu)
    into.cpu["other processes"] = into.cpu.get("other processes", 0.0) + others
    into.others.append(others / wall)
    into.cpu["idle"] = into.cpu.get("idle", 0.0) + max(0.0, total - busy)
    into.cpu["_wall"] = into.cpu.get("_wall", 0.0) + wall
    return into


async def measure_wrk(
    upstream: NginxUpstream | PythonUpstream,
    targets: list[tuple[str, int, int]],
    clients: int,
    seconds: float,
    rounds: int,
    paced_rate: float = 0.0,
    probe_rate: float = 5.0,
    also: dict[str, int] | None = None,
) -> dict[str, dict[str, WrkRun]]:
    """Interleaved rounds over direct (wrk -> upstream) and each (name, port, server pid) target: a short warm-up,
    then a saturating run (closed loop) and, with paced_rate, a run offering that many requests/s over the same
    `clients` connections (wrk's delay() between requests). `also`: more processes to show the CPU of (role -> pid)."""
    everything = [("direct", upstream.port, None)] + targets
    results: dict[str, dict[str, WrkRun]] = {"saturated": {}, "paced": {}}
    delay_ms = clients / paced_rate * 1000 if paced_rate else 0.0
    for _ in range(rounds):
        for name, port, pid in everything:
            pids = {"upstream": upstream.pid} | (also or {}) | ({"server": pid} if pid else {})
            await wrk_once(port, clients, 1, {})  # warm-up: connections to the upstream, caches
            await wrk_once(
                port,
                clients,
                seconds,
                pids,
                probe_rate=probe_rate,
                into=results["saturated"].setdefault(name, WrkRun()),
            )
            if paced_rate:
                await wrk_once(
                    port,
                    clients,
                    seconds,
                    pids,
                    delay_ms=delay_ms,
                    probe_rate=probe_rate,
                    into=results["paced"].setdefault(name, WrkRun()),
                )
    return results


def wrk_report(clients: int, results: dict[str, dict[str, WrkRun]], upstream_kind: str) -> list[str]:
    ms = 1000
    lines = [
        f"LLM API proxy, load from wrk (1 thread, {clients} connections), upstream {upstream_kind}; interleaved rounds, "
        f"{os.cpu_count()} cores shared by everything listed; load at start/end: see uptime lines",
        "  wrk p50/p99: whole request (a 2 KB response: close to its first byte); probe TTFB: a Python client on its "
        "own connection, a few requests/s during the load, time to the first SSE event",
    ]
    for mode, runs in results.items():
        if not runs:
            continue
        direct = runs["direct"]
        d_p50 = statistics.median(direct.p50)
        d_probe = pct(direct.probe, 50)
        title = (
            "saturated (closed loop: each connection sends its next request when the last ended)"
            if mode == "saturated"
            else f"paced ({clients} connections, each pausing between requests; offered load below)"
        )
        lines.append(f"-- {title}")
        lines.append(
            f"{'':12}{'req/s':>8}{'vs first':>9}{'wrk p50':>10}{'added':>9}{'wrk p99':>10}"
            f"{'probe p50':>11}{'added':>9}{'n':>5}{'errors':>7}   each round: req/s (cores other processes used)"
        )
        first = None
        for name, r in runs.items():
            rps = r.requests / r.seconds
            if name != "direct" and first is None:
                first = rps
            p50 = statistics.median(r.p50)
            probe50 = pct(r.probe, 50)
            is_direct = name == "direct"
            lines.append(
                f"{name:12}{rps:>8.0f}{'' if is_direct else f'{rps / first:.2f}x':>9}{p50 * ms:>8.2f}ms"
                f"{'' if is_direct else f'{(p50 - d_p50) * ms:.2f}ms':>9}{statistics.median(r.p99) * ms:>8.2f}ms"
                f"{probe50 * ms:>9.2f}ms{'' if is_direct else f'{(probe50 - d_probe) * ms:.2f}ms':>9}"
                f"{len(r.probe):>5}{r.errors:>7}   "
                + " ".join(f"{x:.0f} ({o:.2f})" for x, o in zip(r.rps, r.others, strict=True))
            )
        lines.append("   CPU, in cores (1.00 = one core busy the whole run), over the measured windows:")
        for name, r in runs.items():
            wall = r.cpu.get("_wall", 1.0)
            parts = [
                f"{role} {used / wall:.2f}"
                for role, used in r.cpu.items()
                if role != "_wall" and (used / wall >= 0.005 or role in ("idle", "other processes"))
            ]
            lines.append(f"   {name:12}" + ", ".join(parts))
        if mode == "saturated":
            per_core = {}
            for name, r in runs.items():
                server = sum(used for role, used in r.cpu.items() if role.startswith("server"))
                if name != "direct" and server:
                    per_core[name] = (r.requests / r.seconds, server / r.cpu["_wall"], r.requests / server)
            if per_core:
                first_per_core = next(iter(per_core.values()))[2]
                lines.append(
                    "   requests per second of server CPU (the proxy's own scaling, whatever cores other processes "
                    "took):"
                )
                for name, (_rps, cores, per) in per_core.items():
                    lines.append(
                        f"   {name:12}{per:>7.0f} req/s per core ({per / first_per_core:.2f}x the first), "
                        f"on {cores:.2f} cores here"
                    )
    return lines


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
