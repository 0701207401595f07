"""Provider, model and default-model administration: validation, SQL writes and proto conversion.

Every write ends with `registry.changed()` so this replica serves the new state at once and the others follow.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import grpc
from google.protobuf import duration_pb2, struct_pb2
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from typecase.server.config import Settings
from typecase.server.infra import sharing
from typecase.server.infra.sql import utcnow
from typecase.server.llm.access import EVERYONE, RESTRICTED
from typecase.server.llm.models import DefaultRow, ModelRow, ProviderRow
from typecase.server.llm.providers.types import BY_PROTO, CAPABILITIES, PROVIDER_TYPES, capabilities
from typecase.server.llm.registry import USE_TYPES, Registry, mask_headers, mask_key
from typecase.server.rpc import paging
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import struct_dict
from typecase.v1 import llm_pb2

MODEL_TYPES = {
    llm_pb2.MODEL_TYPE_LLM: "llm",
    llm_pb2.MODEL_TYPE_EMBEDDING: "embedding",
    llm_pb2.MODEL_TYPE_RERANK: "rerank",
}
MODEL_TYPE_PB = {v: k for k, v in MODEL_TYPES.items()}
ACCESS = {llm_pb2.MODEL_ACCESS_EVERYONE: EVERYONE, llm_pb2.MODEL_ACCESS_RESTRICTED: RESTRICTED}
ACCESS_PB = {v: k for k, v in ACCESS.items()}

PROVIDER_FIELDS = {
    "name",
    "description",
    "base_url",
    "api_key",
    "extra_headers",
    "connect_timeout",
    "first_token_timeout",
    "idle_timeout",
    "max_retries",
    "enabled",
    "config",
}
PROVIDER_OUTPUT_ONLY = {"id", "type", "api_key_masked", "model_count", "create_time", "update_time"}
MODEL_FIELDS = {
    "provider_id",
    "name",
    "upstream_name",
    "description",
    "context_length",
    "max_output_tokens",
    "embedding_dimensions",
    "online",
    "limits",
    "limits.max_concurrency",
    "limits.requests_per_minute",
    "limits.tokens_per_minute",
    "fallback_model_ids",
    "config",
    "capabilities",
    *(f"capabilities.{name}" for name in CAPABILITIES),
    "access",
}
MODEL_OUTPUT_ONLY = {"id", "type", "status", "create_time", "update_time"}
DEFAULT_FIELDS = {
    "chat_model_id": "chat",
    "flow_model_id": "flow",
    "knowledge_embedding_model_id": "knowledge_embedding",
    "title_model_id": "title",
    "rerank_model_id": "rerank",
}
MAX_TIMEOUT_MS = 3_600_000
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token


def update_paths(mask, message, allowed: set[str], output_only: set[str], kind: str) -> set[str]:
    """The fields an update touches: the mask's paths, or the non-default fields when the mask is empty.
    Output-only fields (as sent back by a client that PATCHes a whole resource) are ignored."""
    paths = set(mask.paths) if mask.paths else {f.name for f, _ in message.ListFields()}
    paths -= output_only
    unknown = paths - allowed
    if unknown:
        raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a {kind}")
    return paths


def to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data or {})
    return struct


def duration_ms(value: duration_pb2.Duration, field: str) -> int:
    ms = value.ToMilliseconds()
    if ms <= 0 or ms > MAX_TIMEOUT_MS:
        raise invalid_argument(field, "must be between 1ms and 1h")
    return ms


def duration(ms: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(ms))
    return d


def conflict(kind: str, name: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", f"a {kind} named {name!r} already exists", {"name": name}
    )


class Catalog:
    def __init__(self, registry: Registry, settings: Settings):
        self.registry = registry
        self.db = registry.db
        self.settings = settings

    # -- providers -----------------------------------------------------------------------------------------------
    def provider_pb(self, row: ProviderRow, model_count: int = 0) -> llm_pb2.Provider:
        s = self.settings
        return llm_pb2.Provider(
            id=row.id,
            name=row.name,
            type=PROVIDER_TYPES[row.type].proto if row.type in PROVIDER_TYPES else llm_pb2.PROVIDER_TYPE_UNSPECIFIED,
            description=row.description,
            base_url=row.base_url,
            api_key_masked=row.api_key_hint,
            extra_headers=row.extra_headers or {},
            connect_timeout=duration(row.connect_timeout_ms or s.llm_connect_timeout_seconds * 1000),
            first_token_timeout=duration(row.first_token_timeout_ms or s.llm_first_token_timeout_seconds * 1000),
            idle_timeout=duration(row.idle_timeout_ms or s.llm_idle_timeout_seconds * 1000),
            max_retries=row.max_retries if row.max_retries is not None else s.llm_max_retries,
            enabled=row.enabled,
            config=to_struct(row.config),
            model_count=model_count,
            create_time=to_timestamp(row.create_time),
            update_time=to_timestamp(row.update_time),
        )

    def _apply_provider(self, row: ProviderRow, pb: llm_pb2.Provider, paths: set[str]) -> None:
        if "name" in paths:
            name = pb.name.strip()
            if not name or len(name) > 128:
                raise invalid_argument("provider.name", "must be 1-128 characters")
            row.name = name
        if "description" in paths:
            row.description = pb.description
        if "base_url" in paths:
            url = pb.base_url.strip()
            rule = PROVIDER_TYPES[row.type].base_url
            if rule == "none" and url:
                raise invalid_argument("provider.base_url", f"a {row.type} provider has no base URL")
            if url:
                parsed = urlparse(url)
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    raise invalid_argument("provider.base_url", "must be an http(s) URL")
            elif rule == "required":
                raise invalid_argument("provider.base_url", f"a {row.type} provider needs a base URL")
            row.base_url = url
        if "api_key" in paths:
            key = pb.api_key.strip()
            row.api_key_encrypted = self.registry.secrets.encrypt(key) if key else None
            row.api_key_hint = mask_key(key)
        if "extra_headers" in paths:
            headers = self._headers(row, dict(pb.extra_headers))
            row.extra_headers_encrypted = self.registry.secrets.encrypt_headers(headers)
            row.extra_headers = mask_headers(headers)
        for field in ("connect_timeout", "first_token_timeout", "idle_timeout"):
            if field in paths:
                value = getattr(pb, field)
                setattr(row, f"{field}_ms", duration_ms(value, f"provider.{field}") if pb.HasField(field) else None)
        if "max_retries" in paths:
            if not 0 <= pb.max_retries <= 10:
                raise invalid_argument("provider.max_retries", "must be between 0 and 10")
            row.max_retries = pb.max_retries
        if "enabled" in paths:
            row.enabled = pb.enabled
        if "config" in paths:
            row.config = struct_dict(pb.config)

    def _headers(self, row: ProviderRow, given: dict[str, str]) -> dict[str, str]:
        """The extra headers to store: as given, except that a value sent back exactly as it is shown (masked)
        keeps the stored value, so a client may PATCH the whole map it read without destroying the secrets."""
        stored = self.registry.secrets.decrypt_headers(row.extra_headers_encrypted) or {}
        shown = row.extra_headers or {}
        headers = {}
        for name, value in given.items():
            if not HEADER_NAME.fullmatch(name):
                raise invalid_argument("provider.extra_headers", f"{name[:64]!r} is not a valid HTTP header name")
            if name in stored and value == shown.get(name):
                value = stored[name]
            elif any(c in value for c in "\r\n\0"):
                raise invalid_argument("provider.extra_headers", f"the value of {name!r} holds a line break")
            headers[name] = value
        return headers

    async def create_provider(self, pb: llm_pb2.Provider) -> llm_pb2.Provider:
        spec = BY_PROTO.get(pb.type)
        if spec is None:
            names = ", ".join(llm_pb2.ProviderType.Name(p).removeprefix("PROVIDER_TYPE_") for p in BY_PROTO)
            raise invalid_argument("provider.type", f"must be one of {names}")
        row = ProviderRow(
            type=spec.name, description="", base_url="", api_key_hint="", extra_headers={}, config={}, enabled=True
        )  # created enabled: proto3 cannot tell "false" from "not sent"
        paths = {"name", "description", "base_url", "api_key", "extra_headers", "config"}
        paths |= {f for f in ("connect_timeout", "first_token_timeout", "idle_timeout") if pb.HasField(f)}
        if pb.max_retries:  # 0 on create means "the platform default"; set 0 explicitly with UpdateProvider
            paths.add("max_retries")
        self._apply_provider(row, pb, paths)
        try:
            async with self.db.session() as session:
                session.add(row)
        except IntegrityError:
            raise conflict("provider", row.name) from None
        await self.registry.changed()
        return self.provider_pb(row)

    async def _provider_row(self, session, provider_id: str) -> ProviderRow:
        row = await session.get(ProviderRow, provider_id) if provider_id else None
        if row is None:
            raise not_found("provider", provider_id)
        return row

    async def _model_count(self, session, provider_id: str) -> int:
        return (
            await session.scalar(select(func.count()).select_from(ModelRow).where(ModelRow.provider_id == provider_id))
            or 0
        )

    async def get_provider(self, provider_id: str) -> llm_pb2.Provider:
        async with self.db.session() as session:
            row = await self._provider_row(session, provider_id)
            return self.provider_pb(row, await self._model_count(session, row.id))

    async def list_providers(self, request: llm_pb2.ListProvidersRequest) -> llm_pb2.ListProvidersResponse:
        size = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        query = select(ProviderRow).order_by(ProviderRow.name).limit(size + 1)
        if request.type:
            spec = BY_PROTO.get(request.type)
            query = query.where(ProviderRow.type == (spec.name if spec else "?"))
        if position:
            query = query.where(ProviderRow.name > str(position.get("name", "")))
        async with self.db.session() as session:
            rows = (await session.scalars(query)).all()
            counts = dict(
                (await session.execute(select(ModelRow.provider_id, func.count()).group_by(ModelRow.provider_id))).all()
            )
        response = llm_pb2.ListProvidersResponse(
            providers=[self.provider_pb(r, counts.get(r.id, 0)) for r in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = paging.encode_token(name=rows[size - 1].name)
        return response

    async def update_provider(self, pb: llm_pb2.Provider, mask) -> llm_pb2.Provider:
        paths = update_paths(mask, pb, PROVIDER_FIELDS, PROVIDER_OUTPUT_ONLY, "provider")
        try:
            async with self.db.session() as session:
                row = await self._provider_row(session, pb.id)
                self._apply_provider(row, pb, paths)
                row.update_time = utcnow()
                await session.flush()
                count = await self._model_count(session, row.id)
        except IntegrityError:
            raise conflict("provider", pb.name) from None
        await self.registry.changed()
        return self.provider_pb(row, count)

    async def delete_provider(self, provider_id: str, force: bool) -> None:
        async with self.db.session() as session:
            row = await self._provider_row(session, provider_id)
            models = (await session.scalars(select(ModelRow).where(ModelRow.provider_id == row.id))).all()
            if models and not force:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "FAILED_PRECONDITION",
                    f"provider {row.name!r} still serves {len(models)} model(s); delete them first or pass force",
                    {"provider_id": row.id, "model_count": str(len(models))},
                )
            for model in models:
                await session.delete(model)
            await session.flush()
            await session.delete(row)
        await self.registry.changed()

    # -- models --------------------------------------------------------------------------------------------------
    def model_pb(self, row: ModelRow, status: llm_pb2.ModelStatus | None = None) -> llm_pb2.Model:
        model = llm_pb2.Model(
            id=row.id,
            provider_id=row.provider_id,
            name=row.name,
            upstream_name=row.upstream_name,
            type=MODEL_TYPE_PB.get(row.type, llm_pb2.MODEL_TYPE_UNSPECIFIED),
            description=row.description,
            context_length=row.context_length,
            max_output_tokens=row.max_output_tokens,
            embedding_dimensions=row.embedding_dimensions,
            online=row.online,
            limits=llm_pb2.ModelLimits(
                max_concurrency=row.max_concurrency,
                requests_per_minute=row.requests_per_minute,
                tokens_per_minute=row.tokens_per_minute,
            ),
            fallback_model_ids=row.fallback_model_ids or [],
            config=to_struct(row.config),
            create_time=to_timestamp(row.create_time),
            update_time=to_timestamp(row.update_time),
            access=ACCESS_PB.get(row.access, llm_pb2.MODEL_ACCESS_EVERYONE),
        )
        provider = self.registry.snapshot.providers.get(row.provider_id)
        effective = capabilities(provider.type if provider else "", row.capabilities)
        model.capabilities.CopyFrom(llm_pb2.ModelCapabilities(**effective))
        if status is not None:
            model.status.CopyFrom(status)
        return model

    async def _apply_model(self, session, row: ModelRow, pb: llm_pb2.Model, paths: set[str]) -> None:
        if "provider_id" in paths:
            provider = await self._provider_row(session, pb.provider_id)
            row.provider_id = provider.id
        if "name" in paths:
            name = pb.name.strip()
            if not name or len(name) > 255:
                raise invalid_argument("model.name", "must be 1-255 characters")
            row.name = name
        if "upstream_name" in paths:
            row.upstream_name = pb.upstream_name.strip()
        if "description" in paths:
            row.description = pb.description
        for field in ("context_length", "max_output_tokens", "embedding_dimensions"):
            if field in paths:
                if getattr(pb, field) < 0:
                    raise invalid_argument(f"model.{field}", "must not be negative")
                setattr(row, field, getattr(pb, field))
        if "online" in paths:
            row.online = pb.online
        for field in ("max_concurrency", "requests_per_minute", "tokens_per_minute"):
            if "limits" in paths or f"limits.{field}" in paths:
                if getattr(pb.limits, field) < 0:
                    raise invalid_argument(f"model.limits.{field}", "must not be negative (0 = unlimited)")
                setattr(row, field, getattr(pb.limits, field))
        if "fallback_model_ids" in paths:
            ids = list(dict.fromkeys(pb.fallback_model_ids))
            for ref in ids:
                other = await session.get(ModelRow, ref)
                if other is None:
                    raise invalid_argument("model.fallback_model_ids", f"model {ref!r} does not exist")
                if other.id == row.id:
                    raise invalid_argument("model.fallback_model_ids", "a model cannot fall back to itself")
                if other.type != row.type:
                    raise invalid_argument("model.fallback_model_ids", f"{other.name!r} is a {other.type} model")
            row.fallback_model_ids = ids
        if "config" in paths:
            row.config = struct_dict(pb.config)
        if "access" in paths:
            if pb.access not in ACCESS and pb.access != llm_pb2.MODEL_ACCESS_UNSPECIFIED:
                raise invalid_argument("model.access", "MODEL_ACCESS_EVERYONE or MODEL_ACCESS_RESTRICTED")
            row.access = ACCESS.get(pb.access, EVERYONE)
        overrides = dict(row.capabilities or {})
        for name in CAPABILITIES:
            if "capabilities" in paths or f"capabilities.{name}" in paths:
                if pb.capabilities.HasField(name):
                    overrides[name] = getattr(pb.capabilities, name)
                else:  # unset: back to the provider type's default
                    overrides.pop(name, None)
        row.capabilities = overrides
        provider = await self._provider_row(session, row.provider_id)
        if known := PROVIDER_TYPES[provider.type].known_models:
            upstream = row.upstream_name or row.name
            if known.get(upstream) != row.type:
                served = ", ".join(f"{n} ({t})" for n, t in known.items())
                raise invalid_argument("model.upstream_name", f"the {provider.type} provider serves {served}")

    async def create_model(self, pb: llm_pb2.Model) -> llm_pb2.Model:
        kind = MODEL_TYPES.get(pb.type)
        if kind is None:
            raise invalid_argument("model.type", "must be LLM, EMBEDDING or RERANK")
        row = ModelRow(type=kind, description="", upstream_name="", config={}, fallback_model_ids=[], capabilities={})
        try:
            async with self.db.session() as session:
                await self._apply_model(session, row, pb, MODEL_FIELDS)
                session.add(row)
        except IntegrityError:
            raise conflict("model", pb.name) from None
        await self.registry.changed()
        return self.model_pb(row)

    async def model_row(self, ref: str) -> ModelRow:
        async with self.db.session() as session:
            row = await session.get(ModelRow, ref) if ref else None
            if row is None and ref:
                row = await session.scalar(select(ModelRow).where(ModelRow.name == ref))
        if row is None:
            raise TypecaseError(
                grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", f"model {ref!r} not found", {"model_id": ref}
            )
        return row

    async def list_models(
        self, request: llm_pb2.ListModelsRequest, online_only: bool, visible: ColumnElement[bool] | None = None
    ) -> tuple[list[ModelRow], str, int]:
        size = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        filters = [] if visible is None else [visible]
        if request.type:
            filters.append(ModelRow.type == MODEL_TYPES.get(request.type, "?"))
        if online_only:
            filters.append(ModelRow.online.is_(True))
        elif request.HasField("online"):
            filters.append(ModelRow.online.is_(request.online))
        if request.provider_id:
            filters.append(ModelRow.provider_id == request.provider_id)
        if request.keyword:
            pattern = f"%{request.keyword.lower()}%"
            filters.append(
                or_(func.lower(ModelRow.name).like(pattern), func.lower(ModelRow.upstream_name).like(pattern))
            )
        query = select(ModelRow).where(*filters).order_by(ModelRow.name).limit(size + 1)
        if position:
            query = query.where(ModelRow.name > str(position.get("name", "")))
        async with self.db.session() as session:
            rows = (await session.scalars(query)).all()
            total = await session.scalar(select(func.count()).select_from(ModelRow).where(*filters)) or 0
        token = paging.encode_token(name=rows[size - 1].name) if len(rows) > size else ""
        return list(rows[:size]), token, total

    async def update_model(self, pb: llm_pb2.Model, mask) -> ModelRow:
        paths = update_paths(mask, pb, MODEL_FIELDS, MODEL_OUTPUT_ONLY, "model")
        try:
            async with self.db.session() as session:
                row = await session.get(ModelRow, pb.id) if pb.id else None
                if row is None:
                    raise TypecaseError(
                        grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", f"model {pb.id!r} not found", {"model_id": pb.id}
                    )
                await self._apply_model(session, row, pb, paths)
                row.update_time = utcnow()
        except IntegrityError:
            raise conflict("model", pb.name) from None
        await self.registry.changed()
        return row

    async def delete_model(self, model_id: str) -> None:
        async with self.db.session() as session:
            row = await session.get(ModelRow, model_id) if model_id else None
            if row is None:
                raise TypecaseError(
                    grpc.StatusCode.NOT_FOUND,
                    "MODEL_NOT_FOUND",
                    f"model {model_id!r} not found",
                    {"model_id": model_id},
                )
            await sharing.forget(session, sharing.MODEL, row.id)
            await session.delete(row)
        await self.registry.changed()

    # -- defaults ------------------------------------------------------------------------------------------------
    async def get_defaults(self) -> llm_pb2.LLMDefaults:
        async with self.db.session() as session:
            rows = (await session.scalars(select(DefaultRow))).all()
        defaults = llm_pb2.LLMDefaults()
        by_use = {r.purpose: r for r in rows}
        for field, use in DEFAULT_FIELDS.items():
            if use in by_use:
                setattr(defaults, field, by_use[use].model_id)
        newest = to_timestamp(max(r.update_time for r in rows)) if rows else None
        if newest is not None:
            defaults.update_time.CopyFrom(newest)
        return defaults

    async def update_defaults(self, pb: llm_pb2.LLMDefaults, mask) -> llm_pb2.LLMDefaults:
        paths = update_paths(mask, pb, set(DEFAULT_FIELDS), {"update_time"}, "defaults")
        now = utcnow()
        async with self.db.session() as session:
            for field in sorted(paths):
                use, model_id = DEFAULT_FIELDS[field], getattr(pb, field)
                if model_id:
                    model = await session.get(ModelRow, model_id)
                    if model is None:
                        model = await session.scalar(select(ModelRow).where(ModelRow.name == model_id))
                    if model is None:
                        raise TypecaseError(
                            grpc.StatusCode.NOT_FOUND,
                            "MODEL_NOT_FOUND",
                            f"model {model_id!r} not found",
                            {"model_id": model_id, "field": field},
                        )
                    if model.type != USE_TYPES[use]:
                        raise invalid_argument(
                            f"defaults.{field}",
                            f"{model.name!r} is a {model.type} model; {use} needs a {USE_TYPES[use]} model",
                        )
                    model_id = model.id
                row = await session.get(DefaultRow, use)
                if row is None:
                    session.add(DefaultRow(purpose=use, model_id=model_id, update_time=now))
                else:
                    row.model_id, row.update_time = model_id, now
        await self.registry.changed()
        return await self.get_defaults()
