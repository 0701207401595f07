"""The LLM API proxy's access control (issue 18): who may spend the server's upstream key, what of a caller's
request reaches the upstream, and the configuration that used to break or leak it.

Against the real App with the proxy listening, a real fake upstream (an HTTP server recording what it got), the
official anthropic and openai SDKs where they can say it, and raw sockets where an HTTP client would tidy the path.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import grpc
import httpx
import openai
import pytest
from google.rpc import error_details_pb2

from tests.conftest import ADMIN_KEY
from tests.proxy.conftest import ADMIN, api_key, bearer, error_details, reason, update, user_token
from tests.proxy.fake_upstream import FakeUpstream
from tests.proxy.test_passthrough import credential
from typecase.v1 import admin_pb2, admin_pb2_grpc, chat_pb2, chat_pb2_grpc

SERVER_KEY = "sk-ant-server-owned-upstream-key-000001"
CALLER_KEY = "sk-ant-callers-own-key"
MESSAGE = {"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def upstream():
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(app_factory, upstream):
    """Start the App with the proxy on a free port in front of the fake upstream: `await proxy(**settings)`."""

    async def start(**settings):
        app = await app_factory(
            proxy_enabled=True, proxy_port=0, proxy_target_base_url=upstream.url, llm_local_enabled=False, **settings
        )
        return app, f"http://127.0.0.1:{app.servicers['AdminService'].proxy_port}"

    return start


async def channel_of(app) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")


# -- access keys ---------------------------------------------------------------------------------------------
async def test_with_an_upstream_key_only_a_proxy_access_key_gets_through(proxy, upstream):
    app, url = await proxy(proxy_upstream_api_key=SERVER_KEY)
    async with httpx.AsyncClient(base_url=url) as client:
        # The attack: anyone who reaches the port spent the server's key.
        reply = await client.post("/v1/messages", json=MESSAGE)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["type"] == "authentication_error"
        assert upstream.requests == []
        reply = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": "tc_not-a-key-0123456789"})
        assert reply.status_code == 401
    async with await channel_of(app) as channel:
        api_only = await api_key(channel)  # the default scope: the Typecase API
        proxy_only = await api_key(channel, "proxy")
        token = await user_token(channel)
    async with httpx.AsyncClient(base_url=url) as client:
        reply = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": api_only})
        assert reply.status_code == 403 and "'proxy' scope" in reply.json()["error"]["message"], reply.text
        reply = await client.post("/v1/messages", json=MESSAGE, headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 401, reply.text  # an access token is for the API, not the proxy
    assert upstream.requests == []

    # The SDKs' own credential carries the access key (x-api-key or authorization: Bearer, by SDK version).
    async with anthropic.AsyncAnthropic(base_url=url, api_key=proxy_only, max_retries=0) as claude:
        message = await claude.messages.create(**MESSAGE)
    assert message.content[0].text.startswith("tok0")
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=proxy_only, max_retries=0) as gpt:
        await gpt.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    for got in upstream.requests:
        assert got.header("x-api-key") == SERVER_KEY or got.header("authorization") == f"Bearer {SERVER_KEY}"
        assert proxy_only not in json.dumps(got.headers)


async def test_a_proxy_key_does_not_open_the_api_and_needs_both_scopes_for_both(proxy):
    app, url = await proxy(proxy_upstream_api_key=SERVER_KEY)
    async with await channel_of(app) as channel:
        proxy_only = await api_key(channel, "proxy")
        both = await api_key(channel, "api", "proxy")
        chat = chat_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=bearer(proxy_only))
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'api' scope" in failure.value.details()
        await chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=bearer(both))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        assert (await client.get("/v1/sessions", headers={"authorization": f"Bearer {proxy_only}"})).status_code == 403
        assert (
            await client.get("/openai/v1/models", headers={"authorization": f"Bearer {proxy_only}"})
        ).status_code == 403
        listed = (await client.get("/v1/api-keys", headers={"authorization": f"Bearer {both}"})).json()["api_keys"]
        assert sorted(tuple(k["scopes"]) for k in listed) == [("api",), ("api", "proxy"), ("proxy",)]
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": both})).status_code == 200


async def test_unknown_scopes_are_refused_naming_the_field(proxy):
    app, _ = await proxy()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        reply = await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["admin"]}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
    assert reply.status_code == 400 and reply.json()["details"][0]["metadata"]["field"] == "api_key.scopes"


async def test_off_loopback_the_proxy_needs_an_access_key_while_the_callers_own_key_passes(proxy, upstream):
    app, url = await proxy(proxy_host="0.0.0.0")  # no upstream key: the caller's own credential goes upstream
    async with httpx.AsyncClient(base_url=url) as client:
        reply = await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": CALLER_KEY})
        assert reply.status_code == 401 and "x-typecase-proxy-key" in reply.json()["error"]["message"], reply.text
        assert upstream.requests == []
    async with await channel_of(app) as channel:
        access = await api_key(channel, "proxy")
    async with anthropic.AsyncAnthropic(
        base_url=url, api_key=CALLER_KEY, max_retries=0, default_headers={"x-typecase-proxy-key": access}
    ) as claude:
        await claude.messages.create(**MESSAGE)
    got = upstream.last("/v1/messages")
    assert credential(got) == CALLER_KEY
    assert "x-typecase-proxy-key" not in got.names() and access not in json.dumps(got.headers)


async def test_typecase_credentials_cookies_and_forwarding_headers_never_reach_the_upstream(proxy, upstream):
    app, url = await proxy()  # loopback, no upstream key: open, passing the caller's credentials on
    async with await channel_of(app) as channel:
        key = await api_key(channel)
        token = await user_token(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        sent = {
            "cookie": "tc_session=abc",
            "x-forwarded-for": "10.0.0.7",
            "forwarded": "for=10.0.0.7",
            "x-real-ip": "10.0.0.7",
            "x-forwarded-host": "internal.example",
        }
        async with httpx.AsyncClient(base_url=url) as client:
            for credential in ({"x-api-key": key}, {"authorization": f"Bearer {token}"}, {"x-api-key": ADMIN_KEY}):
                reply = await client.post("/v1/messages", json=MESSAGE, headers={**credential, **sent})
                assert reply.status_code == 200, reply.text
                got = upstream.last("/v1/messages")
                assert not {"x-api-key", "authorization", *sent} & got.names(), got.headers
            await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": CALLER_KEY})
            assert upstream.last("/v1/messages").header("x-api-key") == CALLER_KEY  # an upstream key still passes
            await update(admin, proxy_forward_client_address=True)  # now asked for: the chain plus the caller
            await client.post("/v1/messages", json=MESSAGE, headers=sent)
            got = upstream.last("/v1/messages")
            assert got.header("x-forwarded-for") == "10.0.0.7, 127.0.0.1" and got.header("x-real-ip") == "10.0.0.7"
            assert "cookie" not in got.names()


# -- configurations that opened, broke or leaked the proxy ----------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        {"proxy_host": "0.0.0.0", "proxy_access_keys": "off"},
        {"proxy_upstream_api_key": SERVER_KEY, "proxy_access_keys": "off"},
    ],
)
async def test_a_proxy_anyone_could_use_does_not_start_unless_explicitly_allowed(proxy, upstream, settings):
    with pytest.raises(RuntimeError, match="refusing to start the LLM API proxy"):
        await proxy(**settings)
    app, url = await proxy(**settings, proxy_insecure_allow_unauthenticated=True)
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/v1/messages", json=MESSAGE)).status_code == 200


async def test_a_config_update_that_would_open_the_proxy_is_refused(proxy, upstream):
    app, url = await proxy(proxy_access_keys="off")  # fine on loopback without an upstream key
    async with await channel_of(app) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await update(admin_pb2_grpc.AdminServiceStub(channel), proxy_upstream_api_key=SERVER_KEY)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(failure.value) == "CONFIG_INVALID"
    violations = next(d for d in error_details(failure.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in violations.field_violations] == ["values[proxy_upstream_api_key]"]


async def test_an_upstream_key_with_a_line_break_is_refused_and_the_proxy_keeps_working(proxy, upstream, monkeypatch):
    app, url = await proxy(proxy_upstream_api_key=SERVER_KEY)
    async with await channel_of(app) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await update(admin, proxy_upstream_api_key="sk-ant-abc\r\nX-Injected: 1")
        access = await api_key(channel, "proxy")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = next(d for d in error_details(failure.value) if isinstance(d, error_details_pb2.BadRequest))
    assert [v.field for v in violations.field_violations] == ["values[proxy_upstream_api_key]"]
    assert "line breaks" in violations.field_violations[0].description
    async with httpx.AsyncClient(base_url=url) as client:  # was: every later request a 500
        assert (await client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": access})).status_code == 200
    # From the environment it is a start-up error that does not print the key.
    from pydantic import ValidationError

    from typecase.server.config import Settings

    monkeypatch.setenv("TYPECASE_PROXY_UPSTREAM_API_KEY", "sk-ant-abc\r\nX-Injected: 1")
    with pytest.raises(ValidationError) as invalid:
        Settings(_env_file=None)
    assert "proxy_upstream_api_key" in str(invalid.value) and "sk-ant-abc" not in str(invalid.value)


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/../admin",
        b"/v1/%2e%2e/admin",
        b"/v1/%2E%2E%2Fadmin",
        b"/v1/.%2e/x",
        b"/v1/./messages",
        b"/v1/..%5cadmin",
        b"/..",
    ],
)
async def test_dot_segments_in_the_path_are_refused_before_reaching_the_upstream(proxy, upstream, path):
    app, url = await proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"'.' or '..' segments" in answer
    assert upstream.requests == []


async def test_a_reset_upstream_key_leaves_no_copy_on_disk_and_short_keys_show_nothing(proxy, tmp_path):
    app, _ = await proxy()  # no TYPECASE_SECRET_KEY: the runtime file holds the key in plain text while it is set
    old, new = "sk-ant-first-key-never-to-be-seen-again", "sk-ant-short-key"
    async with await channel_of(app) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await update(admin, proxy_upstream_api_key=old)
        await update(admin, proxy_custom_headers={"x-team": "a"})  # the backup now holds the key too
        await update(admin, proxy_upstream_api_key=new)
        shown = {e.key: e.value for e in (await admin.GetConfig(admin_pb2.GetConfigRequest(), metadata=ADMIN)).entries}
        assert shown["proxy_upstream_api_key"] == "****"  # 16 characters: no tail shown
        await update(admin, proxy_upstream_api_key="")  # reset
        await update(admin, proxy_upstream_api_key=old)
        shown = {e.key: e.value for e in (await admin.GetConfig(admin_pb2.GetConfigRequest(), metadata=ADMIN)).entries}
        assert shown["proxy_upstream_api_key"] == "****" + old[-4:]
        await update(admin, proxy_upstream_api_key="")
    data = tmp_path / "data"
    for path in (data / "proxy_config.json", data / "proxy_config.json.bak"):
        text = path.read_text()
        assert old not in text and new not in text, (path.name, text)
