"""The pass-through proxy with the official anthropic and openai SDKs (and raw HTTP where bytes matter), against a
real fake upstream: streaming, headers both ways, host, credentials, limits, upstream failures, disconnects."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import openai
import pytest

from tests.proxy.conftest import api_key, update

SECRET_HOP = "x-secret-hop"


def credential(got) -> str | None:
    """The API key a request carried, as x-api-key or as a bearer token (SDK versions differ)."""
    if got.header("x-api-key"):
        return got.header("x-api-key")
    auth = got.header("authorization")
    return auth.removeprefix("Bearer ") if auth else None


def anthropic_client(proxy_url: str, api_key: str = "sk-ant-client-key") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy_url, api_key=api_key, max_retries=0)


def openai_client(proxy_url: str, api_key: str = "sk-openai-client-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy_url + "/v1", api_key=api_key, max_retries=0)


@pytest.fixture
async def claude(proxy_url):
    async with anthropic_client(proxy_url) as client:
        yield client


@pytest.fixture
async def gpt(proxy_url):
    async with openai_client(proxy_url) as client:
        yield client


async def test_anthropic_stream_arrives_token_by_token(claude, proxy_url, upstream):
    arrivals = []
    started = time.perf_counter()
    async with claude.messages.stream(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-delay-ms": "500", "x-fake-tokens": "5"},
    ) as stream:
        async for text in stream.text_stream:
            arrivals.append((time.perf_counter() - started, text))
        final = await stream.get_final_message()
    assert [t for _, t in arrivals] == [f"tok{i} " for i in range(5)]
    # Each delta arrived as the upstream produced it (500 ms apart), not all at once at the end (2.5 s). The
    # margins are wide so that a loaded CI machine, which can hold up this test's event loop, cannot blur them.
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(gap > 0.1 for gap in gaps), gaps
    assert arrivals[0][0] < 2, arrivals
    assert final.usage.output_tokens == 5


async def test_openai_stream_arrives_token_by_token(gpt, proxy_url, upstream):
    arrivals = []
    started = time.perf_counter()
    stream = await gpt.chat.completions.create(
        model="gpt-test",
        stream=True,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-delay-ms": "150", "x-fake-tokens": "4"},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 4
    assert all(b - a > 0.08 for a, b in zip(arrivals, arrivals[1:], strict=False)), arrivals
    assert upstream.last("/v1/chat/completions").json()["stream"] is True


async def test_anthropic_beta_and_sdk_headers_reach_upstream_untouched(claude, proxy_url, upstream):
    betas = ["prompt-caching-2024-07-31", "fine-grained-tool-streaming-2025-05-14"]
    message = await claude.beta.messages.create(
        model="claude-test",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
        betas=betas,
        extra_headers={"anthropic-version": "2023-06-01"},
    )
    assert message.content[0].text.startswith("tok0")
    got = upstream.last("/v1/messages")
    assert got.header("anthropic-beta") == ",".join(betas)
    assert got.header("anthropic-version") == "2023-06-01"
    assert credential(got) == "sk-ant-client-key"
    assert got.header("user-agent").startswith("AsyncAnthropic/Python")
    assert any(name.startswith("x-stainless-") for name in got.names())


async def test_hop_by_hop_headers_are_removed_both_ways(proxy_url, upstream):
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            proxy_url + "/v1/messages",
            json={"model": "m", "max_tokens": 1, "messages": []},
            headers={
                "connection": f"keep-alive, {SECRET_HOP}",
                SECRET_HOP: "only for the first hop",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic dXNlcjpwYXNz",
                "proxy-connection": "keep-alive",
                "x-end-to-end": "kept",
            },
        )
    assert reply.status_code == 200
    got = upstream.last("/v1/messages")
    for name in (SECRET_HOP, "keep-alive", "te", "proxy-authorization", "proxy-connection", "transfer-encoding"):
        assert name not in got.names(), name
    assert got.header("x-end-to-end") == "kept"
    # Response side: the upstream's Connection-named and hop-by-hop headers stop at the proxy.
    assert reply.headers["x-upstream-kept"] == "yes"
    assert reply.headers["request-id"] == "req_fake_1"
    assert "x-upstream-private" not in reply.headers
    assert "keep-alive" not in reply.headers


async def test_request_headers_arrive_as_sent_with_nothing_added(proxy_url, upstream):
    """Raw HTTP, so that the client sends exactly these headers: duplicates and order survive, and the proxy's own
    HTTP client adds none of its defaults (User-Agent, Accept, Accept-Encoding, Content-Type)."""
    port = int(proxy_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"plain bytes"
    writer.write(
        b"POST /v1/raw HTTP/1.1\r\nHost: client.example\r\nX-Dup: one\r\nX-Order: 2\r\nX-Dup: two\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 200"), status
    got = upstream.last("/v1/raw")
    assert [(k, v) for k, v in got.headers if k != "host"] == [
        ("x-dup", "one"),
        ("x-order", "2"),
        ("x-dup", "two"),
        ("content-length", str(len(body))),
    ]
    assert got.body == body


async def test_custom_headers_injected_live(claude, proxy_url, upstream, admin):
    await update(admin, proxy_custom_headers={"x-team": "search", "anthropic-beta": "forced-beta-1"})
    await claude.messages.create(
        model="claude-test",
        max_tokens=8,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"anthropic-beta": "client-beta"},
    )
    got = upstream.last("/v1/messages")
    assert got.header("x-team") == "search"
    assert [v for k, v in got.headers if k == "anthropic-beta"] == ["forced-beta-1"]  # replaced, not duplicated
    await update(admin, proxy_custom_headers="")  # back to the default: none
    await claude.messages.create(model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert upstream.last("/v1/messages").header("x-team") is None


async def test_host_rewritten_by_default_preserved_by_option(proxy_url, upstream, admin):
    async with httpx.AsyncClient() as client:
        await client.get(proxy_url + "/v1/models")
        assert upstream.last("/v1/models").header("host") == f"127.0.0.1:{upstream.port}"
        await update(admin, proxy_preserve_host=True)
        await client.get(proxy_url + "/v1/models", headers={"host": "llm.example.internal"})
        assert upstream.last("/v1/models").header("host") == "llm.example.internal"


async def test_client_credentials_forwarded_dropped_or_replaced(gpt, proxy_url, upstream, admin, channel):
    await gpt.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert upstream.last().header("authorization") == "Bearer sk-openai-client-key"
    await update(admin, proxy_forward_client_credentials=False)
    await gpt.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert upstream.last().header("authorization") is None
    await update(admin, proxy_upstream_api_key="sk-team-upstream-key-1234")
    # With the server's key on offer the SDKs' own credential is a proxy access key (tests/security covers refusals).
    access = await api_key(channel, "proxy")
    async with openai_client(proxy_url, access) as gpt_keyed, anthropic_client(proxy_url, access) as claude_keyed:
        await gpt_keyed.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
        assert upstream.last().header("authorization") == "Bearer sk-team-upstream-key-1234"
        await claude_keyed.messages.create(model="c", max_tokens=1, messages=[])
    assert credential(upstream.last()) == "sk-team-upstream-key-1234"
    assert access not in str(upstream.last().headers)
    async with httpx.AsyncClient() as raw:  # a client that sent no credential gets the upstream key as x-api-key
        await raw.get(proxy_url + "/v1/models", headers={"x-typecase-proxy-key": access})
    assert upstream.last().header("x-api-key") == "sk-team-upstream-key-1234"


async def test_every_method_path_query_and_body_pass_byte_exact(proxy_url, upstream):
    odd = b'{"model" :  "m",\n "system": "keep   my spacing", "x": 1.50}'
    async with httpx.AsyncClient() as client:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            reply = await client.request(method, proxy_url + "/any/where/%20x?a=1&b=%2F", content=odd)
            assert reply.status_code == 200
            got = upstream.last()
            assert (got.method, got.path, got.query, got.body) == (method, "/any/where/ x", "a=1&b=%2F", odd)

        # A streamed (chunked) request body is forwarded as it comes.
        async def body():
            for i in range(5):
                yield f"part{i};".encode()
                await asyncio.sleep(0.01)

        reply = await client.post(proxy_url + "/v1/files", content=body())
        assert reply.json()["body_bytes"] == len(b"part0;" * 5)
        assert upstream.last().body == b"part0;part1;part2;part3;part4;"


async def test_request_size_limit_is_413_json(proxy_url, upstream, admin):
    await update(admin, proxy_max_request_bytes=1024)
    seen = len(upstream.requests)
    async with httpx.AsyncClient() as client:
        reply = await client.post(proxy_url + "/v1/messages", content=b"x" * 2048)
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        async def chunked():
            for _ in range(4):
                yield b"y" * 512

        reply = await client.post(proxy_url + "/v1/upload", content=chunked())
        assert reply.status_code == 413
        ok = await client.post(proxy_url + "/v1/upload", content=b"z" * 1000)
        assert ok.status_code == 200
    assert [r.path for r in upstream.requests[seen:]] == ["/v1/upload"]  # the too-large one never completed


async def test_upstream_unreachable_is_502_and_timeout_is_504(proxy_url, upstream, admin):
    from tests.conftest import free_port

    async with httpx.AsyncClient() as client:
        await update(admin, proxy_read_timeout_seconds=0.3)
        reply = await client.post(proxy_url + "/v1/messages", json={"model": "m"}, headers={"x-fake-hang-ms": "1500"})
        assert reply.status_code == 504
        assert reply.json()["error"]["code"] == "UPSTREAM_TIMEOUT"
        await update(admin, proxy_target_base_url=f"http://127.0.0.1:{free_port()}")
        reply = await client.get(proxy_url + "/v1/models")
        assert reply.status_code == 502
        body = reply.json()
        assert body["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert "ConnectError" in body["error"]["message"]


async def test_upstream_error_status_and_body_pass_through(claude, proxy_url, upstream):
    with pytest.raises(anthropic.RateLimitError) as failure:
        await claude.messages.create(
            model="claude-test", max_tokens=8, messages=[], extra_headers={"x-fake-status": "429"}
        )
    assert failure.value.status_code == 429
    assert "fake failure" in failure.value.message


async def test_client_disconnect_stops_the_upstream_stream(claude, proxy_url, upstream):
    stream = await claude.messages.create(
        model="claude-test",
        max_tokens=64,
        stream=True,
        messages=[{"role": "user", "content": "long"}],
        extra_headers={"x-fake-delay-ms": "100", "x-fake-tokens": "40"},
    )
    async for event in stream:
        if event.type == "content_block_delta":
            break
    await stream.close()
    deadline = time.monotonic() + 3
    while "/v1/messages" not in upstream.aborted and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert upstream.aborted == ["/v1/messages"]  # ~4 s of generation abandoned, not run to the end
    assert upstream.completed == []


async def test_https_upstream_streams_through_tls(app_factory, tmp_path, monkeypatch):
    from tests.proxy.fake_upstream import FakeUpstream, self_signed

    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # the proxy trusts this upstream's certificate (and only through env)
    upstream = FakeUpstream(tls=(cert, key)).start()
    try:
        app = await app_factory(proxy_enabled=True, proxy_port=0, proxy_target_base_url=upstream.url)
        url = f"http://127.0.0.1:{app.servicers['AdminService'].proxy_port}"
        async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as claude:
            async with claude.messages.stream(
                model="claude-tls", max_tokens=8, messages=[], extra_headers={"x-fake-tokens": "4"}
            ) as stream:
                assert await stream.get_final_text() == "tok0 tok1 tok2 tok3 "
            await claude.messages.create(model="claude-tls", max_tokens=8, messages=[])  # reuses the connection
        assert [r.path for r in upstream.requests] == ["/v1/messages", "/v1/messages"]
    finally:
        upstream.stop()
