"""Providers, models and defaults over real gRPC: persistence, secrets, validation, paging, permissions."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
import redis.asyncio
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from tests.conftest import REDIS_URL
from tests.llm.conftest import ADMIN, error_details, seconds, text_of
from typecase.server.llm.models import ProviderRow
from typecase.server.rpc import principal
from typecase.v1 import auth_pb2, auth_pb2_grpc, llm_pb2


async def _failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def test_api_key_is_stored_encrypted_and_only_ever_returned_masked(app, llm, upstream):
    provider = await llm.provider(
        upstream.base_url + "/v1",
        api_key="sk-live-0123456789-0123456789-abcd",
        extra_headers={"x-org": "acme", "User-Agent": "acme-agent/1"},
        connect_timeout=seconds(2),
    )
    assert provider.api_key == "" and provider.api_key_masked == "sk-****abcd"
    assert provider.connect_timeout.seconds == 2 and provider.first_token_timeout.seconds == 60  # default shown
    assert provider.max_retries == 2 and provider.enabled
    async with app.resources.db.session() as session:
        row = await session.scalar(select(ProviderRow).where(ProviderRow.id == provider.id))
    assert "0123456789" not in (row.api_key_encrypted or "") and row.api_key_encrypted

    fetched = (await llm.stub.GetProvider(llm_pb2.GetProviderRequest(provider_id=provider.id), metadata=ADMIN)).provider
    assert fetched.api_key == "" and fetched.api_key_masked == "sk-****abcd"

    model = await llm.model(provider.id, "m1")
    await llm.generate(model.id)
    assert upstream.seen[-1].headers["authorization"] == "Bearer sk-live-0123456789-0123456789-abcd"
    assert upstream.seen[-1].headers["x-org"] == "acme"
    assert upstream.seen[-1].headers["user-agent"] == "acme-agent/1"  # a provider's header wins over ours

    updated = (
        await llm.stub.UpdateProvider(
            llm_pb2.UpdateProviderRequest(
                provider=llm_pb2.Provider(id=provider.id, api_key="sk-rotated-key-9999"), update_mask=mask("api_key")
            ),
            metadata=ADMIN,
        )
    ).provider
    assert updated.api_key_masked == "****" and updated.model_count == 1  # under 32 characters: nothing shown
    await llm.generate(model.id)  # applies to the next request at once
    assert upstream.seen[-1].headers["authorization"] == "Bearer sk-rotated-key-9999"


async def test_update_with_mask_and_with_set_fields(llm, upstream):
    provider = await llm.provider(upstream.base_url + "/v1")
    model = await llm.model(provider.id, "m1", context_length=4096)
    reply = await llm.stub.UpdateModel(
        llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=model.id, online=False, limits=llm_pb2.ModelLimits(max_concurrency=4)),
            update_mask=mask("online", "limits.max_concurrency"),
        ),
        metadata=ADMIN,
    )
    assert not reply.model.online and reply.model.limits.max_concurrency == 4 and reply.model.context_length == 4096
    # No mask over gRPC: the fields set to non-default values.
    reply = await llm.stub.UpdateModel(
        llm_pb2.UpdateModelRequest(model=llm_pb2.Model(id=model.id, description="now described")), metadata=ADMIN
    )
    assert reply.model.description == "now described" and reply.model.limits.max_concurrency == 4
    error = await _failure(
        llm.stub.UpdateModel(
            llm_pb2.UpdateModelRequest(model=llm_pb2.Model(id=model.id), update_mask=mask("nonsense")), metadata=ADMIN
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_validation(llm, upstream):
    bad = [
        llm_pb2.Provider(name="x", type=llm_pb2.PROVIDER_TYPE_UNSPECIFIED, base_url="http://a"),
        llm_pb2.Provider(name="x", type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE),
        llm_pb2.Provider(name="x", type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url="ftp://a"),
        llm_pb2.Provider(name="", type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url="http://a"),
        llm_pb2.Provider(name="x", type=llm_pb2.PROVIDER_TYPE_LOCAL, base_url="http://a"),
    ]
    for provider in bad:
        error = await _failure(
            llm.stub.CreateProvider(llm_pb2.CreateProviderRequest(provider=provider), metadata=ADMIN)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, provider
    provider = await llm.provider(upstream.base_url + "/v1")
    error = await _failure(llm.provider(upstream.base_url + "/v1"))  # same name
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    embedder = await llm.model(provider.id, "embedder", model_type=llm_pb2.MODEL_TYPE_EMBEDDING)
    error = await _failure(llm.model(provider.id, "chat", fallback_model_ids=[embedder.id]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "embedding" in error.details()
    error = await _failure(llm.model("nope", "chat"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await _failure(llm.model(provider.id, "embedder"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_delete_provider_needs_force_while_models_use_it(llm, upstream):
    provider = await llm.provider(upstream.base_url + "/v1")
    model = await llm.model(provider.id, "m1")
    error = await _failure(
        llm.stub.DeleteProvider(llm_pb2.DeleteProviderRequest(provider_id=provider.id), metadata=ADMIN)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    await llm.stub.DeleteProvider(llm_pb2.DeleteProviderRequest(provider_id=provider.id, force=True), metadata=ADMIN)
    error = await _failure(llm.get_model(model.id))
    assert error_details(error)[0].reason == "MODEL_NOT_FOUND"
    error = await _failure(llm.generate(model.id))  # the snapshot forgot it too
    assert error_details(error)[0].reason == "MODEL_NOT_FOUND"


async def test_list_pages_and_filters(llm, upstream):
    provider = await llm.provider(upstream.base_url + "/v1")
    for i in range(5):
        await llm.model(provider.id, f"page-{i}", online=i % 2 == 0)
    seen, token = [], ""
    while True:
        reply = await llm.stub.ListModels(
            llm_pb2.ListModelsRequest(page_size=2, page_token=token, provider_id=provider.id), metadata=ADMIN
        )
        seen += [m.name for m in reply.models]
        assert reply.total_size == 5
        token = reply.next_page_token
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(5)]
    reply = await llm.stub.ListModels(llm_pb2.ListModelsRequest(online=False, keyword="PAGE"), metadata=ADMIN)
    assert [m.name for m in reply.models] == ["page-1", "page-3"]
    assert all(m.status.breaker_state == llm_pb2.BREAKER_STATE_CLOSED for m in reply.models)
    providers = await llm.stub.ListProviders(
        llm_pb2.ListProvidersRequest(type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE), metadata=ADMIN
    )
    assert [(p.name, p.model_count) for p in providers.providers] == [("fake", 5)]


async def test_defaults_are_validated(llm, upstream):
    provider = await llm.provider(upstream.base_url + "/v1")
    chat = await llm.model(provider.id, "chat-model")
    error = await _failure(
        llm.stub.UpdateDefaults(
            llm_pb2.UpdateDefaultsRequest(defaults=llm_pb2.LLMDefaults(knowledge_embedding_model_id=chat.id)),
            metadata=ADMIN,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await llm.stub.UpdateDefaults(
        llm_pb2.UpdateDefaultsRequest(defaults=llm_pb2.LLMDefaults(title_model_id="chat-model")), metadata=ADMIN
    )  # by name
    assert reply.defaults.title_model_id == chat.id and reply.defaults.chat_model_id  # the local default stays
    reply = await llm.stub.UpdateDefaults(
        llm_pb2.UpdateDefaultsRequest(defaults=llm_pb2.LLMDefaults(), update_mask=mask("title_model_id")),
        metadata=ADMIN,
    )  # cleared
    assert reply.defaults.title_model_id == ""


async def test_users_read_but_only_admins_write(app, llm, upstream):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        created = await auth.CreateUser(
            auth_pb2.CreateUserRequest(
                user=auth_pb2.User(username="alice", password="correct horse battery", role=auth_pb2.USER_ROLE_USER)
            ),
            metadata=ADMIN,
        )
        key = await auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="k", owner_id=created.user.id)), metadata=ADMIN
        )
    alice = (("authorization", f"Bearer {key.secret}"),)
    provider = await llm.provider(upstream.base_url + "/v1")
    online = await llm.model(provider.id, "visible")
    await llm.model(provider.id, "hidden", online=False)
    error = await _failure(
        llm.stub.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name="mine", type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url="http://a"
                )
            ),
            metadata=alice,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await llm.stub.ListModels(llm_pb2.ListModelsRequest(provider_id=provider.id), metadata=alice)
    assert [m.name for m in reply.models] == ["visible"]  # non-admins see online models only
    messages = [
        m
        async for m in llm.stub.Generate(
            llm_pb2.GenerateRequest(model_id=online.id, messages=[llm_pb2.ChatMessage(role=2, content="hi")]),
            metadata=alice,
        )
    ]
    assert text_of(messages)
    error = await _failure(llm.stub.TestModel(llm_pb2.TestModelRequest(model_id=online.id), metadata=alice))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await _failure(llm.stub.ListModels(llm_pb2.ListModelsRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_changes_reach_another_replica_through_the_bus(make_app, upstream):
    """Two apps on one database and one Redis bus: a write on one is served by the other without a restart."""
    redis_url = f"{REDIS_URL}/11"
    first = await make_app(redis_url=redis_url)
    second = await make_app(
        redis_url=redis_url, database_url=first.resources.db.url.render_as_string(hide_password=False)
    )
    try:
        name = f"bus-{uuid.uuid4().hex[:6]}"
        token = principal.bind(principal.Principal("admin", principal.ROLE_ADMIN))
        catalog = first.servicers["LLMService"].catalog
        provider = await catalog.create_provider(
            llm_pb2.Provider(
                name=name, type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url=upstream.base_url + "/v1"
            )
        )
        model = await catalog.create_model(
            llm_pb2.Model(provider_id=provider.id, name=name, online=True, type=llm_pb2.MODEL_TYPE_LLM)
        )
        principal.bind_reset(token)
        other = second.servicers["LLMService"].registry
        for _ in range(100):
            if other.snapshot.model(name) is not None:
                break
            await asyncio.sleep(0.02)
        assert other.snapshot.model(name).id == model.id
    finally:
        await redis.asyncio.Redis.from_url(redis_url).flushdb()


async def test_the_current_model_a_turn_start_reads_follows_changes_made_on_another_replica(make_app, upstream):
    """current_model (a turn start's lookup: no SQL, no Redis) is served from the snapshot, which the bus refreshes:
    a model taken offline or given a new window on one replica is seen so on the other, and a model created on the
    other replica a moment ago is found before any message arrives."""
    redis_url = f"{REDIS_URL}/11"
    first = await make_app(redis_url=redis_url)
    second = await make_app(
        redis_url=redis_url, database_url=first.resources.db.url.render_as_string(hide_password=False)
    )
    try:
        name = f"cur-{uuid.uuid4().hex[:6]}"
        token = principal.bind(principal.Principal("admin", principal.ROLE_ADMIN))
        catalog = first.servicers["LLMService"].catalog
        provider = await catalog.create_provider(
            llm_pb2.Provider(
                name=name, type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, base_url=upstream.base_url + "/v1"
            )
        )
        other = second.servicers["LLMService"]
        model = await catalog.create_model(
            llm_pb2.Model(
                provider_id=provider.id, name=name, online=True, type=llm_pb2.MODEL_TYPE_LLM, context_length=4096
            )
        )
        seen = await other.current_model(model.id)  # from SQL when the snapshot does not have it yet
        assert (seen.id, seen.online, seen.context_length) == (model.id, True, 4096)

        await catalog.update_model(llm_pb2.Model(id=model.id, online=False, context_length=8192), mask("online"))
        await catalog.update_model(llm_pb2.Model(id=model.id, context_length=8192), mask("context_length"))
        for _ in range(100):
            seen = await other.current_model(model.id)
            if not seen.online and seen.context_length == 8192:
                break
            await asyncio.sleep(0.02)
        assert (seen.online, seen.context_length) == (False, 8192)
        principal.bind_reset(token)
    finally:
        await redis.asyncio.Redis.from_url(redis_url).flushdb()
