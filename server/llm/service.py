"""LLMService: the gRPC servicer and the Python API other domains call (no gRPC hop).

Python API (kept stable for chat, knowledge and flow):
  generate(request) -> async iterator of GenerateResponse   embed_texts(texts, model_id="") -> vectors
  embedding_dimensions(model_id="") -> int                  get_model(model_id) -> Model
  current_model(model_id) -> Model (the registry snapshot's, no live status)
  default_model_id(use) -> str  (use: chat | flow | knowledge_embedding | title | rerank)
  complete(request) -> CompleteResponse                       rerank(request) -> RerankResponse
The Python API does not check the caller (the calling domain already did); the RPCs do. The exception is a
restricted model (llm/access.py): generate and complete refuse it to a bound caller who may not use it.

Every change to providers, models and defaults is audited with the resource as admins see it before and after
(secrets already masked by the catalog's conversion).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import cast

from google.protobuf.json_format import MessageToDict
from google.rpc import status_pb2

from typecase.server.config import Settings
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.cache import Cache
from typecase.server.infra.slots import Concurrency
from typecase.server.infra.sql import Database
from typecase.server.llm.access import ModelAccess, bound_caller, visible_filter
from typecase.server.llm.catalog import Catalog
from typecase.server.llm.inference import Inference
from typecase.server.llm.models import ModelRow
from typecase.server.llm.registry import USES, Registry
from typecase.server.llm.resilience import Breaker, RateLimits, StatusLog
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import llm_pb2, llm_pb2_grpc

log = logging.getLogger("typecase.llm")

EMBED_INPUT_TYPES = {llm_pb2.EMBEDDING_INPUT_TYPE_QUERY: "query", llm_pb2.EMBEDDING_INPUT_TYPE_DOCUMENT: "document"}


class LLMService(llm_pb2_grpc.LLMServiceServicer):
    def __init__(
        self,
        settings: Settings,
        db: Database,
        cache: Cache,
        audit: AuditLog | None = None,
        *,
        concurrency: Concurrency,
        limits_storage,
    ):
        """`concurrency` (in-flight slots per model) and `limits_storage` (rate windows) are built by resources.py:
        shared through Redis across replicas, or this process's own."""
        self.settings = settings
        self.audit = audit
        self.registry = Registry(db, cache, settings)
        self.catalog = Catalog(self.registry, settings)
        self.access = ModelAccess(db)
        self.breaker = Breaker(cache, settings.llm_breaker_failure_threshold, settings.llm_breaker_cooldown_seconds)
        self.concurrency = concurrency
        self.status_log = StatusLog(cache)
        self._current_models: dict[tuple[int, str], llm_pb2.Model] = {}  # by (registry version, id)
        self.inference = Inference(
            self.registry,
            settings,
            self.breaker,
            self.concurrency,
            RateLimits(limits_storage),
            self.status_log,
        )

    async def start(self) -> None:
        await self.registry.start()
        await self.concurrency.start()

    async def stop(self) -> None:
        await self.registry.stop()
        await self.concurrency.stop()
        await self.inference.aclose()

    # -- Python API ----------------------------------------------------------------------------------------------
    def generate(self, request: llm_pb2.GenerateRequest) -> AsyncGenerator[llm_pb2.GenerateResponse, None]:
        """The Generate stream: seq-numbered deltas, then a final message with finish_reason and usage.
        Raises TypecaseError (before the first message, or mid-stream after it); closing the iterator or
        cancelling its consumer closes the upstream call at once. Inference's own stream, with the caller's access
        checked on the model it resolves (an async generator of its own here cost every message a step, and the
        model was resolved twice for a caller who is not an admin)."""
        return self.inference.generate(request, self._check_model)

    async def _check_model(self, model: ModelRow, ref: str) -> None:
        principal = bound_caller()
        if principal is not None and not principal.is_admin:
            await self.access.check(model, ref, principal)

    async def complete(self, request: llm_pb2.CompleteRequest) -> llm_pb2.CompleteResponse:
        await self.check_access(request.model_id, "chat", "llm")
        return await self.inference.complete(request)

    async def check_access(self, ref: str, use: str, model_type: str) -> None:
        """MODEL_NOT_FOUND when the bound caller may not use the model `ref` (or the default for `use`) names."""
        principal = bound_caller()
        if principal is not None and not principal.is_admin:
            await self.access.check(await self.inference.resolve(ref, use, model_type), ref, principal)

    async def usable_models(self, models: list[ModelRow]) -> list[ModelRow]:
        """The models of `models` the bound caller may use (for model lists outside gRPC)."""
        return await self.access.usable(models, bound_caller())

    async def rerank(self, request: llm_pb2.RerankRequest) -> llm_pb2.RerankResponse:
        """Rerank without a caller check (empty model_id: the default rerank model)."""
        return await self.inference.rerank(request)

    async def embed_texts(self, texts: list[str], model_id: str = "", *, input_type: str = "") -> list[list[float]]:
        """One vector per text, any number of texts (sent upstream in batches of llm_embed_batch_size);
        empty model_id: the default knowledge-embedding model."""
        _, vectors, _ = await self.inference.embed(model_id, list(texts), input_type=input_type)
        return vectors

    async def embedding_dimensions(self, model_id: str = "") -> int:
        return await self.inference.embedding_dimensions(model_id)

    async def get_model(self, model_id: str) -> llm_pb2.Model:
        row = await self.catalog.model_row(model_id)
        return self.catalog.model_pb(row, await self.status(row))

    async def current_model(self, model_id: str) -> llm_pb2.Model:
        """The model as this replica's registry snapshot has it (kept current across replicas by the bus), without
        its live status: what a turn start needs, with no SQL and no cache round trip. A model the snapshot does
        not know yet (just created on another replica) is read like get_model."""
        row = self.registry.snapshot.model(model_id)
        if row is None:
            return await self.get_model(model_id)
        key = (self.registry.version, row.id)
        if (hit := self._current_models.get(key)) is None:
            if len(self._current_models) > 1000:
                self._current_models.clear()
            hit = self._current_models[key] = self.catalog.model_pb(row)
        return hit

    async def default_model_id(self, use: str) -> str:
        if use not in USES:
            raise ValueError(f"unknown default use {use!r}; one of {', '.join(USES)}")
        return self.registry.snapshot.defaults.get(use, "")

    async def status(self, row: ModelRow) -> llm_pb2.ModelStatus:
        state, failures, open_until = await self.breaker.state(row.id)
        status = llm_pb2.ModelStatus(
            breaker_state=cast(llm_pb2.BreakerState, state),
            consecutive_failures=failures,
            in_flight=await self.concurrency.count(row.id),
        )
        if open_until and state == llm_pb2.BREAKER_STATE_OPEN:
            status.open_until.FromNanoseconds(int(open_until * 1e9))
        error, success = await self.status_log.read(row.id)
        if error:
            status.last_error.CopyFrom(status_pb2.Status(code=error["code"], message=error["message"]))
            status.last_error_time.FromNanoseconds(int(error["time"] * 1e9))
        if success:
            status.last_success_time.FromNanoseconds(int(success * 1e9))
        return status

    async def _audit(self, action: str, resource_type: str, resource_id: str, before, after) -> None:
        if self.audit is None:
            return
        shown = {}
        if before is not None:
            shown["before"] = MessageToDict(before, preserving_proto_field_name=True)
        if after is not None:
            shown["after"] = MessageToDict(after, preserving_proto_field_name=True)
        await self.audit.record(
            action,
            actor_id=caller.current().user_id,
            resource_type=resource_type,
            resource_id=resource_id,
            detail=shown,
        )

    async def _model_pb(self, model_id: str) -> llm_pb2.Model:
        return self.catalog.model_pb(await self.catalog.model_row(model_id), llm_pb2.ModelStatus())

    # -- providers -----------------------------------------------------------------------------------------------
    async def CreateProvider(self, request, context):
        caller.require_permission("models.manage")
        provider = await self.catalog.create_provider(request.provider)
        await self._audit("provider.create", "provider", provider.id, None, provider)
        return llm_pb2.CreateProviderResponse(provider=provider)

    async def ListProviders(self, request, context):
        caller.current()
        return await self.catalog.list_providers(request)

    async def GetProvider(self, request, context):
        caller.current()
        return llm_pb2.GetProviderResponse(provider=await self.catalog.get_provider(request.provider_id))

    async def UpdateProvider(self, request, context):
        caller.require_permission("models.manage")
        before = await self.catalog.get_provider(request.provider.id)
        provider = await self.catalog.update_provider(request.provider, request.update_mask)
        await self._audit("provider.update", "provider", provider.id, before, provider)
        return llm_pb2.UpdateProviderResponse(provider=provider)

    async def DeleteProvider(self, request, context):
        caller.require_permission("models.manage")
        before = await self.catalog.get_provider(request.provider_id)
        await self.catalog.delete_provider(request.provider_id, request.force)
        await self._audit("provider.delete", "provider", request.provider_id, before, None)
        return llm_pb2.DeleteProviderResponse()

    # -- models --------------------------------------------------------------------------------------------------
    async def CreateModel(self, request, context):
        caller.require_permission("models.manage")
        model = await self.catalog.create_model(request.model)
        await self._audit("model.create", "model", model.id, None, model)
        return llm_pb2.CreateModelResponse(model=model)

    async def ListModels(self, request, context):
        principal = caller.current()
        rows, token, total = await self.catalog.list_models(
            request, online_only=not principal.can("models.manage"), visible=visible_filter(principal)
        )
        statuses = await asyncio.gather(*(self.status(row) for row in rows))
        models = [self.catalog.model_pb(row, status) for row, status in zip(rows, statuses)]
        return llm_pb2.ListModelsResponse(models=models, next_page_token=token, total_size=total)

    async def GetModel(self, request, context):
        principal = caller.current()
        row = await self.catalog.model_row(request.model_id)
        await self.access.check(row, request.model_id, principal)
        return llm_pb2.GetModelResponse(model=self.catalog.model_pb(row, await self.status(row)))

    async def UpdateModel(self, request, context):
        caller.require_permission("models.manage")
        before = await self._model_pb(request.model.id)
        row = await self.catalog.update_model(request.model, request.update_mask)
        await self._audit("model.update", "model", row.id, before, self.catalog.model_pb(row, llm_pb2.ModelStatus()))
        return llm_pb2.UpdateModelResponse(model=self.catalog.model_pb(row, await self.status(row)))

    async def DeleteModel(self, request, context):
        caller.require_permission("models.manage")
        before = await self._model_pb(request.model_id)
        await self.catalog.delete_model(request.model_id)
        await self._audit("model.delete", "model", before.id, before, None)
        return llm_pb2.DeleteModelResponse()

    # -- inference -----------------------------------------------------------------------------------------------
    async def Generate(self, request, context):
        caller.current()
        stream = self.generate(request)
        try:
            async for response in stream:
                yield response
        finally:
            await stream.aclose()

    async def Complete(self, request, context):
        caller.current()
        return await self.complete(request)

    async def Embed(self, request, context):
        caller.current()
        if request.dimensions < 0:
            raise invalid_argument("dimensions", "must not be negative")
        if len(request.inputs) > self.settings.llm_max_embed_inputs:  # the Python API batches any number
            raise invalid_argument("inputs", f"at most {self.settings.llm_max_embed_inputs} texts per call")
        await self.check_access(request.model_id, "knowledge_embedding", "embedding")
        model, vectors, tokens = await self.inference.embed(
            request.model_id,
            list(request.inputs),
            dimensions=request.dimensions,
            input_type=EMBED_INPUT_TYPES.get(request.input_type, ""),
        )
        response = llm_pb2.EmbedResponse(served_model_id=model.id)
        response.usage.prompt_tokens = response.usage.total_tokens = tokens
        for i, vector in enumerate(vectors):
            response.embeddings.add(index=i, values=vector)
        return response

    async def Rerank(self, request, context):
        caller.current()
        await self.check_access(request.model_id, "rerank", "rerank")
        return await self.inference.rerank(request)

    async def TestModel(self, request, context):
        caller.require_permission("models.manage")
        row = await self.catalog.model_row(request.model_id)
        return await self.inference.test(row, request.prompt)

    # -- defaults ------------------------------------------------------------------------------------------------
    async def GetDefaults(self, request, context):
        caller.current()
        return llm_pb2.GetDefaultsResponse(defaults=await self.catalog.get_defaults())

    async def UpdateDefaults(self, request, context):
        caller.require_permission("models.manage")
        before = await self.catalog.get_defaults()
        defaults = await self.catalog.update_defaults(request.defaults, request.update_mask)
        await self._audit("defaults.update", "defaults", "llm", before, defaults)
        return llm_pb2.UpdateDefaultsResponse(defaults=defaults)
