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

Run: .venv/bin/python bench/proxy/run.py [--quick] [--requests 1000] [--concurrency 1,200]
     .venv/bin/python bench/proxy/run.py --workers 1,2 --concurrency 200 [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    def __init__(self) -> None:
        self.upstream_port = free_port()
        self.proxy_port = free_port()
        self.http_port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="typecase-proxy-bench-")
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        self.upstream = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("upstream.py")), str(self.upstream_port)]
        )
        self.procs.append(self.upstream)
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


def workers_main(args) -> dict[str, Result]:
    counts = [int(c) for c in args.workers.split(",")]
    clients = int(args.concurrency.split(",")[-1]) if args.concurrency != "1,200" else 200
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="typecase-proxy-workers-") as tmp_name:
        tmp = Path(tmp_name)
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, str(Path(__file__).with_name("upstream.py")), str(upstream_port)])
        try:
            wait_port(upstream_port, upstream)
            with SharedStores(tmp) as stores:
                servers = start_servers(tmp, stores, upstream_port, counts)
                try:
                    pooled = asyncio.run(measure_workers(upstream_port, servers, clients, args.requests, args.rounds))
                finally:
                    stop_servers(servers)
        finally:
            upstream.send_signal(signal.SIGTERM)
            upstream.wait(15)
    for line in workers_report(clients, pooled):
        print(line)
    return pooled


if __name__ == "__main__":
    main()
