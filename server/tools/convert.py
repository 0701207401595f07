"""Rows <-> proto messages of the tools domain. Secrets never leave here in a message: header and env values
are shown as MASK, credentials only as `credential_set`."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from google.protobuf import json_format, struct_pb2

from typecase.server.tools.deps import SecretBox
from typecase.server.tools.kinds.base import Provider
from typecase.server.tools.models import ToolProviderRow
from typecase.v1 import tools_pb2

MASK = "****"
KIND_NAMES = {
    tools_pb2.TOOL_PROVIDER_KIND_BUILTIN: "builtin",
    tools_pb2.TOOL_PROVIDER_KIND_OPENAPI: "openapi",
    tools_pb2.TOOL_PROVIDER_KIND_MCP: "mcp",
}
KIND_VALUES = {v: k for k, v in KIND_NAMES.items()}
TRANSPORT_NAMES = {
    tools_pb2.MCP_TRANSPORT_STREAMABLE_HTTP: "streamable_http",
    tools_pb2.MCP_TRANSPORT_SSE: "sse",
    tools_pb2.MCP_TRANSPORT_STDIO: "stdio",
}
TRANSPORT_VALUES = {v: k for k, v in TRANSPORT_NAMES.items()}
AUTH_NAMES = {
    tools_pb2.TOOL_AUTH_TYPE_UNSPECIFIED: "none",
    tools_pb2.TOOL_AUTH_TYPE_API_KEY_HEADER: "api_key_header",
    tools_pb2.TOOL_AUTH_TYPE_API_KEY_QUERY: "api_key_query",
    tools_pb2.TOOL_AUTH_TYPE_BEARER: "bearer",
}
AUTH_VALUES = {v: k for k, v in AUTH_NAMES.items()}


def open_secrets(box: SecretBox, row: ToolProviderRow) -> dict[str, Any]:
    """{"headers": {...}, "env": {...}, "credential": "..."} of a provider ({} parts when none)."""
    plain = box.decrypt(row.secrets_encrypted) if row.secrets_encrypted else None
    data = json.loads(plain) if plain else {}
    return {
        "headers": dict(data.get("headers") or {}),
        "env": dict(data.get("env") or {}),
        "credential": str(data.get("credential") or ""),
    }


def seal_secrets(box: SecretBox, secrets: dict[str, Any]) -> str | None:
    if not (secrets.get("headers") or secrets.get("env") or secrets.get("credential")):
        return None
    return box.encrypt(json.dumps(secrets))


def provider_view(box: SecretBox, row: ToolProviderRow) -> Provider:
    secrets = open_secrets(box, row)
    return Provider(
        row.id,
        row.name,
        row.kind,
        row.owner_id,
        dict(row.config or {}),
        secrets["headers"],
        secrets["env"],
        secrets["credential"],
    )


def provider_message(row: ToolProviderRow, tool_count: int) -> tools_pb2.ToolProvider:
    config = row.config or {}
    message = tools_pb2.ToolProvider(
        id=row.id,
        owner_id=row.owner_id or "",
        name=row.name,
        description=row.description,
        kind=KIND_VALUES.get(row.kind, tools_pb2.TOOL_PROVIDER_KIND_UNSPECIFIED),
        shared=row.shared,
        timeout_ms=row.timeout_ms,
        tool_count=tool_count,
        last_error=row.last_error or "",
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


@lru_cache(maxsize=16384)
def _struct_bytes(parameters_json: str) -> bytes:
    parameters = json.loads(parameters_json)
    return struct_of(parameters if isinstance(parameters, dict) else {}).SerializeToString()


def parameters_struct(parameters: dict[str, Any], into: struct_pb2.Struct) -> None:
    """Fill `into` with a JSON Schema. Building a Struct field by field in Python is ~30 us per small schema (30 ms
    for a 1,000-tool page, measured); the serialized form is cached by the schema's JSON, which is ~3 us to make."""
    into.MergeFromString(_struct_bytes(json.dumps(parameters or {}, sort_keys=True, separators=(",", ":"))))


def tool_message(row: Any) -> tools_pb2.CatalogTool:
    """A CatalogTool from a store.list_tools row (its parameters as stored JSON text: the text keys the cache
    directly, with no decode and re-encode per row)."""
    message = tools_pb2.CatalogTool(
        id=row.id,
        provider_id=row.provider_id,
        name=row.name,
        description=row.description,
        category=row.category,
        kind=KIND_VALUES.get(row.provider_kind, tools_pb2.TOOL_PROVIDER_KIND_UNSPECIFIED),
        provider_name=row.provider_name,
    )
    message.parameters.MergeFromString(_struct_bytes(row.parameters_json or "{}"))
    return message


def value_of(data: Any) -> struct_pb2.Value:
    """A JSON value as a protobuf Value: through Struct.update (~20 us for a small object) rather than
    json_format.ParseDict (~50 us), which stays the fallback for what update refuses, with its own errors."""
    holder = struct_pb2.Struct()
    try:
        holder.update({"v": data})
    except (TypeError, ValueError):
        value = struct_pb2.Value()
        json_format.ParseDict(data, value)
        return value
    return holder.fields["v"]
