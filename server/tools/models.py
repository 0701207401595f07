"""SQL tables of the tools domain: providers (where tools come from) and their tools.

Tools of OpenAPI and MCP providers are stored rows, so that ListTools is one indexed query whatever the
providers' servers are doing (a dead MCP server keeps its last tool list) and a catalogue of thousands of tools
pages cheaply. Flow tools are not stored: they are the published flows, listed through the flow domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from typecase.server.infra.sql import Base, JSONType, id_column, utcnow


class ToolProviderRow(Base):
    __tablename__ = "tool_providers"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[str] = id_column()
    owner_id: Mapped[str | None] = mapped_column(String(26), index=True)  # NULL: the built-in provider
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))  # builtin | openapi | mcp
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # Non-secret settings: urls, transport, command and args, auth type and name, header and env *names*.
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Fernet token of {"headers": {...}, "env": {...}, "credential": "..."}; never returned.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    timeout_ms: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    refresh_time: Mapped[datetime | None] = mapped_column()
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ToolRow(Base):
    __tablename__ = "tool_tools"
    __table_args__ = (UniqueConstraint("provider_id", "name"),)

    id: Mapped[str] = id_column()
    provider_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("tool_providers.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(64), default="", index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # How to call it: the MCP tool's own name, or the OpenAPI operation (method, path, where each argument goes).
    binding: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
