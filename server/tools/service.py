"""ToolService: tool providers (CRUD, refresh), the tool catalogue, and calls.

Visibility: a provider is seen (and its tools listed and called) by its owner, admins, and, when shared, everyone;
only its owner or an admin changes it, or a user it is granted to at EDIT level (infra/sharing.py): its name,
description and timeout, and a refresh; its source and headers (where its credentials go) and its deletion stay the
owner's. A USE grantee gets PERMISSION_DENIED (SHARE_LEVEL_INSUFFICIENT); anyone else NOT_FOUND (TOOL_NOT_FOUND for
tools). The built-in
provider is shared and owned by no one; only admins may change its sharing or description.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from google.protobuf import json_format
from sqlalchemy.exc import IntegrityError

from typecase.server.infra import sharing
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import integral
from typecase.server.rpc.paging import decode_token, encode_token, page_size
from typecase.server.tools import schemas
from typecase.server.tools.api import Tools
from typecase.server.tools.calls import FLOW_CATEGORY, FLOW_PREFIX, Invoker, flow_tool
from typecase.server.tools.convert import (
    AUTH_NAMES,
    KIND_NAMES,
    KIND_VALUES,
    MASK,
    TRANSPORT_NAMES,
    open_secrets,
    provider_message,
    provider_view,
    seal_secrets,
    struct_of,
    tool_message,
    value_of,
)
from typecase.server.tools.deps import FlowRunner, SecretBox
from typecase.server.tools.errors import ToolFailure
from typecase.server.tools.kinds import builtin
from typecase.server.tools.kinds.base import Kind, ToolSpec
from typecase.server.tools.models import ToolProviderRow
from typecase.server.tools.store import ToolStore
from typecase.v1 import tools_pb2, tools_pb2_grpc

log = logging.getLogger("typecase.tools")

MAX_NAME = 128
MAX_DESCRIPTION = 10_000
MAX_HEADERS = 64
UPDATABLE = {"name", "description", "shared", "headers", "timeout_ms", "openapi", "mcp"}
OWNER_ONLY = {"headers", "openapi", "mcp"}  # editors (an EDIT grant) change the rest and refresh
MAX_TOOLS_PAGE = 1000


class ToolService(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self, settings, db, audit, box: SecretBox, kinds: dict[str, Kind], flows: FlowRunner | None = None):
        self.settings = settings
        self.store = ToolStore(db)
        self.audit = audit
        self.box = box
        self.kinds = kinds
        self.flows = flows
        self.invoker = Invoker(settings, self.store, kinds, box, flows)
        self.api = Tools(self.invoker, settings.tools_max_batch_calls)  # the Python API chat and flow receive
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Seed the built-in provider and its tools (idempotent; several replicas may race, the loser retries)."""
        row = ToolProviderRow(
            id=builtin.PROVIDER_ID,
            owner_id=None,
            name=builtin.PROVIDER_NAME,
            kind="builtin",
            shared=True,
            description="Typecase's own tools",
            config={},
            timeout_ms=0,
            last_error="",
        )
        ids = {spec.name: builtin.tool_id(spec.name) for spec in builtin.SPECS}
        for attempt in range(3):
            try:
                await self.store.seed_builtin(row, builtin.SPECS, ids)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        for kind in self.kinds.values():
            await kind.aclose()

    # -- providers ---------------------------------------------------------------------------------------------
    async def _visible(self, provider_id: str) -> ToolProviderRow:
        row = await self.store.provider(provider_id) if provider_id else None
        if row is None or not (
            row.shared or caller.can_see(row.owner_id) or await self.store.granted(row, caller.current())
        ):
            raise not_found("tool provider", provider_id)
        return row

    async def _editable(self, provider_id: str, need: str = sharing.EDIT) -> ToolProviderRow:
        """The provider the caller may change: owner, admin or an EDIT grant (`need` OWNER: delete). NOT_FOUND when
        they cannot see it, shared with everyone but not granted, or it is the built-in one and they are no admin;
        PERMISSION_DENIED (SHARE_LEVEL_INSUFFICIENT) when granted below `need`."""
        row = await self.store.provider(provider_id) if provider_id else None
        if row is None or (row.kind == "builtin" and not caller.current().is_admin):
            raise not_found("tool provider", provider_id)
        held = await self.store.granted(row, caller.current())
        sharing.require(held, need, "tool provider", sharing.TOOL_PROVIDER, row.id)
        return row

    async def _stored(self, provider_id: str) -> ToolProviderRow:
        """The provider as stored now, after a change (NOT_FOUND when it was deleted meanwhile)."""
        row = await self.store.provider(provider_id)
        if row is None:
            raise not_found("tool provider", provider_id)
        return row

    async def _message(self, row: ToolProviderRow) -> tools_pb2.ToolProvider:
        counts = await self.store.tool_counts([row.id])
        return provider_message(row, counts.get(row.id, 0))

    def _clean_name(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise invalid_argument("provider.name", "is required")
        if len(name) > MAX_NAME:
            raise invalid_argument("provider.name", f"at most {MAX_NAME} characters")
        return name

    def _timeout_ms(self, value: int) -> int:
        if value < 0:
            raise invalid_argument("provider.timeout_ms", "must not be negative")
        if value / 1000 > self.settings.tools_max_call_timeout_seconds:
            raise invalid_argument(
                "provider.timeout_ms", f"at most {int(self.settings.tools_max_call_timeout_seconds * 1000)}"
            )
        return value

    @staticmethod
    def _merge_secret_map(given: dict[str, str], stored: dict[str, str], field: str) -> dict[str, str]:
        """The new map: MASK values keep the stored value of the same name."""
        if len(given) > MAX_HEADERS:
            raise invalid_argument(field, f"at most {MAX_HEADERS} entries")
        merged = {}
        for name, value in given.items():
            if not name.strip():
                raise invalid_argument(field, "names must not be empty")
            if value == MASK:
                if name not in stored:
                    raise invalid_argument(f"{field}.{name}", f"{MASK} keeps a stored value, and there is none")
                value = stored[name]
            merged[name] = value
        return merged

    def _apply_source(
        self,
        message: tools_pb2.ToolProvider,
        kind: str,
        config: dict[str, Any],
        secrets: dict[str, Any],
        paths: set[str],
    ) -> None:
        """Fill config and secrets from the message's kind-specific part (the fields `paths` names)."""
        if "headers" in paths:
            secrets["headers"] = self._merge_secret_map(dict(message.headers), secrets["headers"], "provider.headers")
            config["header_names"] = sorted(secrets["headers"])
        if kind == "openapi" and "openapi" in paths:
            source = message.openapi
            config["document_url"] = source.document_url.strip()
            config["base_url"] = source.base_url.strip()
            config["auth_type"] = AUTH_NAMES.get(source.auth.type, "none")
            config["auth_name"] = source.auth.name.strip()
            if config["auth_type"] in ("api_key_header", "api_key_query") and not config["auth_name"]:
                raise invalid_argument("provider.openapi.auth.name", "names the header or query parameter of the key")
            if source.auth.credential:
                secrets["credential"] = source.auth.credential
            if config["auth_type"] == "none":
                secrets["credential"] = ""
            if config["auth_type"] != "none" and not secrets["credential"]:
                raise invalid_argument("provider.openapi.auth.credential", "is required for this auth type")
            config["credential_set"] = bool(secrets["credential"])
            if not source.document and not config["document_url"]:
                raise invalid_argument("provider.openapi.document", "give the document or its document_url")
            if len(source.document.encode()) > self.settings.tools_max_document_bytes:
                raise invalid_argument(
                    "provider.openapi.document", f"larger than {self.settings.tools_max_document_bytes} bytes"
                )
        if kind == "mcp" and "mcp" in paths:
            server = message.mcp
            transport = TRANSPORT_NAMES.get(server.transport) or (
                "stdio" if server.command and not server.url else "streamable_http"
            )
            config["transport"] = transport
            if transport == "stdio":
                if not self.settings.tools_mcp_stdio_enabled:
                    raise TypecaseError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        "PERMISSION_DENIED",
                        "MCP servers run as local commands are disabled on this server "
                        "(setting tools_mcp_stdio_enabled)",
                    )
                caller.require_permission("tools.manage_stdio")
                if not server.command.strip():
                    raise invalid_argument("provider.mcp.command", "is required for the stdio transport")
                config.update(command=server.command.strip(), args=list(server.args), url="")
                secrets["env"] = self._merge_secret_map(dict(server.env), secrets["env"], "provider.mcp.env")
                config["env_names"] = sorted(secrets["env"])
            else:
                url = server.url.strip()
                if not url.startswith(("http://", "https://")):
                    raise invalid_argument("provider.mcp.url", "an http(s) URL is required")
                config.update(url=url, command="", args=[], env_names=[])
                secrets["env"] = {}

    async def _load(self, kind: str, row: ToolProviderRow, document: str = "") -> list[ToolSpec]:
        """The provider's tools from its source; raises ToolFailure."""
        view = provider_view(self.box, row)
        if document:
            view.config = {**view.config, "document": document}
        specs = await self.kinds[kind].load(view)
        usable = []
        for spec in specs[: self.settings.tools_max_per_provider]:
            try:
                schemas.check(spec.parameters)
            except schemas.SchemaError as exc:
                log.warning(
                    "tool %r of provider %r skipped: its parameters are not a usable schema (%s)",
                    spec.name,
                    row.name,
                    exc,
                )
                continue
            usable.append(spec)
        return usable

    async def CreateToolProvider(self, request, context):
        me = caller.require_permission("tool_providers.create")
        message = request.provider
        kind = KIND_NAMES.get(message.kind)
        if kind not in ("openapi", "mcp"):
            raise invalid_argument("provider.kind", "OPENAPI or MCP (the built-in provider is seeded)")
        if message.shared:
            caller.require_admin()
        config: dict[str, Any] = {}
        secrets = {"headers": {}, "env": {}, "credential": ""}
        self._apply_source(message, kind, config, secrets, {"headers", kind})
        row = ToolProviderRow(
            owner_id=me.user_id,
            name=self._clean_name(message.name),
            description=message.description[:MAX_DESCRIPTION],
            kind=kind,
            shared=message.shared,
            config=config,
            secrets_encrypted=seal_secrets(self.box, secrets),
            timeout_ms=self._timeout_ms(message.timeout_ms),
            last_error="",
        )
        row.id = new_id()
        specs: list[ToolSpec] = []
        try:
            specs = await self._load(kind, row, message.openapi.document if kind == "openapi" else "")
            row.refresh_time = utcnow()
        except ToolFailure as failure:
            if kind == "openapi":
                raise invalid_argument("provider.openapi", failure.message) from None
            row.last_error = failure.message
        try:
            await self.store.add_provider(row, specs)
        except IntegrityError:
            raise TypecaseError(
                grpc.StatusCode.ALREADY_EXISTS,
                "ALREADY_EXISTS",
                f"you already have a tool provider named {row.name!r}",
                {"name": row.name},
            ) from None
        await self.audit.record(
            "tool_provider.create",
            actor_id=me.user_id,
            resource_type="tool_provider",
            resource_id=row.id,
            detail={"name": row.name, "kind": kind, "tools": len(specs)},
        )
        return tools_pb2.CreateToolProviderResponse(provider=await self._message(await self._stored(row.id)))

    async def ListToolProviders(self, request, context):
        scope = caller.current()
        size = page_size(request.page_size)
        position = decode_token(request.page_token) or {}
        kind = KIND_NAMES.get(request.kind, "")
        rows = await self.store.list_providers(scope, kind, size + 1, position.get("id"))
        more = len(rows) > size
        rows = rows[:size]
        counts = await self.store.tool_counts([r.id for r in rows])
        return tools_pb2.ListToolProvidersResponse(
            providers=[provider_message(r, counts.get(r.id, 0)) for r in rows],
            next_page_token=encode_token(id=rows[-1].id) if more else "",
        )

    async def GetToolProvider(self, request, context):
        return tools_pb2.GetToolProviderResponse(provider=await self._message(await self._visible(request.provider_id)))

    async def UpdateToolProvider(self, request, context):
        me = caller.current()
        message = request.provider
        if request.update_mask.paths:
            paths = set(request.update_mask.paths)
            unknown = paths - UPDATABLE
            if unknown:
                raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a tool provider")
        else:
            paths = {f.name for f, _ in message.ListFields()} & UPDATABLE
        # Where the stored credentials are sent (source, headers) stays the owner's: an editor pointing the
        # provider at their own server would receive them.
        row = await self._editable(message.id, sharing.OWNER if paths & OWNER_ONLY else sharing.EDIT)
        if row.kind == "builtin" and paths - {"description", "shared"}:
            raise invalid_argument("update_mask", "only the description and sharing of the built-in provider change")
        if "name" in paths:
            row.name = self._clean_name(message.name)
        if "description" in paths:
            row.description = message.description[:MAX_DESCRIPTION]
        if "shared" in paths:
            caller.require_admin()
            row.shared = message.shared
        if "timeout_ms" in paths:
            row.timeout_ms = self._timeout_ms(message.timeout_ms)
        config, secrets = dict(row.config or {}), open_secrets(self.box, row)
        self._apply_source(message, row.kind, config, secrets, paths)
        row.config, row.secrets_encrypted = config, seal_secrets(self.box, secrets)
        specs = None
        reload = {"openapi": {"openapi"}, "mcp": {"mcp", "headers"}}.get(row.kind, set())
        if paths & reload:
            await self.kinds[row.kind].forget(row.id)
            try:
                specs = await self._load(row.kind, row, message.openapi.document if row.kind == "openapi" else "")
                row.last_error = ""
            except ToolFailure as failure:
                if row.kind == "openapi":
                    raise invalid_argument("provider.openapi", failure.message) from None
                row.last_error = failure.message
        try:
            await self.store.save_provider(row, specs)
        except IntegrityError:
            raise TypecaseError(
                grpc.StatusCode.ALREADY_EXISTS,
                "ALREADY_EXISTS",
                f"you already have a tool provider named {row.name!r}",
                {"name": row.name},
            ) from None
        self.invoker.forget()
        await self.audit.record(
            "tool_provider.update",
            actor_id=me.user_id,
            resource_type="tool_provider",
            resource_id=row.id,
            detail={"fields": sorted(paths)},
        )
        return tools_pb2.UpdateToolProviderResponse(provider=await self._message(await self._stored(row.id)))

    async def DeleteToolProvider(self, request, context):
        me = caller.current()
        row = await self._editable(request.provider_id, sharing.OWNER)
        if row.kind == "builtin":
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION", "the built-in provider cannot be deleted"
            )
        await self.store.delete_provider(row.id)
        self.invoker.forget()
        await self.kinds[row.kind].forget(row.id)
        await self.audit.record(
            "tool_provider.delete",
            actor_id=me.user_id,
            resource_type="tool_provider",
            resource_id=row.id,
            detail={"name": row.name},
        )
        return tools_pb2.DeleteToolProviderResponse()

    async def refresh(self, row: ToolProviderRow, reconnect: bool = True) -> None:
        """Reload a provider's tools (on a new connection when `reconnect`); a failure is kept as its last_error
        (its stored tools stay)."""
        if row.kind == "openapi" and not (row.config or {}).get("document_url"):
            return  # imported from text: nothing to fetch again (an update with a new document reloads it)
        if reconnect:
            await self.kinds[row.kind].forget(row.id)
        try:
            specs = await self._load(row.kind, row)
            await self.store.replace_tools(row.id, specs, "")
            self.invoker.forget()
        except ToolFailure as failure:
            await self.store.set_error(row.id, failure.message)

    async def refresh_later(self, provider_id: str) -> None:
        """A server said its tool list changed: reload it in the background (not inside its message handler)."""

        async def reload() -> None:
            row = await self.store.provider(provider_id)
            if row is not None:
                await self.refresh(row, reconnect=False)  # the session that told us is alive and may be busy

        task = asyncio.create_task(reload(), name=f"tools-refresh-{provider_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def RefreshToolProvider(self, request, context):
        me = caller.current()
        row = await self._editable(request.provider_id)
        await self.refresh(row)
        await self.audit.record(
            "tool_provider.refresh", actor_id=me.user_id, resource_type="tool_provider", resource_id=row.id
        )
        return tools_pb2.RefreshToolProviderResponse(provider=await self._message(await self._stored(row.id)))

    # -- tools -------------------------------------------------------------------------------------------------
    async def ListTools(self, request, context):
        scope = caller.current()
        size = page_size(request.page_size, maximum=MAX_TOOLS_PAGE)
        position = decode_token(request.page_token) or {}
        tools: list[tools_pb2.CatalogTool] = []
        if not position.get("flows"):
            found = await self.store.list_tools(
                scope,
                provider_id=request.provider_id,
                category=request.category,
                keyword=request.keyword,
                limit=size + 1,
                after=position.get("id"),
            )
            tools = [tool_message(row) for row in found[:size]]
            if len(found) > size:
                return tools_pb2.ListToolsResponse(tools=tools, next_page_token=encode_token(id=tools[-1].id))
        # Flow tools come after the stored ones (they live in the flow domain).
        if (
            self.flows is not None
            and request.provider_id in ("", builtin.PROVIDER_ID)
            and request.category in ("", FLOW_CATEGORY)
        ):
            keyword = request.keyword.lower()
            skip = int(position.get("flows") or 0)
            flows = [
                f
                for f in await self.flows.runnable_flows(skip + size + 1)
                if not keyword or keyword in f.name.lower() or keyword in (f.description or "").lower()
            ]
            room = size - len(tools)
            for flow in flows[skip : skip + room]:
                t = flow_tool(flow)
                tools.append(
                    tools_pb2.CatalogTool(
                        id=t.id,
                        provider_id=t.provider_id,
                        name=t.name,
                        description=t.description,
                        category=t.category,
                        parameters=struct_of(t.parameters),
                        kind=tools_pb2.TOOL_PROVIDER_KIND_BUILTIN,
                        provider_name=t.provider_name,
                    )
                )
            if len(flows) > skip + room:
                return tools_pb2.ListToolsResponse(tools=tools, next_page_token=encode_token(flows=skip + room))
        return tools_pb2.ListToolsResponse(tools=tools)

    async def GetTool(self, request, context):
        t = await self.invoker.resolve(request.tool_id)
        return tools_pb2.GetToolResponse(
            tool=tools_pb2.CatalogTool(
                id=t.id,
                provider_id=t.provider_id,
                name=t.name,
                description=t.description,
                category=t.category,
                parameters=struct_of(t.parameters),
                # A flow published as a tool is listed as built in.
                kind=KIND_VALUES.get(
                    "builtin" if t.kind == "flow" else t.kind, tools_pb2.TOOL_PROVIDER_KIND_UNSPECIFIED
                ),
                provider_name=t.provider_name,
            )
        )

    async def CallTool(self, request, context):
        if request.timeout_ms < 0:
            raise invalid_argument("timeout_ms", "must not be negative")
        arguments = json_format.MessageToDict(request.arguments) if request.HasField("arguments") else {}
        outcome = await self.invoker.call(request.tool_id, integral(arguments), request.timeout_ms)
        response = tools_pb2.CallToolResponse(
            text=outcome.text, truncated=outcome.truncated, duration_ms=int(outcome.seconds * 1000)
        )
        if outcome.structured is not None:
            response.structured.CopyFrom(value_of(outcome.structured))
        return response


__all__ = ["FLOW_PREFIX", "ToolService"]
