"""Registering services on the grpc.aio server through their generic handlers only.

Generated `add_*Servicer_to_server` functions add each service twice: a generic handler (one dict lookup per
call, in Python) and a registered-method table. grpc.aio keeps one pending request-call task per registered
method and, on every incoming RPC, `asyncio.wait`s on all of them (grpc/_cython aio/server.pyx.pxi): with
Typecase's ~135 methods that is ~135 done-callbacks added and removed per call, the largest single piece of the
server's own per-RPC cost in bench/tools' profile. With the generic handlers alone grpc.aio waits on one task. The
lookup finds the same handler either way and the interceptors see the same call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc


class GenericOnly:
    """Stands in for the server given to a generated `add_*Servicer_to_server`: keeps its generic handler, drops
    the registered-method table that would duplicate it."""

    def __init__(self, server: Any):
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        pass
