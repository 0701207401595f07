"""Fixtures shared by the whole suite: free ports, fresh PostgreSQL databases, and `typecase serve` subprocesses."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import typecase.server  # noqa: F401  before any grpc import: servers started in-process fork safely (see it)

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("TYPECASE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TYPECASE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ADMIN_KEY = "tc-test-admin-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as thread:  # its own event loop: callers may be inside one (app_factory)
        thread.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    name = f"tc_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServerProcess:
    """A real `typecase serve` in a subprocess on free loopback ports, its output kept in a file."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, name: str = "server"):
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = data_dir / f"{name}.log"
        self.env = {
            **os.environ,
            "TYPECASE_DATA_DIR": str(data_dir),
            "TYPECASE_GRPC_PORT": str(self.grpc_port),
            "TYPECASE_HTTP_PORT": str(self.http_port),
            "TYPECASE_HOST": "127.0.0.1",
            "HF_HUB_OFFLINE": "1",
            "TYPECASE_ADMIN_API_KEY": ADMIN_KEY,
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "typecase.server", "serve"], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until /readyz answers 200; returns the seconds it took. Generous by default: on a loaded 2-core
        machine (the shared development VM at load 9) importing the server alone took 54 s, and no test proves
        anything by a quick start here (test_serve checks its own start-up time)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.http_url + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout}s:\n{self.output()}") from None
        finally:
            self._log.close()


@pytest.fixture
def server_factory(tmp_path) -> Iterator:
    """Start servers with `server_factory(env=..., name=...)`; all are stopped at the end of the test."""
    servers: list[ServerProcess] = []

    def make(env: dict[str, str] | None = None, name: str = "server", data_dir: Path | None = None) -> ServerProcess:
        directory = data_dir or tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(directory, env, name)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.fixture
async def app_factory(request, tmp_path, monkeypatch):
    """Start the real App (every service, interceptor and the gateway) in this test's event loop, on free ports,
    with the embedded resources under tmp_path: `await app_factory(**setting_overrides)`. Stopped at the end."""
    from typecase.server.app import App
    from typecase.server.config import Settings

    if "pg_database_url" in request.fixturenames:  # set up first, so dropped only after the apps stopped
        request.getfixturevalue("pg_database_url")

    for name in list(os.environ):
        if name.startswith("TYPECASE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    apps: list = []

    async def start(**overrides):
        values = {
            "data_dir": tmp_path / "data",
            "grpc_port": 0,
            "http_port": 0,
            "admin_api_key": ADMIN_KEY,
            "shutdown_grace_seconds": 1,
            **overrides,
        }
        app = App(Settings(_env_file=None, **values))
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in reversed(apps):
        await stop_app(app)


async def stop_app(app, timeout: float = 60) -> None:
    """App.stop, failing with every task's stack when it does not end in time (instead of a silent hang)."""
    stopping = asyncio.ensure_future(app.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if done:
        return stopping.result()
    stacks = io.StringIO()
    for task in asyncio.all_tasks():
        stacks.write(f"{task!r}\n")
        for frame in task.get_stack(limit=12):
            stacks.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
    stopping.cancel()
    raise AssertionError(f"App.stop did not end within {timeout:g}s; its tasks:\n{stacks.getvalue()}")


@pytest.fixture
async def running_app(app_factory):
    """The App with default test settings; `app.grpc_port` and `app.http_port` are bound."""
    return await app_factory()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
async def fresh_database(request, tmp_path):
    """A started Database on a new, empty SQLite file, PostgreSQL database or MariaDB database; dropped after."""
    from sqlalchemy.engine import make_url

    from tests.infra.infra_support import MYSQL_ADMIN_URL, PG_ADMIN_URL, mysql_exec, pg_exec, unique
    from typecase.server.infra.sql import Database

    name = unique("tc_fresh")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'fresh.db'}", None
    elif request.param == "postgresql":
        await pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
        url, drop = (
            make_url(PG_ADMIN_URL).set(database=name),
            (pg_exec, PG_ADMIN_URL, f'DROP DATABASE "{name}" WITH (FORCE)'),
        )
    else:
        await mysql_exec(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url, drop = (
            make_url(MYSQL_ADMIN_URL).set(database=name),
            (mysql_exec, MYSQL_ADMIN_URL, f"DROP DATABASE `{name}`"),
        )
    db = Database(url)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()
        if drop:
            await drop[0](*drop[1:])
