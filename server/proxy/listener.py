"""The proxy's own HTTP listener: uvicorn in the server's event loop, on TYPECASE_PROXY_HOST:TYPECASE_PROXY_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn

from typecase.server.infra.request_head import limited_http_protocol
from typecase.server.ports import bind_socket


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the App owns signals
        yield


class ProxyListener:
    def __init__(
        self,
        app,
        host: str,
        port: int,
        *,
        client_keepalive: int,
        max_connections: int,
        grace: float,
        max_header_bytes: int,
        max_header_count: int,
        reuse_port: bool = False,
    ):
        self.reuse_port = reuse_port
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,  # the proxy keeps its own access lines
            proxy_headers=False,  # X-Forwarded-* pass through to the upstream; not interpreted here
            server_header=False,  # the upstream's Server and Date headers pass through instead
            date_header=False,
            timeout_keep_alive=client_keepalive,
            limit_concurrency=max_connections or None,
            timeout_graceful_shutdown=int(grace) or None,
            backlog=4096,
            http=limited_http_protocol(max_header_bytes, max_header_count),  # 431 beyond, before anything reads it
        )
        self.server: _Server | None = None
        self.task: asyncio.Task | None = None
        self.port: int | None = None

    def _bind(self) -> socket.socket:
        """Bind here rather than in uvicorn, which exits the process when a port is taken."""
        try:
            return bind_socket(self.config.host, self.config.port, self.reuse_port)
        except OSError as exc:
            raise RuntimeError(f"cannot listen for the proxy on {self.config.host}:{self.config.port}: {exc}") from exc

    async def start(self) -> None:
        sock = self._bind()
        self.server = _Server(self.config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]), name="proxy-listener")
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError(f"cannot listen for the proxy on {self.config.host}:{self.config.port}")
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting; in-flight requests finish within the grace period, then are cancelled."""
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)
        self.server = self.task = None
