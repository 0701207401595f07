"""Fixtures for the proxy and AdminService: a fake upstream (a real HTTP server) and the real App with the proxy on."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import ADMIN_KEY
from tests.proxy.fake_upstream import FakeUpstream
from typecase.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def error_details(error: grpc.aio.AioRpcError) -> list:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    out = []
    for packed in status_pb2.Status.FromString(raw).details if raw else ():
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                out.append(message)
    return out


def reason(error: grpc.aio.AioRpcError) -> str:
    return next(d.reason for d in error_details(error) if isinstance(d, error_details_pb2.ErrorInfo))


@pytest.fixture
def upstream():
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
async def proxy_app(app_factory, upstream):
    """The real App with the proxy listening on a free port and forwarding to the fake upstream."""
    return await app_factory(
        proxy_enabled=True, proxy_port=0, proxy_target_base_url=upstream.url, proxy_log_flush_seconds=0.05
    )


@pytest.fixture
def proxy_url(proxy_app) -> str:
    return f"http://127.0.0.1:{proxy_app.servicers['AdminService'].proxy_port}"


@pytest.fixture
async def channel(proxy_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy_app.grpc_port}") as channel:
        yield channel


@pytest.fixture
def admin(channel) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(channel)


async def update(admin: admin_pb2_grpc.AdminServiceStub, **values) -> admin_pb2.UpdateConfigResponse:
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    return await admin.UpdateConfig(admin_pb2.UpdateConfigRequest(values=text), metadata=ADMIN)


async def user_token(channel, username: str = "olive") -> str:
    """An ordinary (non-admin) user's access token."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    await auth.CreateUser(
        auth_pb2.CreateUserRequest(
            user=auth_pb2.User(username=username, password="correct horse battery", role=auth_pb2.USER_ROLE_USER)
        ),
        metadata=ADMIN,
    )
    reply = await auth.Login(auth_pb2.LoginRequest(username=username, password="correct horse battery"))
    return reply.access_token


async def api_key(channel, *scopes: str, credential: str = ADMIN_KEY) -> str:
    """A new API key's secret with these scopes (none: the default, "api"), created by `credential`'s owner."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    reply = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="test", **({"scopes": scopes} if scopes else {}))),
        metadata=bearer(credential),
    )
    return reply.secret
