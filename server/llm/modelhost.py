"""The model host: the one process of a machine that runs the built-in local models under `serve --workers`.

The supervisor starts it beside the workers (and restarts it when it dies) and gives each worker its socket
(TYPECASE_LLM_LOCAL_HOST_SOCKET); their "local" providers are then RemoteLocalAdapters (providers/remote_local.py)
and the models are loaded once per machine instead of once per worker. It serves a gRPC service of two methods on
a Unix socket in the data dir (private: the data dir is 0700), with the LocalAdapter doing exactly what it does in
one process: models loaded lazily on first use, one generation thread per model, timeouts, cancellation.
It exports `typecase_llm_local_models_loaded` like any process, so a worker's /metrics shows the one instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from pathlib import Path

import grpc

from typecase.server.config import Settings
from typecase.v1 import llm_pb2

from .providers import Timeouts, UpstreamError
from .providers.local import LocalAdapter
from .providers.remote_local import CHANNEL_OPTIONS, SERVICE, decode_call, delta_to_pb, encode_error

log = logging.getLogger("typecase.llm.modelhost")

SOCKET_NAME = "models.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes with its terminator on Linux, fewer elsewhere
CODES = {"timeout": grpc.StatusCode.DEADLINE_EXCEEDED, "unavailable": grpc.StatusCode.UNAVAILABLE}


def socket_path(data_dir: Path) -> Path:
    """The host's socket: in the data dir, or in a private temporary directory when that path is too long."""
    path = data_dir.resolve() / SOCKET_NAME
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="typecase-models-")) / SOCKET_NAME


class ModelHost:
    def __init__(self, settings: Settings, path: Path):
        self.settings = settings
        self.path = path
        self.adapter = LocalAdapter.from_settings(settings)
        self.server: grpc.aio.Server | None = None

    async def _fail(self, context: grpc.aio.ServicerContext, exc: UpstreamError):
        await context.abort(CODES.get(exc.kind, grpc.StatusCode.FAILED_PRECONDITION), encode_error(exc))

    async def generate(self, request: bytes, context: grpc.aio.ServicerContext):
        call, timeouts = decode_call(request)
        try:
            # aclosing: a cancelled RPC closes the adapter's stream, which stops the generation thread
            async with contextlib.aclosing(self.adapter.stream_chat(call, timeouts)) as stream:
                async for delta in stream:
                    yield delta_to_pb(delta)
        except UpstreamError as exc:
            await self._fail(context, exc)

    async def embed(self, request: llm_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> llm_pb2.EmbedResponse:
        # The worker's deadline bounds the call; the adapter's own timeout is the time left of it.
        left = context.time_remaining() or self.settings.llm_first_token_timeout_seconds
        timeouts = Timeouts(left, left, left)
        try:
            result = await self.adapter.embed(
                request.model_id, list(request.inputs), timeouts, dimensions=request.dimensions
            )
        except UpstreamError as exc:
            await self._fail(context, exc)
            raise  # (abort raises; this only tells type checkers)
        reply = llm_pb2.EmbedResponse(served_model_id=request.model_id)
        reply.usage.prompt_tokens = result.prompt_tokens
        for i, vector in enumerate(result.vectors):
            reply.embeddings.add(index=i, values=vector)
        return reply

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a socket left by a host that was killed
        handlers = {
            "Generate": grpc.unary_stream_rpc_method_handler(
                self.generate, response_serializer=llm_pb2.GenerateResponse.SerializeToString
            ),
            "Embed": grpc.unary_unary_rpc_method_handler(
                self.embed,
                request_deserializer=llm_pb2.EmbedRequest.FromString,
                response_serializer=llm_pb2.EmbedResponse.SerializeToString,
            ),
        }
        self.server = grpc.aio.server(options=CHANNEL_OPTIONS)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        self.server.add_insecure_port(f"unix:{self.path}")
        await self.server.start()
        os.chmod(self.path, 0o600)
        log.info("local model host serving on %s", self.path)

    async def stop(self, grace: float | None = None) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        await self.adapter.aclose()
        self.path.unlink(missing_ok=True)


async def run(settings: Settings) -> None:
    """The host process: serves until SIGTERM or SIGINT, then lets running requests finish within the grace."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    host = ModelHost(settings, Path(settings.llm_local_host_socket))
    await host.start()
    await stopping.wait()
    await host.stop(settings.shutdown_grace_seconds)
