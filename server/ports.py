"""Busy ports are a clear start-up error, found before the server touches anything.

`typecase serve` binds up to three listeners (gRPC, HTTP and, when enabled, the LLM API proxy). A second server
started on the same ports used to create its data dir, print a new admin key, then die half-started; worse, gRPC's
default SO_REUSEPORT let two servers share the gRPC port and split calls between them. So every port is tried here
first, with the socket options the real listeners use (SO_REUSEADDR: a port left in TIME_WAIT by a restart is free,
one with a listener is not), and the gRPC server itself is built with SO_REUSEPORT off (`GRPC_OPTIONS`), which
also closes the race between this check and the real bind.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

# gRPC server options: never share a port by accident (grpc's default turns SO_REUSEPORT on).
GRPC_OPTIONS = [("grpc.so_reuseport", 0)]


def grpc_options(reuse_port: bool) -> list[tuple[str, int]]:
    """Workers of `serve --workers` share their ports deliberately; everything else never does."""
    return [("grpc.so_reuseport", 1 if reuse_port else 0)]


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for uvicorn (which would exit the process on a busy port); with `reuse_port`, shared
    with the sibling workers of `serve --workers`."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int
    setting: str  # the environment variable that moves it
    host_setting: str = "TYPECASE_HOST"

    def in_use(self) -> str:
        return f"port {self.port} is in use: set {self.setting}"


class PortsUnavailable(RuntimeError):
    """One or more listeners cannot bind; the message names each port and the setting that moves it."""


def listeners(settings) -> list[Listener]:
    """The listeners `serve` opens with these settings (port 0 asks the OS for a free one and is never busy)."""
    found = [
        Listener("gRPC", settings.host, settings.grpc_port, "TYPECASE_GRPC_PORT"),
        Listener("HTTP", settings.host, settings.http_port, "TYPECASE_HTTP_PORT"),
    ]
    if settings.proxy_enabled:
        found.append(
            Listener(
                "LLM API proxy", settings.proxy_host, settings.proxy_port, "TYPECASE_PROXY_PORT", "TYPECASE_PROXY_HOST"
            )
        )
    return [listener for listener in found if listener.port]


def check_free(settings) -> None:
    """Raise PortsUnavailable naming every listener that cannot bind now (all of them, not only the first)."""
    problems = [problem for listener in listeners(settings) if (problem := _try_bind(listener))]
    if problems:
        raise PortsUnavailable("; ".join(problems))


def _try_bind(listener: Listener) -> str | None:
    try:
        addresses = socket.getaddrinfo(listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return (
            f"cannot resolve {listener.host!r} for the {listener.name} listener ({exc.strerror}): "
            f"set {listener.host_setting}"
        )
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return listener.in_use()
                return (
                    f"cannot listen for {listener.name} on {listener.host}:{listener.port} ({exc.strerror}): "
                    f"set {listener.setting} or {listener.host_setting}"
                )
    return None
