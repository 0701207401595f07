"""OpenTelemetry traces: a chat turn with retrieval, sent over HTTP, arrives at an OTLP/HTTP receiver on loopback as
gateway, RPC, chat turn, knowledge search and LLM spans of one trace; without an endpoint nothing is traced."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from tests.chat.conftest import register_fake_embedder, register_fake_model
from tests.chat.fake_upstream import FakeUpstream
from tests.conftest import ADMIN_KEY
from tests.tracing.otlp_receiver import OtlpReceiver
from typecase.server.config import Settings
from typecase.server.infra import tracing
from typecase.v1 import knowledge_pb2, knowledge_pb2_grpc, llm_pb2, llm_pb2_grpc

MD = (("authorization", f"Bearer {ADMIN_KEY}"),)
FACT = "The Zephyr-9 bridge over the Tagus river opened in 2031 and is painted ochre."
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture
async def upstream():
    fake = await FakeUpstream().start()
    yield fake
    await fake.stop()


async def test_a_chat_turn_with_retrieval_is_one_trace_across_gateway_chat_search_and_llm(
    app_factory, receiver, upstream
):
    app = await app_factory(otel_endpoint=receiver.url, otel_schedule_delay_seconds=0.2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        llm = llm_pb2_grpc.LLMServiceStub(channel)
        model = await register_fake_model(llm, upstream.base_url)
        embedder = await register_fake_embedder(llm, upstream.base_url)
        kbs = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        kb = (
            await kbs.CreateKnowledgeBase(
                knowledge_pb2.CreateKnowledgeBaseRequest(
                    knowledge_base=knowledge_pb2.KnowledgeBase(name="bridges", embedding_model_id=embedder.id)
                ),
                metadata=MD,
            )
        ).knowledge_base
        added = (
            await kbs.AddTextFile(
                knowledge_pb2.AddTextFileRequest(
                    kb_id=kb.id, name="bridges.txt", text=FACT + "\n\nUnrelated filler about cooking pasta."
                ),
                metadata=MD,
            )
        ).file
        async for update in kbs.WatchFile(knowledge_pb2.WatchFileRequest(file_id=added.id), metadata=MD):
            status = update.status
        assert status == knowledge_pb2.FILE_STATUS_DONE

    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=20) as http:
        session = (await http.post("/v1/sessions", json={"kb_ids": [kb.id]}, headers=headers)).json()["session"]
        async with http.stream(
            "POST",
            f"/v1/sessions/{session['id']}:chat",
            json={"content": "[tokens=5] When did the Zephyr-9 bridge open?"},
            headers={**headers, "traceparent": TRACEPARENT},
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-trace-id"] == CLIENT_TRACE  # logs and traces name the same id
            events = [json.loads(line)["result"] async for line in response.aiter_lines() if line]
    assert "citation" in events[2]["event"] and "ended" in events[-1]["event"]

    wanted = {
        "POST /v1/sessions/{id}:chat",
        "typecase.v1.ChatService/Chat",
        "chat turn",
        "knowledge search",
        f"chat {model.name}",
    }
    spans = receiver.wait_for(CLIENT_TRACE, wanted)
    by_name = {s.name: s for s in spans}
    assert wanted <= set(by_name), sorted(by_name)
    gateway, rpc = by_name["POST /v1/sessions/{id}:chat"], by_name["typecase.v1.ChatService/Chat"]
    turn, search = by_name["chat turn"], by_name["knowledge search"]
    assert gateway.parent_span_id == "00f067aa0ba902b7"  # continues the caller's trace
    assert rpc.parent_span_id == gateway.span_id and turn.parent_span_id == rpc.span_id
    assert search.parent_span_id == turn.span_id
    # the answer's LLM call is the turn's; the session title's, made beside the turn, is the RPC's
    calls = {s.parent_span_id: s for s in spans if s.name == f"chat {model.name}"}
    call = calls[turn.span_id]
    assert {s.service for s in spans} == {"typecase"}
    assert search.attributes["typecase.knowledge.hits"] >= 1
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == "fake"
    assert call.attributes["gen_ai.usage.output_tokens"] > 0 and call.attributes["gen_ai.usage.input_tokens"] > 0
    assert call.attributes["gen_ai.response.time_to_first_chunk"] > 0 and "gen_ai.first_token" in call.events
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert turn.attributes["typecase.turn_id"] == events[0]["turn_id"]


async def test_a_grpc_call_continues_the_callers_traceparent(app_factory, receiver):
    app = await app_factory(otel_endpoint=receiver.url + "/v1/traces", otel_schedule_delay_seconds=0.2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        call = llm_pb2_grpc.LLMServiceStub(channel).ListModels(
            llm_pb2.ListModelsRequest(), metadata=(*MD, ("traceparent", TRACEPARENT))
        )
        await call
        assert dict(await call.initial_metadata())["x-trace-id"] == CLIENT_TRACE
    (span,) = receiver.wait_for(CLIENT_TRACE, {"typecase.v1.LLMService/ListModels"})
    assert span.parent_span_id == "00f067aa0ba902b7" and span.attributes["rpc.method"] == "ListModels"


async def test_without_an_endpoint_nothing_is_traced(app_factory, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    app = await app_factory()
    assert app.settings.otel_endpoint is None and not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")  # the shared null context: no span objects at all
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        response = await http.get("/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200 and len(response.headers["x-trace-id"]) == 32


def test_the_standard_otlp_variable_turns_tracing_on(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert Settings(_env_file=None).otel_endpoint == "http://collector:4318"
    monkeypatch.setenv("TYPECASE_OTEL_ENDPOINT", "http://other:4318/")
    assert Settings(_env_file=None).otel_endpoint == "http://other:4318/"
    assert tracing.traces_url("http://other:4318/") == "http://other:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
