"""/anthropic/v1/messages with the official anthropic SDK as the client, any Typecase model behind it (here fake
OpenAI-compatible and Anthropic upstreams): text and tool_use, streamed and whole, images, errors in Anthropic's
shape, and Typecase API keys sent either way the SDKs send them."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.llm.test_tools import PNG, anthropic_model

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
async def claude(app):
    client = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{app.http_port}/anthropic", api_key=ADMIN_KEY, max_retries=0
    )
    yield client
    await client.close()


async def test_anthropic_sdk_streams_a_tool_use_from_an_openai_upstream(claude, llm, upstream):
    await llm.fake_model(upstream, name="gpt-fake")
    upstream.token_delay = 0.05  # fragments in separate network reads (a burst is relayed as one delta)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    async with claude.messages.stream(model="gpt-fake", max_tokens=100, messages=messages, tools=[WEATHER]) as s:
        events = [event async for event in s]
        final = await s.get_final_message()
    assert final.stop_reason == "tool_use" and final.model == "gpt-fake"
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris ☀"} and use.id == "call_fake0"
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas) > 2 and all(d.delta.type == "input_json_delta" for d in deltas)  # streamed in fragments
    assert final.usage.output_tokens > 0 and final.usage.input_tokens == 11
    sent = upstream.seen[-1].body
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"] and sent["max_tokens"] == 100

    # Step two: the tool's result goes back as a tool_result block; the model answers with it.
    messages += [
        {"role": "assistant", "content": final.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    answer = await claude.messages.create(model="gpt-fake", max_tokens=100, messages=messages, tools=[WEATHER])
    assert answer.stop_reason == "end_turn" and answer.content[0].text == "Answer: sunny"
    assert upstream.seen[-1].body["messages"][-1] == {"role": "tool", "content": "sunny", "tool_call_id": "call_fake0"}


async def test_anthropic_sdk_text_images_and_system_through_an_anthropic_upstream(claude, llm, upstream):
    await anthropic_model(llm, upstream)
    message = await claude.messages.create(
        model="claude-fake",
        max_tokens=3,
        system="Be brief.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            }
        ],
    )
    assert message.content[0].text == "tok0 tok1 tok2 " and message.stop_reason == "max_tokens"
    sent = upstream.seen[-1].body
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    async with claude.messages.stream(
        model="claude-fake", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join([t async for t in s.text_stream])
    assert text == "tok0 tok1 tok2 tok3 "


async def test_keys_are_accepted_as_x_api_key_and_as_bearer(app, llm, upstream):
    await llm.fake_model(upstream, name="gpt-fake")
    body = {"model": "gpt-fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    url = f"http://127.0.0.1:{app.http_port}/anthropic/v1/messages"
    async with httpx.AsyncClient() as http:
        for headers in ({"x-api-key": ADMIN_KEY}, {"authorization": f"Bearer {ADMIN_KEY}"}):
            response = await http.post(url, json=body, headers={**headers, "anthropic-version": "2023-06-01"})
            assert response.status_code == 200 and response.json()["content"][0]["text"] == "tok0 tok1 tok2 tok3 tok4 "
        response = await http.post(url, json=body, headers={"x-api-key": "tc_wrong"})
        assert response.status_code == 401
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": response.json()["error"]["message"]},
        }


@pytest.mark.parametrize(
    "body, field",
    [
        ({"top_k": 5}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"max_tokens": None}, "max_tokens"),
    ],
)
async def test_anthropic_fields_typecase_does_not_support_are_a_400_naming_them(app, llm, upstream, body, field):
    await llm.fake_model(upstream, name="gpt-fake")
    request = {"model": "gpt-fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **body}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{app.http_port}/anthropic/v1/messages", json=request, headers={"x-api-key": ADMIN_KEY}
        )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"] and upstream.hits() == 0


async def test_anthropic_errors_keep_the_vendor_shape(claude, llm, upstream):
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.create(model="missing", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    model = await llm.fake_model(upstream, name="gpt-fake", provider=dict(max_retries=0))
    upstream.faults("reset:2")  # mid-stream: Anthropic's error event
    with pytest.raises(anthropic.APIStatusError) as failure:
        async with claude.messages.stream(
            model=model.name, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            async for _ in s:
                pass
    assert "unavailable" in str(failure.value).lower()


async def test_wrong_keys_count_against_the_address_on_the_compat_surfaces_too(make_app):
    """The compat surfaces authenticate like the gRPC interceptor: a client guessing keys is slowed once its
    address's budget is spent, and a right key still passes (the attacker is slowed, not the account)."""
    app = await make_app(credential_failures_limit="3/minute")
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    base = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for path, headers in (
            ("/anthropic/v1/messages", {"x-api-key": "tc_guess1"}),
            ("/openai/v1/models", {"authorization": "Bearer tc_guess2"}),
            ("/anthropic/v1/messages", {"authorization": "Bearer tc_guess3"}),
        ):
            response = await http.request("GET" if "models" in path else "POST", path, json=body, headers=headers)
            assert response.status_code == 401, path
        response = await http.get("/openai/v1/models", headers={"authorization": "Bearer tc_guess4"})
        assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
        response = await http.post("/anthropic/v1/messages", json=body, headers={"x-api-key": "tc_guess5"})
        assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"
        response = await http.get("/openai/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 200
