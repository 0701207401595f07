"""The real App for SDK tests, hosted on its own event loop in a background thread, so that the blocking Client
can call it from plain test functions (and AsyncClient from the tests' own loops). One App serves the whole
tests/client package: starting it (and loading the local models) once keeps the suite fast; every test makes its
own sessions and knowledge bases."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.conftest import ADMIN_KEY, free_port
from typecase.client import Client

T = TypeVar("T")


class HostedApp:
    """typecase.server.app.App running in a thread with its own asyncio loop."""

    def __init__(self, data_dir, **overrides: Any) -> None:
        self.data_dir = data_dir
        self.overrides = overrides
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="typecase-app", daemon=True)
        self.app: Any = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def start(self) -> HostedApp:
        from typecase.server.app import App
        from typecase.server.config import Settings

        values = {
            "data_dir": self.data_dir,
            "grpc_port": 0,
            "http_port": 0,
            "admin_api_key": ADMIN_KEY,
            "shutdown_grace_seconds": 1,
            "jobs_poll_seconds": 0.2,
            "jobs_retry_backoff_seconds": 0.2,
            "jobs_shutdown_grace_seconds": 1,
            "knowledge_watch_poll_seconds": 0.2,
            **self.overrides,
        }

        async def start() -> Any:
            app = App(Settings(_env_file=None, **values))
            await app.start()
            return app

        self.thread.start()
        self.app = self.run(start())
        return self

    def stop(self) -> None:
        try:
            if self.app is not None:
                self.run(self.app.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.grpc_port}"


class Gate:
    """A TCP relay in front of the App's gRPC port, run on the App's loop: it can be not listening yet (connections
    refused, as with a server that is not up), listen, and cut every relayed connection at once (a dropped
    network). `connections` counts the connections it relayed."""

    def __init__(self, hosted: HostedApp) -> None:
        self.hosted = hosted
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.hosted.app.grpc_port)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def listen(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

        self.hosted.run(start())

    def cut(self) -> None:
        """Abort every relayed connection (both sides), like a network failure; keeps listening."""

        async def cut() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self.hosted.run(cut())

    def close(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        self.hosted.run(close())


@pytest.fixture(scope="package")
def hosted(tmp_path_factory) -> Iterator[HostedApp]:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        mp.setenv("HF_HUB_OFFLINE", "1")
        app = HostedApp(tmp_path_factory.mktemp("client") / "data").start()
        try:
            yield app
        finally:
            app.stop()


@pytest.fixture
def client(hosted) -> Iterator[Client]:
    """A blocking client with the admin API key."""
    with Client(hosted.target, api_key=ADMIN_KEY) as client:
        yield client


@pytest.fixture
def gate(hosted) -> Iterator[Gate]:
    relay = Gate(hosted)
    yield relay
    relay.close()


# Channel options for tests that reconnect: retry the TCP connection quickly instead of gRPC's default 1 s.
FAST_RECONNECT = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 300}
