"""Identity over real gRPC against the real App: bootstrap, login, tokens, users, API keys, limits, audit."""

from __future__ import annotations

import asyncio
import os
import stat

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import ADMIN_KEY, REDIS_URL
from typecase.server.infra.audit import AuditLog
from typecase.v1 import auth_pb2, auth_pb2_grpc


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def status_details(error: grpc.aio.AioRpcError) -> list:
    raw = dict(error.trailing_metadata()).get("grpc-status-details-bin")
    details = []
    for any_detail in status_pb2.Status.FromString(raw).details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                details.append(message)
    return details


def reason(error: grpc.aio.AioRpcError) -> str:
    return next(d.reason for d in status_details(error) if isinstance(d, error_details_pb2.ErrorInfo))


@pytest.fixture
async def channel(running_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        yield channel


@pytest.fixture
def auth(channel):
    return auth_pb2_grpc.AuthServiceStub(channel)


async def create_user(auth, username: str, password: str = "correct horse battery", role=auth_pb2.USER_ROLE_USER):
    reply = await auth.CreateUser(
        auth_pb2.CreateUserRequest(user=auth_pb2.User(username=username, password=password, role=role)),
        metadata=bearer(ADMIN_KEY),
    )
    return reply.user


async def login(auth, username: str, password: str = "correct horse battery") -> auth_pb2.LoginResponse:
    return await auth.Login(auth_pb2.LoginRequest(username=username, password=password))


async def test_admin_key_from_settings_authenticates(auth):
    me = await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))
    assert me.user.username == "admin"
    assert me.user.role == auth_pb2.USER_ROLE_ADMIN
    assert me.api_key_id


@pytest.mark.parametrize(
    "metadata, message",
    [
        ((), "authentication required"),
        (bearer("tc_not-a-real-key"), "unknown API key"),
        ((("authorization", "Basic abc"),), "Bearer"),
        (bearer("x" * 2000), "malformed"),
        (bearer("a.b.c"), "invalid access token"),
    ],
)
async def test_missing_wrong_and_oversized_credentials_are_refused(auth, metadata, message):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in failure.value.details()


async def test_user_login_token_and_permissions(auth):
    created = await create_user(auth, "alice")
    assert created.id and not created.password  # write-only
    session = await login(auth, "alice")
    assert session.token_type == "Bearer" and session.expires_in == 900
    me = await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(session.access_token))
    assert me.user.id == created.id and me.user.last_login_time.seconds > 0

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.CreateUser(
            auth_pb2.CreateUserRequest(user=auth_pb2.User(username="mallory", password="12345678")),
            metadata=bearer(session.access_token),
        )
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.GetUser(auth_pb2.GetUserRequest(user_id=admin.user.id), metadata=bearer(session.access_token))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND  # others' existence does not leak

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await login(auth, "alice", "wrong password!")
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(failure.value) == "INVALID_CREDENTIALS"


async def test_invalid_user_fields_name_the_field(auth):
    for user, field in [
        (auth_pb2.User(username="a", password="long enough pw"), "user.username"),
        (auth_pb2.User(username="bob", password="short"), "user.password"),
        (auth_pb2.User(username="bob", password="long enough pw", email="nope"), "user.email"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth.CreateUser(auth_pb2.CreateUserRequest(user=user), metadata=bearer(ADMIN_KEY))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.value.details().startswith(field)
    await create_user(auth, "bob")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create_user(auth, "bob")
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_refresh_tokens_rotate_and_work_once(auth):
    await create_user(auth, "carol")
    first = await login(auth, "carol")
    renewed = await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert renewed.refresh_token != first.refresh_token
    await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(renewed.access_token))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_api_keys_secret_once_list_and_revoke(auth, running_app):
    await create_user(auth, "dave")
    token = (await login(auth, "dave")).access_token
    created = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="ci")), metadata=bearer(token)
    )
    secret = created.secret
    assert secret.startswith("tc_") and created.api_key.prefix == secret[:8]
    me = await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(secret))
    assert me.user.username == "dave" and me.api_key_id == created.api_key.id

    listed = await auth.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=bearer(token))
    assert [k.id for k in listed.api_keys] == [created.api_key.id]
    assert secret not in str(listed)
    for _ in range(50):  # last use is written off the request path
        listed = await auth.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=bearer(token))
        if listed.api_keys[0].HasField("last_used_time"):
            break
        await asyncio.sleep(0.05)
    assert listed.api_keys[0].HasField("last_used_time")

    # Another user can neither see nor revoke it.
    await create_user(auth, "erin")
    erin = (await login(auth, "erin")).access_token
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.DeleteApiKey(auth_pb2.DeleteApiKeyRequest(api_key_id=created.api_key.id), metadata=bearer(erin))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND

    await auth.DeleteApiKey(auth_pb2.DeleteApiKeyRequest(api_key_id=created.api_key.id), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(secret))
    assert "revoked" in failure.value.details()

    events = await AuditLog(running_app.resources.db).query(limit=100, resource_id=created.api_key.id)
    assert [e.action for e in events] == ["api_key.revoke", "api_key.create"]


async def test_disabling_a_user_stops_their_tokens(auth):
    user = await create_user(auth, "frank")
    token = (await login(auth, "frank")).access_token
    await auth.UpdateUser(
        auth_pb2.UpdateUserRequest(user=auth_pb2.User(id=user.id, disabled=True), update_mask={"paths": ["disabled"]}),
        metadata=bearer(ADMIN_KEY),
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token))
    assert reason(failure.value) == "USER_DISABLED"
    with pytest.raises(grpc.aio.AioRpcError):
        await login(auth, "frank")


async def test_failed_logins_are_throttled_and_audited(app_factory):
    app = await app_factory(login_failures_limit="3/minute")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        await create_user(auth, "gina")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await login(auth, "gina", "not the password")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await login(auth, "gina")  # even the right password waits now
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    events = await AuditLog(app.resources.db).query(limit=10, action="login")
    assert [e.outcome for e in events] == ["throttled", "denied", "denied", "denied"]
    assert all("not the password" not in str(e.detail) for e in events)


async def test_rate_limit_per_key_with_retry_info(app_factory):
    app = await app_factory(rate_limit_per_key="5/minute")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        for _ in range(5):
            await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(failure.value)
    assert details[0].reason == "RATE_LIMITED"
    retry = next(d for d in details if isinstance(d, error_details_pb2.RetryInfo))
    assert 0 < retry.retry_delay.seconds <= 60


async def test_rate_limits_per_key_and_per_user_on_redis_span_replicas(app_factory, tmp_path):
    """On Redis both windows of a call are hit in one script; the per-user window is refused once full, on
    either replica, and a refused call names the window that was full."""
    import redis

    url = f"{REDIS_URL}/12"
    redis.Redis.from_url(url).flushdb()
    first = await app_factory(rate_limit_per_key="10/minute", rate_limit_per_user="3/minute", redis_url=url)
    second = await app_factory(
        rate_limit_per_key="10/minute",
        rate_limit_per_user="3/minute",
        redis_url=url,
        database_url=first.resources.db.url.render_as_string(hide_password=False),
        data_dir=tmp_path / "second",
    )
    refused = []
    for app in (first, second, first, second):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            try:
                await auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))
            except grpc.aio.AioRpcError as exc:
                refused.append(exc)
    assert len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(refused[0])
    assert details[0].reason == "RATE_LIMITED" and details[0].metadata["scope"] == "user"


async def test_generated_admin_key_is_printed_once_and_stored_private(app_factory, tmp_path, capsys):
    data_dir = tmp_path / "fresh"
    app = await app_factory(admin_api_key=None, data_dir=data_dir)
    printed = capsys.readouterr().out
    key_file = data_dir / "admin_api_key"
    secret = key_file.read_text().strip()
    assert secret in printed
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        me = await auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), metadata=bearer(secret))
    assert me.user.role == auth_pb2.USER_ROLE_ADMIN
    await app.stop()
    await app_factory(admin_api_key=None, data_dir=data_dir)
    assert "admin API key" not in capsys.readouterr().out
    assert key_file.read_text().strip() == secret


async def test_auth_disabled_is_refused_off_loopback(app_factory):
    with pytest.raises(RuntimeError, match="loopback"):
        await app_factory(auth_disabled=True, host="0.0.0.0")


async def test_rate_limit_over_http_is_429_with_retry_after(app_factory):
    import httpx

    app = await app_factory(rate_limit_per_key="2/minute")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        assert [(await http.get("/v1/auth/me", headers=headers)).status_code for _ in range(2)] == [200, 200]
        limited = await http.get("/v1/auth/me", headers=headers)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["details"][0]["reason"] == "RATE_LIMITED"


async def test_auth_disabled_is_refused_when_the_proxy_listens_off_loopback(app_factory):
    with pytest.raises(RuntimeError, match="TYPECASE_PROXY_HOST"):
        await app_factory(auth_disabled=True, proxy_enabled=True, proxy_host="0.0.0.0")


async def test_auth_disabled_on_loopback_acts_as_admin(app_factory):
    app = await app_factory(auth_disabled=True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        me = await auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest())
    assert me.user.role == auth_pb2.USER_ROLE_ADMIN
