"""Chat test fixtures: the real App with a fake OpenAI-compatible upstream registered as its default chat model,
gRPC stubs, and ordinary users."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from tests.chat.fake_upstream import FakeUpstream
from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc, chat_pb2_grpc, llm_pb2, llm_pb2_grpc


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


@dataclass
class Caller:
    """One authenticated caller's stubs; `md` is its call metadata."""

    chat: chat_pb2_grpc.ChatServiceStub
    llm: llm_pb2_grpc.LLMServiceStub
    auth: auth_pb2_grpc.AuthServiceStub
    md: tuple
    user_id: str = ""


async def register_fake_model(
    llm: llm_pb2_grpc.LLMServiceStub,
    base_url: str,
    name: str = "fake-chat",
    context_length: int = 8192,
    make_default: bool = True,
) -> llm_pb2.Model:
    admin = bearer(ADMIN_KEY)
    provider = (
        await llm.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name=f"fake-{name}",
                    type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                    base_url=base_url,
                    enabled=True,
                    max_retries=0,
                )
            ),
            metadata=admin,
        )
    ).provider
    model = (
        await llm.CreateModel(
            llm_pb2.CreateModelRequest(
                model=llm_pb2.Model(
                    provider_id=provider.id,
                    name=name,
                    upstream_name="fake",
                    type=llm_pb2.MODEL_TYPE_LLM,
                    context_length=context_length,
                    online=True,
                )
            ),
            metadata=admin,
        )
    ).model
    if make_default:
        await llm.UpdateDefaults(
            llm_pb2.UpdateDefaultsRequest(
                defaults=llm_pb2.LLMDefaults(chat_model_id=model.id, title_model_id=model.id),
                update_mask={"paths": ["chat_model_id", "title_model_id"]},
            ),
            metadata=admin,
        )
    return model


async def register_fake_embedder(llm: llm_pb2_grpc.LLMServiceStub, base_url: str) -> llm_pb2.Model:
    from tests.chat.fake_upstream import EMBED_DIMS

    admin = bearer(ADMIN_KEY)
    provider = (
        await llm.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name="fake-embedder",
                    type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                    base_url=base_url,
                    enabled=True,
                )
            ),
            metadata=admin,
        )
    ).provider
    return (
        await llm.CreateModel(
            llm_pb2.CreateModelRequest(
                model=llm_pb2.Model(
                    provider_id=provider.id,
                    name="fake-embedder",
                    upstream_name="fake",
                    type=llm_pb2.MODEL_TYPE_EMBEDDING,
                    embedding_dimensions=EMBED_DIMS,
                    online=True,
                )
            ),
            metadata=admin,
        )
    ).model


@pytest.fixture
async def upstream():
    fake = await FakeUpstream().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def chat_app(app_factory, request):
    marker = request.node.get_closest_marker("app_settings")
    return await app_factory(**(marker.kwargs if marker else {}))


@pytest.fixture
async def channel(chat_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{chat_app.grpc_port}") as channel:
        yield channel


def caller(channel, credential: str, user_id: str = "") -> Caller:
    return Caller(
        chat_pb2_grpc.ChatServiceStub(channel),
        llm_pb2_grpc.LLMServiceStub(channel),
        auth_pb2_grpc.AuthServiceStub(channel),
        bearer(credential),
        user_id,
    )


@pytest.fixture
async def admin(channel) -> Caller:
    me = await auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))
    return caller(channel, ADMIN_KEY, me.user.id)


@pytest.fixture
async def fake_model(admin, upstream) -> llm_pb2.Model:
    return await register_fake_model(admin.llm, upstream.base_url)


async def new_user(channel, username: str) -> Caller:
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    user = (
        await auth.CreateUser(
            auth_pb2.CreateUserRequest(
                user=auth_pb2.User(username=username, password="correct horse battery", role=auth_pb2.USER_ROLE_USER)
            ),
            metadata=bearer(ADMIN_KEY),
        )
    ).user
    token = (await auth.Login(auth_pb2.LoginRequest(username=username, password="correct horse battery"))).access_token
    return caller(channel, token, user.id)


@pytest.fixture
async def me(admin, fake_model) -> Caller:
    """The admin as a chat user: tests of turns need no second identity (and skip password hashing)."""
    return admin


@pytest.fixture
async def alice(channel, fake_model) -> Caller:
    return await new_user(channel, "alice")


@pytest.fixture
async def bob(channel, fake_model) -> Caller:
    return await new_user(channel, "bob")


def pytest_configure(config):
    config.addinivalue_line("markers", "app_settings(**overrides): settings for this test's chat_app")
