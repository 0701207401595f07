"""/openai/v1 with the official openai SDK as the client and the fake upstream behind Typecase; and the fake
upstream itself checked against the official openai and anthropic SDKs (so the fakes speak the real formats)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY


@pytest.fixture
async def sdk(app):
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{app.http_port}/openai/v1", api_key=ADMIN_KEY, max_retries=0
    )
    yield client
    await client.close()


async def test_streamed_and_whole_chat_completions(sdk, llm, upstream):
    await llm.fake_model(upstream, name="gpt-fake")
    stream = await sdk.chat.completions.create(
        model="gpt-fake",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 16 and chunks[-1].model == "gpt-fake"

    whole = await sdk.chat.completions.create(
        model="gpt-fake",
        max_tokens=2,
        messages=[
            {"role": "system", "content": "brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
    )
    assert whole.choices[0].message.content == "tok0 tok1 " and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 2
    assert upstream.seen[-1].body["messages"] == [
        {"role": "system", "content": "brief"},
        {"role": "user", "content": "hi"},
    ]


async def test_embeddings_float_and_base64(sdk, llm, upstream):
    from typecase.v1 import llm_pb2

    await llm.fake_model(upstream, name="embed-fake", model_type=llm_pb2.MODEL_TYPE_EMBEDDING)
    result = await sdk.embeddings.create(model="embed-fake", input=["ab", "abcd"])  # the SDK asks for base64
    assert [d.embedding[:2] for d in result.data] == [[2.0, 0.0], [4.0, 1.0]]
    result = await sdk.embeddings.create(model="embed-fake", input="abc", encoding_format="float", dimensions=4)
    assert result.data[0].embedding == [3.0, 0.0, 0.5, 0.5] and result.model == "embed-fake"


async def test_errors_map_to_openai_errors(sdk, llm, upstream):
    with pytest.raises(openai.NotFoundError) as failure:
        await sdk.chat.completions.create(model="missing", messages=[{"role": "user", "content": "hi"}])
    assert failure.value.body["code"] == "model_not_found"

    model = await llm.fake_model(upstream, name="gpt-fake", provider=dict(max_retries=0))
    upstream.faults("status:429:30")
    with pytest.raises(openai.RateLimitError) as failure:
        await sdk.chat.completions.create(model=model.name, messages=[{"role": "user", "content": "hi"}], stream=True)
    assert failure.value.response.headers["retry-after"] == "30"

    upstream.faults("reset:2")  # mid-stream: OpenAI's in-band error event
    stream = await sdk.chat.completions.create(
        model=model.name, messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError) as failure:
        async for _ in stream:
            pass
    assert "unavailable" in str(failure.value).lower()

    bad = openai.AsyncOpenAI(base_url=str(sdk.base_url), api_key="tc_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    await bad.close()


async def test_fake_upstream_speaks_the_real_wire_formats(upstream):
    """The official SDKs parse the fake's answers: our fault tests exercise the formats real providers send."""
    client = openai.AsyncOpenAI(base_url=upstream.base_url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[-1].usage.completion_tokens == 5
    await client.close()

    claude = anthropic.AsyncAnthropic(base_url=upstream.base_url, api_key="x", max_retries=0)
    async with claude.messages.stream(model="c", max_tokens=3, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == "tok0 tok1 tok2 " and final.stop_reason == "max_tokens" and final.usage.output_tokens == 3
    await claude.close()


async def test_requires_a_valid_key(app):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        response = await http.get("/openai/v1/models")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("surface", ["openai", "anthropic"])
async def test_a_client_leaving_a_streamed_answer_closes_the_upstream_call(app, llm, upstream, surface):
    import asyncio
    import time

    upstream.tokens, upstream.token_delay = 200, 0.05
    await llm.fake_model(upstream, name="gpt-fake")
    base = f"http://127.0.0.1:{app.http_port}"
    path, body, headers = (
        ("/openai/v1/chat/completions", {"stream": True}, {"authorization": f"Bearer {ADMIN_KEY}"})
        if surface == "openai"
        else ("/anthropic/v1/messages", {"stream": True, "max_tokens": 1000}, {"x-api-key": ADMIN_KEY})
    )
    body |= {"model": "gpt-fake", "messages": [{"role": "user", "content": "long"}]}
    async with httpx.AsyncClient(base_url=base) as client:
        async with client.stream("POST", path, json=body, headers=headers) as response:
            assert response.status_code == 200
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if received.count(b"tok") >= 2:
                    break
    left = time.monotonic()  # the connection is closed when the block exits
    for _ in range(100):
        if upstream.seen[-1].closed_early:
            break
        await asyncio.sleep(0.02)
    seen = upstream.seen[-1]
    assert seen.closed_early and not seen.completed
    assert seen.closed_time - left < 1.0
