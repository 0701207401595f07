"""The built-in SmolLM2-135M answers tool calls and structured output that parse and validate, through grammar-
constrained decoding, as the openai SDK's parse() and LangChain's ChatOpenAI see it over /openai/v1."""

from __future__ import annotations

import json

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.conftest import ADMIN_KEY
from typecase.v1 import common_pb2, llm_pb2

MODEL = "smollm2-135m-instruct"


class City(BaseModel):
    name: str = Field(description="the city's name")
    population: int = Field(description="people living there")
    coastal: bool


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str, utc_offset: int) -> str:
    """The local time in a city."""
    return "12:00"


@pytest.fixture
async def sdk(app):
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{app.http_port}/openai/v1", api_key=ADMIN_KEY, max_retries=0
    )
    yield client
    await client.close()


def chat_model(app, **options) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=f"http://127.0.0.1:{app.http_port}/openai/v1",
        api_key=ADMIN_KEY,
        temperature=0,
        max_tokens=60,
        max_retries=0,
        **options,
    )


async def test_parse_returns_a_validated_object_from_the_local_model(sdk):
    completion = await sdk.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Lisbon."}],
        response_format=City,
        max_tokens=60,
        temperature=0,
    )
    city = completion.choices[0].message.parsed
    assert isinstance(city, City) and city.name
    streamed = await sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Oslo."}],
        max_tokens=60,
        temperature=0,
        stream=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "City", "schema": City.model_json_schema(), "strict": True},
        },
    )
    City.model_validate_json("".join([c.choices[0].delta.content or "" async for c in streamed if c.choices]))


async def test_a_required_tool_call_from_the_local_model_parses_and_validates(sdk):
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[weather],
        tool_choice="required",
        max_tokens=30,
        temperature=0,
        stream=True,
    )
    chunks = [c async for c in stream]
    pieces = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    assert len(pieces) > 2  # the arguments stream as the model writes them
    assert set(json.loads("".join(p.function.arguments or "" for p in pieces))) == {"city"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


async def test_langchain_bind_tools_gets_tool_calls_from_the_local_model(app):
    llm = chat_model(app).bind_tools([get_weather, get_time], tool_choice="required")
    reply = await llm.ainvoke([HumanMessage("What is the weather in Paris?")])
    assert isinstance(reply, AIMessage) and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] in ("get_weather", "get_time") and "city" in call["args"] and call["id"]
    # The result goes back as a ToolMessage; the model answers in text (tool_choice no longer forced).
    result = (get_weather if call["name"] == "get_weather" else get_time).invoke(call["args"])
    answer = (
        await chat_model(app)
        .bind_tools([get_weather, get_time])
        .ainvoke([HumanMessage("What is the weather in Paris?"), reply, ToolMessage(result, tool_call_id=call["id"])])
    )
    assert isinstance(answer.content, str) and answer.content and not answer.tool_calls


async def test_langchain_with_structured_output_works_on_the_local_model(app):
    for method in ("json_schema", "function_calling"):
        structured = chat_model(app).with_structured_output(City, method=method)
        city = await structured.ainvoke("Describe Lisbon.")
        assert isinstance(city, City), method


async def test_local_tool_calls_over_grpc_stream_and_complete(app):
    service = app.servicers["LLMService"]
    model_id = (await service.catalog.get_defaults()).chat_model_id
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tool_pb = llm_pb2.Tool(name="get_weather", description="weather in a city", strict=True)
    tool_pb.parameters.update(parameters)
    request = llm_pb2.GenerateRequest(
        model_id=model_id,
        tools=[tool_pb],
        tool_choice=llm_pb2.ToolChoice(tool_name="get_weather"),
        config=llm_pb2.GenerationConfig(max_tokens=30, temperature=0),
        messages=[llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="Weather in Rome?")],
    )
    messages = [m async for m in service.generate(request)]
    assert messages[0].tool_calls[0].name == "get_weather" and messages[0].HasField("ttft")
    assert json.loads("".join(p.arguments for m in messages for p in m.tool_calls))["city"]
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    complete = llm_pb2.CompleteRequest()
    complete.ParseFromString(request.SerializeToString())
    whole = await service.complete(complete)
    assert whole.tool_calls[0].name == "get_weather" and json.loads(whole.tool_calls[0].arguments)["city"]


def test_the_local_model_takes_json_schemas_up_to_its_size_limit():
    from typecase.server.llm.providers import ChatCall, Message, ResponseFormat, UpstreamError
    from typecase.server.llm.providers.grammar import constraint

    def call(description: str) -> ChatCall:
        schema = {"type": "object", "description": description}
        return ChatCall("m", [Message("user", "x")], response_format=ResponseFormat("json_schema", "s", schema))

    limit = len('{"description":"","type":"object"}') + 10
    assert constraint(call("é" * 5), limit) is not None  # 10 bytes of UTF-8: at the limit
    with pytest.raises(UpstreamError) as failure:
        constraint(call("é" * 5 + "x"), limit)
    assert f"at most {limit} bytes" in failure.value.message


async def test_a_schema_over_the_local_limit_is_refused_before_generating(make_app):
    from typecase.server.rpc.errors import TypecaseError

    app = await make_app(llm_local_max_schema_bytes=64)
    service = app.servicers["LLMService"]
    request = llm_pb2.CompleteRequest(
        model_id=MODEL,
        messages=[llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="x")],
        response_format=llm_pb2.ResponseFormat(type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
    )
    request.response_format.schema.update(
        {"type": "object", "properties": {"a_long_property_name": {"type": "string"}}}
    )
    with pytest.raises(TypecaseError) as failure:
        await service.complete(request)
    assert failure.value.reason == "INVALID_ARGUMENT" and "at most 64 bytes" in failure.value.message
