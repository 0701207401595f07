"""Tool calling, structured output and images through every surface: the official openai SDK on /openai/v1 and the
anthropic SDK on /anthropic/v1, gRPC and REST, in front of fake upstreams speaking OpenAI's and Anthropic's real
tool-streaming formats (arguments in many fragments, events cut mid-UTF-8, parallel calls)."""

from __future__ import annotations

import base64
import json

import grpc
import httpx
import openai
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from tests.conftest import ADMIN_KEY
from tests.llm.conftest import ADMIN, error_details, user
from typecase.v1 import common_pb2, llm_pb2

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "hours": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


def _struct(data: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


@pytest.fixture
async def sdk(app):
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{app.http_port}/openai/v1", api_key=ADMIN_KEY, max_retries=0
    )
    yield client
    await client.close()


async def anthropic_model(llm, upstream, name: str = "claude-fake", **fields) -> llm_pb2.Model:
    provider = await llm.provider(
        upstream.base_url,
        name=f"{name}-provider",
        kind=llm_pb2.PROVIDER_TYPE_ANTHROPIC,
        api_key="sk-ant-0123456789",
        **fields,
    )
    return await llm.model(provider.id, name)


def joined_calls(chunks) -> dict[int, dict[str, str]]:
    """OpenAI stream chunks' tool-call deltas joined by index, as the SDK's own accumulator does."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            if piece.id:
                assert not call["id"], "id and name come once, on a call's first chunk"
                call["id"], call["name"] = piece.id, piece.function.name
            call["arguments"] += piece.function.arguments or ""
    return calls


async def weather_loop(sdk, model: str) -> tuple[list, str]:
    """The two-step tool loop every agent runs: ask, run the tool the model picked, answer with its result."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    stream = await sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER], stream=True)
    chunks = [c async for c in stream]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    calls = joined_calls(chunks)
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris ☀"}  # whole, though cut mid-character upstream
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 24 °C"})
    answer = await sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert answer.choices[0].finish_reason == "stop"
    return messages, answer.choices[0].message.content


async def test_openai_sdk_runs_a_tool_loop_against_an_openai_upstream(sdk, llm, upstream):
    await llm.fake_model(upstream, name="gpt-fake")
    messages, answer = await weather_loop(sdk, "gpt-fake")
    assert answer == "Answer: sunny, 24 °C"
    sent = upstream.seen[-1].body
    assert sent["tools"] == [WEATHER]
    assert sent["messages"][1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris ☀"}',
    }
    assert sent["messages"][2] == {"role": "tool", "content": "sunny, 24 °C", "tool_call_id": "call_fake0"}


async def test_openai_sdk_runs_a_tool_loop_against_an_anthropic_upstream(sdk, llm, upstream):
    await anthropic_model(llm, upstream)
    messages, answer = await weather_loop(sdk, "claude-fake")
    assert answer == "Answer: sunny, 24 °C"
    first, second = (s.body for s in upstream.seen[-2:])
    assert first["tools"] == [
        {
            "name": "get_weather",
            "description": "The current weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert first["tool_choice"] == {"type": "auto"}
    assert second["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_fake0", "name": "get_weather", "input": {"city": "Paris ☀"}}],
    }
    assert second["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_fake0", "content": "sunny, 24 °C"}],
    }


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_parallel_calls_stream_as_separate_indices_over_grpc(llm, upstream, vendor):
    model = await (llm.fake_model(upstream) if vendor == "openai" else anthropic_model(llm, upstream))
    tools = [
        llm_pb2.Tool(
            name=t["function"]["name"],
            description=t["function"]["description"],
            parameters=_struct(t["function"]["parameters"]),
        )
        for t in (WEATHER, TIME)
    ]
    messages = await llm.generate(model.id, "Weather and time in Paris?", tools=tools)
    assert messages[0].served_model_id == model.id and messages[0].HasField("ttft")
    pieces = [p for m in messages for p in m.tool_calls]
    firsts = [p for p in pieces if p.id]
    assert [(p.index, p.name) for p in firsts] == [(0, "get_weather"), (1, "get_time")]
    assert all(not p.name for p in pieces if not p.id)  # later pieces carry argument text only
    arguments = {i: "".join(p.arguments for p in pieces if p.index == i) for i in (0, 1)}
    assert json.loads(arguments[0]) == {"city": "Paris ☀"}
    assert json.loads(arguments[1]) == {"city": "Paris ☀", "hours": 21}
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    whole = await llm.stub.Complete(
        llm_pb2.CompleteRequest(model_id=model.id, messages=[user("x")], tools=tools, parallel_tool_calls=False),
        metadata=ADMIN,
    )
    assert [(c.name, json.loads(c.arguments)) for c in whole.tool_calls] == [("get_weather", {"city": "Paris ☀"})]
    assert whole.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    sent = upstream.seen[-1].body
    assert sent.get("parallel_tool_calls") is False or sent["tool_choice"]["disable_parallel_tool_use"] is True


async def test_tool_calls_from_an_upstream_that_reports_no_usage(llm, upstream):
    model = await llm.fake_model(upstream, provider=dict(config=_struct({"stream_usage": False})))
    tools = [llm_pb2.Tool(name="get_weather", parameters=_struct(WEATHER["function"]["parameters"]))]
    messages = await llm.generate(model.id, tools=tools)
    assert "stream_options" not in upstream.seen[-1].body
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    assert messages[-1].usage.prompt_tokens > 0 and messages[-1].usage.completion_tokens > 0  # estimated


async def test_a_named_tool_choice_reaches_each_vendor_in_its_shape(llm, upstream):
    openai_model = await llm.fake_model(upstream)
    claude = await anthropic_model(llm, upstream)
    tools = [llm_pb2.Tool(name="get_weather", parameters=_struct(WEATHER["function"]["parameters"]))]
    for model, expected in (
        (openai_model, {"type": "function", "function": {"name": "get_weather"}}),
        (claude, {"type": "tool", "name": "get_weather"}),
    ):
        await llm.stub.Complete(
            llm_pb2.CompleteRequest(
                model_id=model.id,
                messages=[user("x")],
                tools=tools,
                tool_choice=llm_pb2.ToolChoice(tool_name="get_weather"),
            ),
            metadata=ADMIN,
        )
        assert upstream.seen[-1].body["tool_choice"] == expected


async def test_an_image_part_reaches_each_upstream_in_its_vendors_format(sdk, llm, upstream):
    await llm.fake_model(upstream, name="gpt-fake")
    await anthropic_model(llm, upstream)
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    await sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": content}])
    assert upstream.seen[-1].body["messages"] == [{"role": "user", "content": content}]
    await sdk.chat.completions.create(model="claude-fake", messages=[{"role": "user", "content": content}])
    assert upstream.seen[-1].body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


async def test_tools_to_a_model_without_the_capability_fail_on_every_surface(app, sdk, llm, upstream):
    model = await llm.fake_model(upstream, name="no-tools", capabilities=llm_pb2.ModelCapabilities(tools=False))
    assert model.capabilities == llm_pb2.ModelCapabilities(tools=False, vision=True, json_schema=True, reasoning=False)
    tools = [llm_pb2.Tool(name="get_weather")]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.generate(model.id, tools=tools)
    info, _ = error_details(failure.value)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "MODEL_CAPABILITY_MISSING" and info.metadata["capability"] == "tools"

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as http:
        response = await http.post(
            f"/v1/models/{model.id}:complete",
            json={"messages": [{"role": "MESSAGE_ROLE_USER", "content": "hi"}], "tools": [{"name": "get_weather"}]},
        )
    assert response.status_code == 400
    assert response.json()["details"][0]["reason"] == "MODEL_CAPABILITY_MISSING"

    with pytest.raises(openai.BadRequestError) as failure:
        await sdk.chat.completions.create(
            model="no-tools", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER]
        )
    assert failure.value.body["code"] == "model_capability_missing" and "tools" in failure.value.body["message"]
    assert upstream.hits() == 0  # failed fast, before any upstream call

    # Images to the local model, which cannot see: vision is off by its provider type's default.
    with pytest.raises(openai.BadRequestError) as failure:
        await sdk.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
            ],
        )
    assert failure.value.body["code"] == "model_capability_missing" and "vision" in failure.value.body["message"]


async def test_fallbacks_without_the_needed_capability_are_skipped(llm, upstream):
    blind = await llm.fake_model(upstream, name="blind", capabilities=llm_pb2.ModelCapabilities(tools=False))
    able = await llm.fake_model(upstream, name="able")
    primary = await llm.fake_model(
        upstream, name="primary", fallback_model_ids=[blind.id, able.id], provider=dict(max_retries=0)
    )
    upstream.faults("status:503")  # the primary fails; "blind" cannot take tools; "able" answers
    messages = await llm.generate(primary.id, tools=[llm_pb2.Tool(name="get_weather")])
    assert messages[0].served_model_id == able.id and any(m.tool_calls for m in messages)
    assert [s.body["model"] for s in upstream.seen] == ["primary", "able"]


async def test_capabilities_are_admin_settable_and_reset_to_the_provider_default(llm, upstream):
    model = await llm.fake_model(upstream, name="caps")
    update = await llm.stub.UpdateModel(
        llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=model.id, capabilities=llm_pb2.ModelCapabilities(vision=False, reasoning=True)),
            update_mask=field_mask_pb2.FieldMask(paths=["capabilities.vision", "capabilities.reasoning"]),
        ),
        metadata=ADMIN,
    )
    assert update.model.capabilities == llm_pb2.ModelCapabilities(
        tools=True, vision=False, json_schema=True, reasoning=True
    )
    reset = await llm.stub.UpdateModel(
        llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=model.id), update_mask=field_mask_pb2.FieldMask(paths=["capabilities.vision"])
        ),
        metadata=ADMIN,
    )
    assert reset.model.capabilities.vision and reset.model.capabilities.reasoning


async def test_a_tool_call_delta_is_a_token_for_retries(llm, upstream):
    model = await llm.fake_model(upstream, provider=dict(max_retries=2))
    tools = [llm_pb2.Tool(name="get_weather", parameters=_struct(WEATHER["function"]["parameters"]))]
    upstream.faults("status:503")  # before anything: retried, and the call comes through whole
    messages = await llm.generate(model.id, tools=tools)
    assert "".join(p.arguments for m in messages for p in m.tool_calls) == '{"city": "Paris ☀"}'
    assert upstream.hits() == 2
    upstream.reset()
    upstream.faults("reset:2")  # after the call's first delta went out: the stream fails, not retried
    call = llm.stub.Generate(
        llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")], tools=tools), metadata=ADMIN
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for message in call:
            received.append(message)
    assert received and received[0].tool_calls[0].name == "get_weather"
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE and upstream.hits() == 1


async def test_strict_tool_arguments_that_do_not_validate_fail_complete(sdk, llm, upstream):
    await llm.fake_model(upstream, name="gpt-fake")
    strict = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "pattern": "^[A-Za-z ]+$"}},
                "required": ["city"],
            },
        },
    }
    with pytest.raises(openai.InternalServerError) as failure:  # the fake answers "Paris ☀"
        await sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}], tools=[strict])
    assert "get_weather" in failure.value.body["message"] and "does not match" in failure.value.body["message"]
    assert upstream.seen[-1].body["tools"][0]["function"]["strict"] is True
    loose = {"type": "function", "function": {**strict["function"], "strict": False}}
    answer = await sdk.chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": "x"}], tools=[loose]
    )
    assert answer.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris ☀"}'


async def test_a_response_format_reaches_an_anthropic_upstream_as_a_forced_tool(sdk, llm, upstream):
    await anthropic_model(llm, upstream)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
        "required": ["city", "celsius"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}}
    whole = await sdk.chat.completions.create(
        model="claude-fake", response_format=fmt, messages=[{"role": "user", "content": "x"}]
    )
    assert json.loads(whole.choices[0].message.content) == {"city": "Paris ☀", "celsius": 21}
    assert whole.choices[0].finish_reason == "stop" and not whole.choices[0].message.tool_calls
    assert upstream.seen[-1].body["tool_choice"] == {"type": "tool", "name": "weather"}
    stream = await sdk.chat.completions.create(
        model="claude-fake", response_format=fmt, stream=True, messages=[{"role": "user", "content": "x"}]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert json.loads(text) == {"city": "Paris ☀", "celsius": 21}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "extra": 1}}},
            "response_format.json_schema.extra",
        ),
    ],
)
async def test_openai_fields_typecase_does_not_support_are_a_400_naming_them(app, llm, upstream, body, field):
    await llm.fake_model(upstream, name="gpt-fake")
    request = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}], **body}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{app.http_port}/openai/v1/chat/completions",
            json=request,
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == field and field in error["message"]
    assert upstream.hits() == 0


async def test_tool_and_image_limits(llm, upstream):
    model = await llm.fake_model(upstream)
    limits = llm.app.settings
    many = [llm_pb2.Tool(name=f"t{i}") for i in range(limits.llm_max_tools)]
    await llm.stub.Complete(
        llm_pb2.CompleteRequest(model_id=model.id, messages=[user("x")], tools=many), metadata=ADMIN
    )  # at the limit
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.stub.Complete(
            llm_pb2.CompleteRequest(
                model_id=model.id, messages=[user("x")], tools=[*many, llm_pb2.Tool(name="one_more")]
            ),
            metadata=ADMIN,
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tools" in failure.value.details()

    def image(size: int) -> llm_pb2.ChatMessage:
        data = base64.b64encode(b"\0" * size).decode()
        return llm_pb2.ChatMessage(
            role=common_pb2.MESSAGE_ROLE_USER,
            parts=[llm_pb2.ContentPart(image=llm_pb2.ImagePart(url=f"data:image/png;base64,{data}"))],
        )

    await llm.stub.Complete(
        llm_pb2.CompleteRequest(model_id=model.id, messages=[image(limits.llm_max_image_bytes)]), metadata=ADMIN
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.stub.Complete(
            llm_pb2.CompleteRequest(model_id=model.id, messages=[image(limits.llm_max_image_bytes + 1)]), metadata=ADMIN
        )
    info, _ = error_details(failure.value)
    assert info.reason == "PAYLOAD_TOO_LARGE" and info.metadata["field"] == "messages[0].parts[0].image.url"


@pytest.mark.parametrize(
    "request_fields, field",
    [
        (dict(tools=[llm_pb2.Tool(name="bad name")]), "tools[0].name"),
        (dict(tools=[llm_pb2.Tool(name="a"), llm_pb2.Tool(name="a")]), "tools[1].name"),
        (dict(tools=[llm_pb2.Tool(name="a", parameters=_struct({"type": "nope"}))]), "tools[0].parameters"),
        (dict(tool_choice=llm_pb2.ToolChoice(tool_name="missing")), "tool_choice.tool_name"),
        (
            dict(response_format=llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)),
            "response_format.schema",
        ),
        (
            dict(messages=[llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_TOOL, content="24 °C")]),
            "messages[0].tool_call_id",
        ),
        (
            dict(
                messages=[
                    llm_pb2.ChatMessage(
                        role=common_pb2.MESSAGE_ROLE_USER,
                        parts=[llm_pb2.ContentPart(image=llm_pb2.ImagePart(url="http://example.com/a.png"))],
                    )
                ]
            ),
            "messages[0].parts[0].image.url",
        ),
        (
            dict(
                messages=[
                    llm_pb2.ChatMessage(
                        role=common_pb2.MESSAGE_ROLE_USER,
                        parts=[llm_pb2.ContentPart(image=llm_pb2.ImagePart(url="data:text/html;base64,PGI+"))],
                    )
                ]
            ),
            "messages[0].parts[0].image.url",
        ),
    ],
)
async def test_malformed_tool_requests_name_the_field(llm, upstream, request_fields, field):
    model = await llm.fake_model(upstream)
    fields = {"messages": [user("x")], **request_fields}
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.stub.Complete(llm_pb2.CompleteRequest(model_id=model.id, **fields), metadata=ADMIN)
    info, _ = error_details(failure.value)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.metadata["field"] == field
    assert upstream.hits() == 0


async def test_images_by_file_id_are_refused_clearly(llm, upstream):
    model = await llm.fake_model(upstream)
    message = llm_pb2.ChatMessage(
        role=common_pb2.MESSAGE_ROLE_USER, parts=[llm_pb2.ContentPart(image=llm_pb2.ImagePart(file_id="01JFILE"))]
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.stub.Complete(llm_pb2.CompleteRequest(model_id=model.id, messages=[message]), metadata=ADMIN)
    assert (
        failure.value.code() == grpc.StatusCode.UNIMPLEMENTED and "https URL or a data: URI" in failure.value.details()
    )
