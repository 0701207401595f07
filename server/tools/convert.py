"""Rows <-> proto messages of the tools domain. Secrets never leave here in a message: header and env values
are shown as MASK, credentials only as `credential_set`."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, struct_pb2

from typecase.server.tools.deps import SecretBox
from typecase.server.tools.kinds.base import Provider
from typecase.server.tools.models import ToolProviderRow, ToolRow
from typecase.v1 import tools_pb2

MASK = "****"
KIND_NAMES = {tools_pb2.TOOL_PROVIDER_KIND_BUILTIN: "builtin", tools_pb2.TOOL_PROVIDER_KIND_OPENAPI: "openapi",
              tools_pb2.TOOL_PROVIDER_KIND_MCP: "mcp"}
KIND_VALUES = {v: k for k, v in KIND_NAMES.items()}
TRANSPORT_NAMES = {tools_pb2.MCP_TRANSPORT_STREAMABLE_HTTP: "streamable_http", tools_pb2.MCP_TRANSPORT_SSE: "sse",
                   tools_pb2.MCP_TRANSPORT_STDIO: "stdio"}
TRANSPORT_VALUES = {v: k for k, v in TRANSPORT_NAMES.items()}
AUTH_NAMES = {tools_pb2.TOOL_AUTH_TYPE_UNSPECIFIED: "none", tools_pb2.TOOL_AUTH_TYPE_API_KEY_HEADER: "api_key_header",
              tools_pb2.TOOL_AUTH_TYPE_API_KEY_QUERY: "api_key_query", tools_pb2.TOOL_AUTH_TYPE_BEARER: "bearer"}
AUTH_VALUES = {v: k for k, v in AUTH_NAMES.items()}


def open_secrets(box: SecretBox, row: ToolProviderRow) -> dict[str, Any]:
    """{"headers": {...}, "env": {...}, "credential": "..."} of a provider ({} parts when none)."""
    plain = box.decrypt(row.secrets_encrypted) if row.secrets_encrypted else None
    data = json.loads(plain) if plain else {}
    return {"headers": dict(data.get("headers") or {}), "env": dict(data.get("env") or {}),
            "credential": str(data.get("credential") or "")}


def seal_secrets(box: SecretBox, secrets: dict[str, Any]) -> str | None:
    if not (secrets.get("headers") or secrets.get("env") or secrets.get("credential")):
        return None
    return box.encrypt(json.dumps(secrets))


def provider_view(box: SecretBox, row: ToolProviderRow) -> Provider:
    secrets = open_secrets(box, row)
    return Provider(row.id, row.name, row.kind, row.owner_id, dict(row.config or {}), secrets["headers"],
                    secrets["env"], secrets["credential"])


def provider_message(row: ToolProviderRow, tool_count: int) -> tools_pb2.ToolProvider:
    config = row.config or {}
    message = tools_pb2.ToolProvider(
        id=row.id, owner_id=row.owner_id or "", name=row.name, description=row.description,
        kind=KIND_VALUES.get(row.kind, tools_pb2.TOOL_PROVIDER_KIND_UNSPECIFIED), shared=row.shared,
        timeout_ms=row.timeout_ms, tool_count=tool_count, last_error=row.last_error or "",
    )
    for name in config.get("header_names") or []:
        message.headers[name] = MASK
    if row.kind == "openapi":
        source = message.openapi
        source.document_url = config.get("document_url", "")
        source.base_url = config.get("base_url", "")
        source.auth.type = AUTH_VALUES.get(config.get("auth_type", "none"), tools_pb2.TOOL_AUTH_TYPE_UNSPECIFIED)
        source.auth.name = config.get("auth_name", "")
        source.auth.credential_set = bool(config.get("credential_set"))
    elif row.kind == "mcp":
        server = message.mcp
        server.transport = TRANSPORT_VALUES.get(config.get("transport", ""), tools_pb2.MCP_TRANSPORT_UNSPECIFIED)
        server.url = config.get("url", "")
        server.command = config.get("command", "")
        server.args.extend(config.get("args") or [])
        for name in config.get("env_names") or []:
            server.env[name] = MASK
    if row.refresh_time is not None:
        message.refresh_time.FromDatetime(row.refresh_time)
    message.create_time.FromDatetime(row.create_time)
    message.update_time.FromDatetime(row.update_time)
    return message


def struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(data)
    return value


def tool_message(tool: ToolRow, provider: ToolProviderRow) -> tools_pb2.CatalogTool:
    return tools_pb2.CatalogTool(
        id=tool.id, provider_id=provider.id, name=tool.name, description=tool.description, category=tool.category,
        parameters=struct_of(tool.parameters or {}), kind=KIND_VALUES.get(provider.kind, 0),
        provider_name=provider.name)


def value_of(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return value
