"""Connection settings shared by Client and AsyncClient: target, credentials, channel options, the gRPC
service config that retries idempotent calls, and the reconnect policy of resumable streams."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from typecase.client._version import __version__
from typecase.v1 import (
    admin_pb2,
    auth_pb2,
    chat_pb2,
    flow_pb2,
    knowledge_pb2,
    llm_pb2,
)

DEFAULT_TARGET = "localhost:50051"
TARGET_ENV = "TYPECASE_TARGET"
API_KEY_ENV = "TYPECASE_API_KEY"
MiB = 1024 * 1024

# Read-only (or documented idempotent) RPCs: safe to send again when the first attempt may have reached the server.
_READ_ONLY_PREFIXES = ("Get", "List", "Search", "Watch", "Stream", "Preview", "Validate")
_IDEMPOTENT_EXTRAS = {"LLMService.Embed", "LLMService.Rerank", "ChatService.StopTurn"}


def _idempotent_methods() -> frozenset[str]:
    names = set()
    for module in (auth_pb2, llm_pb2, chat_pb2, knowledge_pb2, flow_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                short = f"{service.name}.{method.name}"
                if method.name.startswith(_READ_ONLY_PREFIXES) or short in _IDEMPOTENT_EXTRAS:
                    names.add(f"/{service.full_name}/{method.name}")
    return frozenset(names)


IDEMPOTENT_METHODS: frozenset[str] = _idempotent_methods()
"""Full method names ("/typecase.v1.ChatService/GetSession") the client retries on UNAVAILABLE."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client retries and reconnects.

    Idempotent calls (`IDEMPOTENT_METHODS`: Get*, List*, Search, Watch*/Stream* before their first message, ...)
    are retried on UNAVAILABLE by gRPC's built-in retry policy: at most `max_attempts` attempts in all (gRPC
    caps this at 5) with jittered exponential backoff between `initial_backoff` and `max_backoff` seconds,
    always within the call's deadline. Calls that create or change something are never retried.

    Resumable streams (chat turns, flow runs) reconnect from the last seq seen after UNAVAILABLE, up to
    `stream_reconnects` times in a row without receiving a new event, with the same backoff.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    stream_reconnects: int = 5

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be between 2 and 5 (gRPC's limit); use retry=None for no retries")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        if self.backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be at least 1")
        if self.stream_reconnects < 0:
            raise ValueError("stream_reconnects must not be negative")

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect number `attempt` (1-based): exponential, capped, with jitter in [50%, 100%]."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.backoff_multiplier ** max(0, attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def service_config(self) -> str:
        """The gRPC service config (JSON) applying this policy to every idempotent method."""
        names = [{"service": m.split("/")[1], "method": m.split("/")[2]} for m in sorted(IDEMPOTENT_METHODS)]
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff:.3f}s",
            "maxBackoff": f"{self.max_backoff:.3f}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


NO_RECONNECTS = RetryPolicy(stream_reconnects=0)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive pings, to notice dead connections (e.g. behind NATs) during long streams.

    The server must allow pings this frequent, or it closes the connection with ENHANCE_YOUR_CALM: keep `time`
    at or above the server's permitted interval (gRPC servers default to 5 minutes).
    """

    time: float = 300.0
    timeout: float = 20.0
    permit_without_calls: bool = False


OptionValue = str | int


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a client needs to build its channel and its calls (resolved from the constructor)."""

    target: str
    credential: str | None
    channel_credentials: grpc.ChannelCredentials | None
    timeout: float | None
    stream_timeout: float | None
    retry: RetryPolicy | None
    options: tuple[tuple[str, OptionValue], ...]
    metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def reconnect(self) -> RetryPolicy:
        return self.retry or NO_RECONNECTS


def resolve(
    target: str | None,
    *,
    api_key: str | None,
    token: str | None,
    tls: bool | grpc.ChannelCredentials,
    timeout: float | None,
    stream_timeout: float | None,
    retry: RetryPolicy | None,
    keepalive: Keepalive | None,
    max_receive_message_bytes: int | None,
    max_send_message_bytes: int | None,
    options: Mapping[str, OptionValue] | Sequence[tuple[str, OptionValue]] | None,
    metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> Settings:
    if api_key and token:
        raise ValueError("pass api_key or token, not both")
    credential = api_key or token or os.environ.get(API_KEY_ENV) or None
    target = target or os.environ.get(TARGET_ENV) or DEFAULT_TARGET
    if target.startswith("https://"):
        target, tls = target.removeprefix("https://").rstrip("/"), tls or True
    elif target.startswith("http://"):
        target = target.removeprefix("http://").rstrip("/")
    if tls is True:
        channel_credentials: grpc.ChannelCredentials | None = grpc.ssl_channel_credentials()
    elif tls is False:
        channel_credentials = None
    else:
        channel_credentials = tls
    for name, value in (("timeout", timeout), ("stream_timeout", stream_timeout)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive (or None for no deadline)")

    built: dict[str, OptionValue] = {"grpc.primary_user_agent": f"typecase-client-python/{__version__}"}
    if max_receive_message_bytes is not None:
        built["grpc.max_receive_message_length"] = max_receive_message_bytes
    if max_send_message_bytes is not None:
        built["grpc.max_send_message_length"] = max_send_message_bytes
    if keepalive is not None:
        built["grpc.keepalive_time_ms"] = int(keepalive.time * 1000)
        built["grpc.keepalive_timeout_ms"] = int(keepalive.timeout * 1000)
        built["grpc.keepalive_permit_without_calls"] = int(keepalive.permit_without_calls)
        built["grpc.http2.max_pings_without_data"] = 0
    if retry is not None:
        built["grpc.enable_retries"] = 1
        built["grpc.service_config"] = retry.service_config()
        built["grpc.service_config_disable_resolution"] = 1
    else:
        built["grpc.enable_retries"] = 0
    extra = options.items() if isinstance(options, Mapping) else (options or ())
    built.update(dict(extra))

    pairs = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
    return Settings(
        target=target,
        credential=credential,
        channel_credentials=channel_credentials,
        timeout=timeout,
        stream_timeout=stream_timeout,
        retry=retry,
        options=tuple(built.items()),
        metadata=tuple((key.lower(), value) for key, value in pairs),
    )
