"""The production topology on loopback: two `typecase serve` replicas and one `typecase worker` sharing PostgreSQL,
a Redis server of their own, an S3 server (moto), a Milvus server (milvus-lite run as a gRPC server) and a fake
OpenAI-compatible upstream, behind a round-robin TCP front. Used by tests/cluster and bench/load.

Every process and port here is the rig's own, so fault tests can kill and restart them without touching the
machine's shared services (the PostgreSQL server is shared; the rig gets its own database in it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from tests.chat.fake_upstream import FakeUpstream
from tests.conftest import ADMIN_KEY, ServerProcess, _pg_admin, free_port

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `check`; fail when `proc` exits first (with the end of its output from `log_path`) or on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            output = log_path.read_text(errors="replace")[-4000:] if log_path is not None else ""
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{output}")
        with contextlib.suppress(OSError, httpx.HTTPError):
            if check():
                return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not ready within {timeout}s")


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


class Process:
    """A child process with its output in a log file, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if not self.alive:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RedisServer(Process):
    """A Redis server of the rig's own (so a test may restart it), on the same port across restarts."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        super().__init__(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(log_dir),
            ],
            log_dir,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        wait_for(lambda: port_open(self.port), 60, "redis", self.proc)
        return self


class MilvusServer(Process):
    def __init__(self, log_dir: Path):
        self.port = free_port()
        super().__init__(
            "milvus",
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(log_dir / "milvus"),
                "--port",
                str(self.port),
            ],
            log_dir,
        )

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusServer:
        super().start()
        # An open port is not a Milvus that answers (CI saw replicas fail to connect right after it opened):
        # ready means a real call went through.
        wait_for(self.answers, 120, "milvus", self.proc, self.log_path)
        return self

    def answers(self) -> bool:
        from pymilvus import MilvusClient

        if not port_open(self.port):
            return False
        try:
            # dedicated: pymilvus otherwise keeps one shared channel per URI in this process, which sits idle
            # sending keepalive pings until the server answers GOAWAY too_many_pings, and a later client here fails.
            client = MilvusClient(uri=self.uri, timeout=3, dedicated=True)
            client.list_collections()
            client.close()
            return True
        except Exception:  # pymilvus raises MilvusException while the server is still starting
            return False


class LoopThread:
    """An asyncio loop in a daemon thread, for the in-process servers (fake upstream, front)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Front:
    """A round-robin TCP front (what an L4 load balancer does): each new connection goes to the next backend that
    accepts it, so a dead replica is skipped. Counts connections per backend."""

    def __init__(self, backends: list[int]):
        self.backends = backends
        self.port = 0
        self.connections: dict[int, int] = dict.fromkeys(backends, 0)
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None

    async def start(self) -> Front:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        start = next(self._turn)
        for i in range(len(self.backends)):
            port = self.backends[(start + i) % len(self.backends)]
            try:
                streams = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.connections[port] += 1
            return streams
        raise ConnectionRefusedError("no backend accepts connections")

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._connect()
        except OSError:
            client_writer.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


class Cluster:
    """Start with `Cluster(tmp_dir).start()`; `stop()` ends every process and drops the database."""

    def __init__(self, base_dir: Path, replicas: int = 2, env: dict[str, str] | None = None):
        self.dir = base_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.database = f"tc_cluster_{uuid.uuid4().hex[:10]}"
        self.redis = RedisServer(self.dir)
        self.milvus = MilvusServer(self.dir)
        self.loop = LoopThread()
        self.upstream = FakeUpstream()
        self.s3 = None
        self.extra_env = env or {}
        self.replicas: list[ServerProcess] = []
        self.replica_count = replicas
        self.worker: Process | None = None
        self.front: Front | None = None

    @property
    def url(self) -> str:
        """The front's HTTP address (round-robin over the replicas)."""
        return f"http://127.0.0.1:{self.front.port}"

    def replica_url(self, index: int) -> str:
        return self.replicas[index].http_url

    def env(self) -> dict[str, str]:
        s3_host, s3_port = self.s3.get_host_and_port()
        return {
            "TYPECASE_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.database}",
            "TYPECASE_REDIS_URL": self.redis.url,
            "TYPECASE_S3_ENDPOINT": f"http://{s3_host}:{s3_port}",
            "TYPECASE_S3_ACCESS_KEY": "cluster",
            "TYPECASE_S3_SECRET_KEY": "cluster-secret",
            "TYPECASE_S3_BUCKET": "typecase-cluster",
            "TYPECASE_S3_REGION": "us-east-1",
            "TYPECASE_MILVUS_URI": self.milvus.uri,
            "TYPECASE_WORKERS": "1",  # each replica one process: the faults below kill replicas by pid
            "TYPECASE_SECRET_KEY": self.secret_key,
            "TYPECASE_ADMIN_API_KEY": ADMIN_KEY,
            "TYPECASE_LLM_LOCAL_ENABLED": "false",
            "TYPECASE_KNOWLEDGE_WORKER_IN_PROCESS": "false",
            "TYPECASE_SHUTDOWN_GRACE_SECONDS": "2",
            "TYPECASE_JOBS_SHUTDOWN_GRACE_SECONDS": "1",
            # Short leases so that a dead replica's or worker's work is noticed within seconds.
            "TYPECASE_CHAT_TURN_LEASE_SECONDS": "2",
            "TYPECASE_CHAT_REAP_INTERVAL_SECONDS": "0.5",
            "TYPECASE_JOBS_LEASE_SECONDS": "3",
            "TYPECASE_JOBS_POLL_SECONDS": "0.5",
            "TYPECASE_FLOW_LEASE_SECONDS": "2",
            "TYPECASE_CHAT_FOLLOW_POLL_SECONDS": "0.3",
            "HF_HUB_OFFLINE": "1",
            **self.extra_env,
        }

    def start(self) -> Cluster:
        from moto.server import ThreadedMotoServer

        self.secret_key = Fernet.generate_key().decode()
        _pg_admin(f'CREATE DATABASE "{self.database}"')
        self.redis.start()
        self.milvus.start()
        self.s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.s3.start()
        self.loop.run(self.upstream.start())
        env = self.env()
        for i in range(self.replica_count):
            replica = ServerProcess(self._dir(f"replica{i}"), env, f"replica{i}")
            self.replicas.append(replica.start())
            if i == 0:  # the first one migrates the fresh database; the others start on a migrated schema
                replica.wait_ready()
        for replica in self.replicas[1:]:
            replica.wait_ready()
        self.worker = self._worker_process().start()
        self.front = self.loop.run(Front([r.http_port for r in self.replicas]).start())
        return self

    def _dir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir(exist_ok=True)
        return path

    def _worker_process(self, extra_env: dict[str, str] | None = None) -> Process:
        env = {**os.environ, **self.env(), "TYPECASE_DATA_DIR": str(self._dir("worker")), **(extra_env or {})}
        return Process("worker", [sys.executable, "-m", "typecase.server", "worker"], self.dir, env)

    def restart_worker(self, extra_env: dict[str, str] | None = None) -> None:
        """SIGKILL the worker (if alive) and start a new one, with `extra_env` on top of the rig's."""
        self.worker.stop(signal.SIGKILL)
        self.worker = self._worker_process(extra_env).start()

    def restart_replica(self, index: int) -> ServerProcess:
        """Start a stopped (or killed) replica again on the same ports."""
        old = self.replicas[index]
        old.stop(signal.SIGKILL)
        replica = ServerProcess(old.log_path.parent, old.env, old.log_path.stem)
        replica.grpc_port, replica.http_port = old.grpc_port, old.http_port
        replica.log_path = old.log_path.with_name(f"{old.log_path.stem}-restarted.log")
        self.replicas[index] = replica.start()
        replica.wait_ready()
        return replica

    def logs(self) -> str:
        parts = [f"--- {r.log_path.name}\n{r.output()[-4000:]}" for r in self.replicas]
        if self.worker:
            parts.append(f"--- worker\n{self.worker.output()[-4000:]}")
        parts.append(f"--- milvus\n{self.milvus.output()[-2000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.stop(signal.SIGTERM, timeout=15)
        if self.worker:
            self.worker.stop(signal.SIGTERM, timeout=15)
        with contextlib.suppress(Exception):
            if self.front:
                self.loop.run(self.front.stop())
            self.loop.run(self.upstream.stop())
        self.loop.close()
        if self.s3:
            self.s3.stop()
        self.milvus.stop()
        self.redis.stop()
        _pg_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
