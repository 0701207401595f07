"""An upstream that never stops sending fails its call at the configured size instead of filling the server's
memory: a streamed event that does not end (TYPECASE_LLM_MAX_STREAM_EVENT_CHARS) and a unary answer that does not
end (TYPECASE_LLM_MAX_RESPONSE_BYTES), both through the public gRPC API against a real HTTP upstream."""

from __future__ import annotations

import grpc
import pytest

from tests.llm.conftest import ADMIN, Client, error_details, text_of, user
from tests.llm.fake_upstream import PIECE
from typecase.v1 import llm_pb2, llm_pb2_grpc

LIMIT = 256 * 1024
FLOOD_PIECES = 1024  # 64 MiB, 256 times the limit


@pytest.fixture
async def limited(make_app):
    app = await make_app(llm_max_stream_event_chars=LIMIT, llm_max_response_bytes=LIMIT)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield Client(llm_pb2_grpc.LLMServiceStub(channel), app)


async def test_a_streamed_event_that_never_ends_fails_the_call_at_the_limit(limited, upstream):
    model = await limited.fake_model(upstream)
    upstream.faults(f"flood:2:{FLOOD_PIECES}")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for message in limited.stub.Generate(
            llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")]), metadata=ADMIN
        ):
            received.append(message)
    assert text_of(received) == "tok0 tok1 "  # what came before the flood was delivered
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(failure.value)[0].reason == "UPSTREAM_UNAVAILABLE"
    assert f"longer than {LIMIT} characters" in failure.value.details()
    assert "TYPECASE_LLM_MAX_STREAM_EVENT_CHARS" in failure.value.details()
    # the server hung up near the limit rather than reading the whole flood (what the sockets buffer aside)
    assert upstream.seen[-1].sent < FLOOD_PIECES * len(PIECE) // 4


@pytest.mark.parametrize("length", ["chunked", "sized"])
async def test_a_unary_answer_that_never_ends_fails_the_call_at_the_limit(limited, upstream, length):
    model = await limited.fake_model(
        upstream, "embed-fake", provider={"max_retries": 0}, model_type=llm_pb2.MODEL_TYPE_EMBEDDING
    )
    upstream.faults(f"bloat:{FLOOD_PIECES}" + (":sized" if length == "sized" else ""))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await limited.stub.Embed(llm_pb2.EmbedRequest(model_id=model.id, inputs=["x"]), metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(failure.value)[0].reason == "UPSTREAM_UNAVAILABLE"
    assert f"over the limit of {LIMIT} bytes" in failure.value.details()
    assert "TYPECASE_LLM_MAX_RESPONSE_BYTES" in failure.value.details()
    assert ("bytes) is over" in failure.value.details()) == (length == "sized")  # refused on its Content-Length
    assert upstream.seen[-1].sent < FLOOD_PIECES * len(PIECE) // 4
    # an answer under the limit still goes through
    reply = await limited.stub.Embed(llm_pb2.EmbedRequest(model_id=model.id, inputs=["abc"]), metadata=ADMIN)
    assert list(reply.embeddings[0].values)[:2] == [3.0, 0.0]
