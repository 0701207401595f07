"""Fixtures of the LLM suite: the fake upstream (a real HTTP server), the real App with fast resilience settings,
and a small gRPC client."""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import ADMIN_KEY
from tests.llm.fake_upstream import FakeUpstream
from typecase.v1 import common_pb2, llm_pb2, llm_pb2_grpc

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
FAST = dict(  # resilience settings that keep fault tests short
    llm_retry_backoff_seconds=0.01,
    llm_retry_backoff_max_seconds=0.05,
    llm_retry_after_max_seconds=2.0,
    llm_breaker_failure_threshold=3,
    llm_breaker_cooldown_seconds=0.6,
    llm_concurrency_wait_seconds=0.2,
)


@pytest.fixture(scope="session")
def upstream_server():
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server):
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
async def make_app(tmp_path, monkeypatch):
    """Start the real App (gRPC + HTTP + every interceptor) with LLM settings overridden; stopped at the end."""
    from typecase.server.app import App
    from typecase.server.config import Settings

    for name in list(os.environ):
        if name.startswith("TYPECASE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    apps = []

    async def make(**overrides):
        settings = Settings(
            data_dir=tmp_path / f"data{len(apps)}",
            grpc_port=0,
            http_port=0,
            admin_api_key=ADMIN_KEY,
            shutdown_grace_seconds=1,
            rate_limit_per_key="100000/minute",
            _env_file=None,
            **{**FAST, **overrides},
        )
        app = App(settings)
        await app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop()


@pytest.fixture
async def app(make_app):
    return await make_app()


@pytest.fixture
async def llm(app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield Client(llm_pb2_grpc.LLMServiceStub(channel), app)


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(value * 1000))
    return d


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=text)


def error_details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo | None, float | None]:
    """(ErrorInfo, RetryInfo delay in seconds) from a failed call."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    info, delay = None, None
    for detail in status_pb2.Status.FromString(raw).details if raw else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToMilliseconds() / 1000
    return info, delay


class Client:
    """The LLMService over real gRPC, as the admin, with helpers to register fake-upstream models."""

    def __init__(self, stub: llm_pb2_grpc.LLMServiceStub, app):
        self.stub = stub
        self.app = app

    async def provider(
        self, base_url: str, name: str = "fake", kind=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE, **fields
    ) -> llm_pb2.Provider:
        reply = await self.stub.CreateProvider(
            llm_pb2.CreateProviderRequest(provider=llm_pb2.Provider(name=name, type=kind, base_url=base_url, **fields)),
            metadata=ADMIN,
        )
        if fields.get("max_retries") == 0:  # 0 on create means "the default"; zero retries is set by an update
            reply = await self.stub.UpdateProvider(
                llm_pb2.UpdateProviderRequest(
                    provider=llm_pb2.Provider(id=reply.provider.id, max_retries=0),
                    update_mask=field_mask_pb2.FieldMask(paths=["max_retries"]),
                ),
                metadata=ADMIN,
            )
        return reply.provider

    async def model(
        self, provider_id: str, name: str, model_type=llm_pb2.MODEL_TYPE_LLM, online=True, **fields
    ) -> llm_pb2.Model:
        reply = await self.stub.CreateModel(
            llm_pb2.CreateModelRequest(
                model=llm_pb2.Model(provider_id=provider_id, name=name, type=model_type, online=online, **fields)
            ),
            metadata=ADMIN,
        )
        return reply.model

    async def fake_model(
        self, upstream: FakeUpstream, name: str = "gpt-fake", *, provider: dict | None = None, **fields
    ) -> llm_pb2.Model:
        p = await self.provider(
            upstream.base_url + "/v1", name=f"{name}-provider", api_key="sk-test-secret-1234", **(provider or {})
        )
        return await self.model(p.id, name, **fields)

    async def generate(self, model_id: str, text: str = "hi", **request) -> list[llm_pb2.GenerateResponse]:
        call = self.stub.Generate(
            llm_pb2.GenerateRequest(model_id=model_id, messages=[user(text)], **request), metadata=ADMIN
        )
        return [message async for message in call]

    async def get_model(self, model_id: str) -> llm_pb2.Model:
        return (await self.stub.GetModel(llm_pb2.GetModelRequest(model_id=model_id), metadata=ADMIN)).model


def text_of(messages: list[llm_pb2.GenerateResponse]) -> str:
    return "".join(m.text for m in messages)
