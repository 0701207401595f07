"""Generation over real gRPC against the fake upstream: the stream's shape, both wire formats, options reaching
the upstream, cancellation, and timeouts."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.llm.conftest import ADMIN, error_details, seconds, text_of, user
from typecase.v1 import common_pb2, llm_pb2


async def test_stream_has_seq_deltas_then_final_with_usage(llm, upstream):
    model = await llm.fake_model(upstream)
    messages = await llm.generate(model.id)
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    assert text_of(messages) == "tok0 tok1 tok2 tok3 tok4 "
    assert messages[0].served_model_id == model.id and messages[0].ttft.ToNanoseconds() > 0
    final = messages[-1]
    assert final.finish_reason == common_pb2.FINISH_REASON_STOP
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (11, 5, 16)
    assert all(not m.finish_reason for m in messages[:-1])
    seen = upstream.seen[-1]
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}
    assert seen.headers["authorization"] == "Bearer sk-test-secret-1234"


async def test_stream_asks_for_identity_and_still_reads_a_compressed_one(llm, upstream):
    model = await llm.fake_model(upstream)
    upstream.faults("gzip")
    assert text_of(await llm.generate(model.id)) == "tok0 tok1 tok2 tok3 tok4 "
    assert upstream.hits("/chat/completions") == 1  # read the first time, not retried
    headers = upstream.seen[-1].headers
    assert headers["accept-encoding"] == "identity" and headers["accept"] == "text/event-stream"


async def test_options_and_model_config_reach_the_upstream(llm, upstream):
    model = await llm.fake_model(
        upstream,
        upstream_name="real-upstream-name",
        max_output_tokens=3,
        config=_struct({"temperature": 0.1, "extra_body": {"enable_thinking": False}}),
    )
    config = llm_pb2.GenerationConfig(max_tokens=50, stop=["END"], top_p=0.5, seed=7)
    messages = await llm.generate(model.id, config=config, user="end-user-1")
    body = upstream.seen[-1].body
    assert body["model"] == "real-upstream-name"
    assert body["max_tokens"] == 3  # capped at max_output_tokens
    assert body["temperature"] == 0.1 and body["top_p"] == 0.5 and body["seed"] == 7  # request over model config
    assert body["stop"] == ["END"] and body["user"] == "end-user-1" and body["enable_thinking"] is False
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
    # The model's options are worked out once per model row: a second call gets the same, not what the first left.
    await llm.generate(model.id)
    body = upstream.seen[-1].body
    assert body["model"] == "real-upstream-name" and body["max_tokens"] == 3 and body["temperature"] == 0.1
    assert body["enable_thinking"] is False and "top_p" not in body and "stop" not in body and "user" not in body


async def test_anthropic_messages_stream(llm, upstream):
    provider = await llm.provider(
        upstream.base_url, name="anthropic-fake", kind=llm_pb2.PROVIDER_TYPE_ANTHROPIC, api_key="sk-ant-0123456789"
    )
    model = await llm.model(provider.id, "claude-fake", upstream_name="claude-x")
    call = llm.stub.Generate(
        llm_pb2.GenerateRequest(
            model_id=model.id,
            messages=[
                llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content="Be brief."),
                user("hi"),
                user("again"),
            ],
            config=llm_pb2.GenerationConfig(stop=["###"], max_tokens=3),
        ),
        metadata=ADMIN,
    )
    messages = [m async for m in call]
    assert text_of(messages) == "tok0 tok1 tok2 "
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert (messages[-1].usage.prompt_tokens, messages[-1].usage.completion_tokens) == (13, 3)
    seen = upstream.seen[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == "sk-ant-0123456789" and seen.headers["anthropic-version"]
    assert seen.body["system"] == [{"type": "text", "text": "Be brief."}]
    assert seen.body["messages"] == [{"role": "user", "content": "hi\n\nagain"}]
    assert seen.body["stop_sequences"] == ["###"] and seen.body["max_tokens"] == 3


async def test_complete_uses_the_non_streaming_upstream(llm, upstream):
    model = await llm.fake_model(upstream)
    reply = await llm.stub.Complete(llm_pb2.CompleteRequest(model_id=model.id, messages=[user("hi")]), metadata=ADMIN)
    assert reply.text == "tok0 tok1 tok2 tok3 tok4 " and reply.served_model_id == model.id
    assert reply.usage.total_tokens == 16 and reply.latency.ToNanoseconds() > 0
    assert upstream.seen[-1].body["stream"] is False


async def test_model_by_name_and_default_model(llm, upstream, app):
    model = await llm.fake_model(upstream, name="by-name")
    assert text_of(await llm.generate("by-name"))
    await llm.stub.UpdateDefaults(
        llm_pb2.UpdateDefaultsRequest(defaults=llm_pb2.LLMDefaults(chat_model_id=model.id)), metadata=ADMIN
    )
    messages = await llm.generate("")
    assert messages[0].served_model_id == model.id
    assert await app.servicers["LLMService"].default_model_id("chat") == model.id


async def test_unknown_offline_and_wrong_type_models(llm, upstream):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.generate("no-such-model")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(failure.value)[0].reason == "MODEL_NOT_FOUND"

    offline = await llm.fake_model(upstream, name="offline", online=False)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.generate(offline.id)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(failure.value)[0].reason == "MODEL_OFFLINE"

    embedding = await llm.fake_model(upstream, name="embedder", model_type=llm_pb2.MODEL_TYPE_EMBEDDING)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.generate(embedding.id)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.hits() == 0


async def test_cancelling_the_call_closes_the_upstream_stream(llm, upstream):
    upstream.tokens, upstream.token_delay = 200, 0.05
    model = await llm.fake_model(upstream)
    call = llm.stub.Generate(llm_pb2.GenerateRequest(model_id=model.id, messages=[user("long")]), metadata=ADMIN)
    received = 0
    async for _ in call:
        received += 1
        if received == 2:
            break
    call.cancel()
    cancelled = time.monotonic()
    for _ in range(100):
        if upstream.seen[-1].closed_early:
            break
        await asyncio.sleep(0.02)
    seen = upstream.seen[-1]
    assert seen.closed_early and not seen.completed
    assert seen.closed_time - cancelled < 1.0


async def test_python_api_aclose_closes_the_upstream_stream(app, llm, upstream):
    upstream.tokens, upstream.token_delay = 200, 0.05
    model = await llm.fake_model(upstream)
    stream = app.servicers["LLMService"].generate(llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")]))
    first = await anext(stream)
    assert first.text == "tok0 "
    await stream.aclose()
    for _ in range(100):
        if upstream.seen[-1].closed_early:
            break
        await asyncio.sleep(0.02)
    assert upstream.seen[-1].closed_early


async def test_first_token_timeout(llm, upstream):
    model = await llm.fake_model(upstream, provider=dict(first_token_timeout=seconds(0.3), max_retries=0))
    upstream.faults("slow_first:3")
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.generate(model.id)
    assert time.monotonic() - started < 2
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_details(failure.value)[0].reason == "UPSTREAM_TIMEOUT"


async def test_idle_timeout_mid_stream(llm, upstream):
    model = await llm.fake_model(upstream, provider=dict(idle_timeout=seconds(0.3), max_retries=0))
    upstream.faults("stall:2:3")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for message in llm.stub.Generate(
            llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")]), metadata=ADMIN
        ):
            received.append(message)
    assert text_of(received) == "tok0 tok1 "
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "stalled" in failure.value.details()


def _struct(data):
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update(data)
    return s


async def test_metrics_are_labelled_by_provider_and_model(app, llm, upstream):
    import httpx

    model = await llm.fake_model(upstream, name="metered", provider=dict(max_retries=0))
    await llm.generate(model.id)
    upstream.faults("status:503")
    with pytest.raises(grpc.aio.AioRpcError):
        await llm.generate(model.id)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{app.http_port}/metrics")).text
    labels = 'model="metered",provider="metered-provider"'  # the exposition sorts label names
    for line in (
        f"typecase_llm_time_to_first_token_seconds_count{{{labels}}} 1.0",
        f"typecase_llm_input_tokens_total{{{labels}}} 11.0",
        f"typecase_llm_output_tokens_total{{{labels}}} 5.0",
        'typecase_llm_failures_total{model="metered",provider="metered-provider",reason="UPSTREAM_UNAVAILABLE"} 1.0',
        f"typecase_llm_in_flight_requests{{{labels}}} 0.0",
    ):
        assert line in text, line
    assert f"typecase_llm_inter_token_seconds_count{{{labels}}}" in text
    assert (
        'typecase_llm_request_duration_seconds_count{model="metered",operation="generate",'
        'provider="metered-provider"} 1.0'
    ) in text


async def test_cancellations_at_any_point_never_leak_upstream_connections(make_app, upstream):
    """A pool of 8 connections survives 40 streams abandoned at random points (mid-read, on the final chunk,
    while the connection is being returned): a leaked connection would make the last requests time out."""
    import random

    app = await make_app(llm_max_connections=8)
    service = app.servicers["LLMService"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        from tests.llm.conftest import Client
        from typecase.v1 import llm_pb2_grpc

        client = Client(llm_pb2_grpc.LLMServiceStub(channel), app)
        model = await client.fake_model(upstream, provider=dict(connect_timeout=seconds(1)))
    upstream.tokens = 6
    request = llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")])
    rng = random.Random(7)

    async def consume(limit: int) -> None:
        stream = service.generate(request)
        try:
            async for i, _ in _aenumerate(stream):
                if i >= limit:
                    break
        finally:
            await stream.aclose()

    for _ in range(40):
        task = asyncio.create_task(consume(rng.randint(1, 8)))
        await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.001, 0.002, 0.005]))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for _ in range(10):  # more than the pool holds: every connection must have been returned or closed
        messages = [m async for m in service.generate(request)]
        assert messages[-1].finish_reason == common_pb2.FINISH_REASON_STOP


async def _aenumerate(stream):
    i = 0
    async for item in stream:
        i += 1
        yield i, item
