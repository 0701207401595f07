"""`typecase serve --workers N`: N server processes on the same ports, supervised.

One Python process serves on one core. With several, each worker opens the gRPC, HTTP and proxy listeners with
SO_REUSEPORT (on purpose, and only here: a lone server never shares a port) and the kernel spreads new connections
across them. The supervisor itself serves nothing:
- it checks the ports once, then starts the first worker alone (a first start migrates the schema and creates the
  admin key) and the others once that one answers /readyz;
- a worker that exits on its own is logged and restarted, after a pause that doubles while it keeps failing;
- SIGTERM or SIGINT goes to every worker, which drain together (each within shutdown_grace_seconds); any still
  running after the grace and a margin is killed;
- with the built-in local models enabled, it first starts one model host (`typecase model-host`, restarted like a
  worker) that runs them for every worker over a Unix socket (server/llm/modelhost.py): one instance of each model
  per machine, not one per worker; it stops after the workers, which may still be finishing generations;
- Prometheus metrics are shared with prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR under the
  data dir, emptied at start): any worker answers /metrics with every worker's counters and histograms summed.

Several workers need what one process keeps to itself to live in shared stores (`shared_store_problems`):
Redis (bus, caches, event logs, limits), a database server (SQLite takes one writer at a time) and a Milvus server
(the embedded vector stores are opened by one process). Embedded mode is refused with the settings to set.
Written by hand because the usual supervisors (gunicorn, uvicorn --workers) run one ASGI app per process, while a
Typecase process is a gRPC server, an HTTP server and a proxy listener sharing one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
from prometheus_client import multiprocess

from typecase.server.config import Settings

log = logging.getLogger("typecase.supervisor")

READY_TIMEOUT_SECONDS = 300.0  # a first start may load models and migrate a large schema
STOP_MARGIN_SECONDS = 10.0
MAX_RESTART_DELAY_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0  # a worker up this long has its restart delay reset


def default_workers(settings: Settings) -> int:
    if settings.workers is not None:
        return settings.workers
    return 1 if shared_store_problems(settings) else (os.cpu_count() or 1)


def shared_store_problems(settings: Settings) -> list[str]:
    problems = []
    if not settings.redis_url:
        problems.append("TYPECASE_REDIS_URL (the bus, caches, event logs and limits each worker must share)")
    database = settings.secret("database_url") or ""
    if not database or database.startswith("sqlite"):
        problems.append("TYPECASE_DATABASE_URL on PostgreSQL or MySQL (SQLite takes one writer process)")
    if not settings.milvus_uri or "://" not in settings.milvus_uri:
        problems.append("TYPECASE_MILVUS_URI of a Milvus server (the embedded vector store is opened by one process)")
    ports = [("TYPECASE_GRPC_PORT", settings.grpc_port), ("TYPECASE_HTTP_PORT", settings.http_port)]
    if settings.proxy_enabled:
        ports.append(("TYPECASE_PROXY_PORT", settings.proxy_port))
    problems += [f"{name} other than 0 (workers share one fixed port)" for name, port in ports if not port]
    return problems


class Worker:
    def __init__(self, index: int, command: str = "serve", env: dict[str, str] | None = None):
        self.index = index
        self.command = command
        self.name = f"worker {index}" if command == "serve" else command
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restart_delay = 1.0

    @property
    def process(self) -> asyncio.subprocess.Process:
        """The process of the last start()."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.proc

    async def start(self, metrics_dir: Path) -> None:
        env = {
            **os.environ,
            "TYPECASE_WORKERS": "1",
            "TYPECASE_REUSE_PORT": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            **self.env,
        }
        argv = [sys.executable, "-m", "typecase.server", self.command]
        self.proc = await asyncio.create_subprocess_exec(*argv, env=env)
        self.started_at = time.monotonic()
        log.info("%s started (pid %d)", self.name, self.proc.pid)


class Supervisor:
    def __init__(self, settings: Settings, count: int):
        self.settings = settings
        self.stopping = asyncio.Event()
        self.metrics_dir = settings.data_dir / "metrics"
        self.model_host: Worker | None = None
        self.socket = Path()
        env = {}
        if settings.llm_local_enabled:
            from typecase.server.llm.modelhost import socket_path  # not before the CLI checks the ports

            self.socket = socket_path(settings.data_dir)
            env = {"TYPECASE_LLM_LOCAL_HOST_SOCKET": str(self.socket)}
            self.model_host = Worker(-1, "model-host", env)
        self.workers = [Worker(i, env=env) for i in range(count)]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # counters of an earlier run are not this run's
        self.metrics_dir.mkdir(parents=True, mode=0o700)
        supervised = list(self.workers)
        if self.model_host is not None:
            self.socket.unlink(missing_ok=True)
            await self.model_host.start(self.metrics_dir)
            if not await self._socket_ready(self.model_host):
                await self._stop_all()
                return 1
            supervised.append(self.model_host)
        first, *others = self.workers
        await first.start(self.metrics_dir)
        if not await self._ready(first):
            await self._stop_all()
            return 1
        for worker in others:
            await worker.start(self.metrics_dir)
        watchers = [asyncio.create_task(self._watch(worker)) for worker in supervised]
        await self.stopping.wait()
        await self._stop_all()
        for watcher in watchers:
            watcher.cancel()
        return 0

    async def _ready(self, worker: Worker) -> bool:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "") else self.settings.host
        url = f"http://{host}:{self.settings.http_port}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline and not self.stopping.is_set():
                if worker.process.returncode is not None:
                    log.error("%s exited with %s before it was ready", worker.name, worker.process.returncode)
                    return False
                try:
                    if (await http.get(url)).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        return False

    async def _socket_ready(self, host: Worker) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.stopping.is_set():
            if host.process.returncode is not None:
                log.error("the model host exited with %s before it was ready", host.process.returncode)
                return False
            if self.socket.exists():
                return True
            await asyncio.sleep(0.1)
        return False

    async def _watch(self, worker: Worker) -> None:
        while not self.stopping.is_set():
            code = await worker.process.wait()
            multiprocess.mark_process_dead(worker.process.pid, str(self.metrics_dir))
            if self.stopping.is_set():
                return
            if time.monotonic() - worker.started_at > HEALTHY_AFTER_SECONDS:
                worker.restart_delay = 1.0
            log.warning(
                "%s (pid %d) exited with %s; restarting it in %.0fs",
                worker.name,
                worker.process.pid,
                code,
                worker.restart_delay,
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), worker.restart_delay)
                return
            except TimeoutError:
                pass
            worker.restart_delay = min(worker.restart_delay * 2, MAX_RESTART_DELAY_SECONDS)
            await worker.start(self.metrics_dir)

    async def _stop_all(self) -> None:
        await self._stop(self.workers)
        if self.model_host is not None:  # after the workers: their last generations run on it
            await self._stop([self.model_host])
        log.info("all workers stopped")

    async def _stop(self, workers: list[Worker]) -> None:
        running = [w.proc for w in workers if w.proc is not None and w.proc.returncode is None]
        if not running:
            return
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        done, pending = await asyncio.wait([asyncio.create_task(p.wait()) for p in running], timeout=grace)
        if pending:
            log.warning("%d workers still running %.0fs after SIGTERM: killing them", len(pending), grace)
            for proc in running:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.wait(pending)


async def supervise(settings: Settings, count: int) -> int:
    return await Supervisor(settings, count).run()
