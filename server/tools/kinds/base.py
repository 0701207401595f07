"""What a provider kind is: something that loads a provider's tools and calls one of them.

Kinds are a small registry (kinds/__init__.py KINDS), like the flow nodes' SPECS: a new kind is a new module,
not another branch in the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from typecase.server.rpc.principal import Principal


@dataclass
class ToolSpec:
    """A tool as a kind describes it (before it is stored)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    category: str = ""
    binding: dict[str, Any] = field(default_factory=dict)


@dataclass
class Provider:
    """A provider as kinds see it: the stored settings with the secrets decrypted."""

    id: str
    name: str
    kind: str
    owner_id: str | None
    config: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    credential: str = ""


@dataclass
class Call:
    """One call of one tool, as a kind receives it."""

    provider: Provider
    tool_name: str
    binding: dict[str, Any]
    arguments: dict[str, Any]
    timeout: float  # seconds; the caller also enforces it
    principal: Principal | None = None


@dataclass
class ToolResult:
    text: str
    structured: Any = None


class Kind(Protocol):
    name: str  # builtin | openapi | mcp

    async def load(self, provider: Provider) -> list[ToolSpec]:
        """The provider's tools now. Raises ToolFailure when its source cannot be read."""
        ...

    async def call(self, call: Call) -> ToolResult:
        """Run one call. Raises ToolFailure with the upstream's message."""
        ...

    async def forget(self, provider_id: str) -> None:
        """Drop whatever is held for the provider (sessions, caches): it changed or was deleted."""
        ...

    async def aclose(self) -> None: ...
