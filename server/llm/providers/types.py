"""The provider types Typecase speaks, one entry each: the wire protocol's adapter, what its models can do by
default, and how a provider of the type is configured. The catalog (validation, proto conversion) and inference
(building adapters) read this table instead of branching on the type, so adding a provider type is one entry here
plus its adapter module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from typecase.server.config import Settings
from typecase.v1 import llm_pb2

from . import Adapter
from .anthropic import AnthropicAdapter
from .http import PoolLimits
from .local import KNOWN_MODELS, LocalAdapter
from .openai import OpenAIAdapter
from .remote_local import RemoteLocalAdapter

CAPABILITIES = ("tools", "vision", "json_schema", "reasoning")


@dataclass(frozen=True, slots=True)
class AdapterArgs:
    base_url: str
    api_key: str | None
    headers: dict[str, str]
    config: dict[str, Any]
    settings: Settings


@dataclass(frozen=True)
class ProviderType:
    name: str  # stored in llm_providers.type
    proto: llm_pb2.ProviderType
    build: Callable[[AdapterArgs], Adapter]
    capabilities: dict[str, bool]  # defaults of its models; an admin overrides them per model
    base_url: str  # "required" | "optional" | "none"
    shared: bool = False  # one adapter serves every provider of the type (in-process models)
    known_models: dict[str, str] = field(default_factory=dict)  # upstream name -> model type, when fixed


def _http(cls) -> Callable[[AdapterArgs], Adapter]:
    def build(a: AdapterArgs) -> Adapter:
        return cls(
            a.base_url,
            a.api_key,
            a.headers,
            a.config,
            PoolLimits(
                max_connections=a.settings.llm_max_connections,
                keepalive_expiry=a.settings.llm_keepalive_expiry_seconds,
                max_event_chars=a.settings.llm_max_stream_event_chars,
                max_response_bytes=a.settings.llm_max_response_bytes,
            ),
        )

    return build


def _local(a: AdapterArgs) -> Adapter:
    if a.settings.llm_local_host_socket:  # serve --workers: the models run once, in the model host
        return RemoteLocalAdapter(a.settings.llm_local_host_socket)
    return LocalAdapter.from_settings(a.settings)


PROVIDER_TYPES: dict[str, ProviderType] = {
    spec.name: spec
    for spec in (
        ProviderType(
            "openai_compatible",
            llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
            _http(OpenAIAdapter),
            {"tools": True, "vision": True, "json_schema": True, "reasoning": False},
            base_url="required",
        ),
        ProviderType(
            "anthropic",
            llm_pb2.PROVIDER_TYPE_ANTHROPIC,
            _http(AnthropicAdapter),
            {"tools": True, "vision": True, "json_schema": True, "reasoning": False},
            base_url="optional",
        ),
        ProviderType(
            "local",
            llm_pb2.PROVIDER_TYPE_LOCAL,
            _local,
            {"tools": True, "vision": False, "json_schema": True, "reasoning": False},
            base_url="none",
            shared=True,
            known_models=KNOWN_MODELS,
        ),
    )
}
BY_PROTO: dict[int, ProviderType] = {spec.proto: spec for spec in PROVIDER_TYPES.values()}


def capabilities(provider_type: str, overrides: dict[str, bool] | None) -> dict[str, bool]:
    """A model's effective capabilities: its provider type's defaults under the admin's overrides."""
    spec = PROVIDER_TYPES.get(provider_type)
    base = dict(spec.capabilities) if spec else dict.fromkeys(CAPABILITIES, False)
    base.update({k: bool(v) for k, v in (overrides or {}).items() if k in CAPABILITIES})
    return base
