"""The built-in local models with no configuration: real generation (SmolLM2 on llama.cpp) and embeddings (MiniLM),
over the transcoded HTTP API (NDJSON and SSE), the OpenAI-compatible API with the official SDK, and the Python API."""

from __future__ import annotations

import json
import math

import httpx
import openai

from tests.conftest import ADMIN_KEY
from tests.llm.conftest import ADMIN
from typecase.server.llm.providers.local import LocalAdapter
from typecase.v1 import common_pb2, llm_pb2

HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}
PROMPT = {
    "messages": [{"role": "MESSAGE_ROLE_USER", "content": "Name three colours."}],
    "config": {"max_tokens": 8, "temperature": 0},
}


async def _defaults(app) -> llm_pb2.LLMDefaults:
    return await app.servicers["LLMService"].catalog.get_defaults()


async def test_local_models_are_registered_once_as_defaults(app, llm):
    defaults = await _defaults(app)
    chat = await llm.get_model(defaults.chat_model_id)
    embedding = await llm.get_model(defaults.knowledge_embedding_model_id)
    assert chat.name == "smollm2-135m-instruct" and chat.type == llm_pb2.MODEL_TYPE_LLM and chat.online
    assert embedding.name == "all-minilm-l6-v2" and embedding.embedding_dimensions == 384
    assert defaults.flow_model_id == defaults.title_model_id == chat.id
    await app.servicers["LLMService"].registry.seed_local_models()  # a restart does not duplicate them
    listed = await llm.stub.ListModels(llm_pb2.ListModelsRequest(), metadata=ADMIN)
    assert sorted(m.name for m in listed.models) == ["all-minilm-l6-v2", "smollm2-135m-instruct"]


async def test_generate_streams_ndjson_and_sse_over_http(app):
    model_id = (await _defaults(app)).chat_model_id
    url = f"http://127.0.0.1:{app.http_port}/v1/models/{model_id}:generate"
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", url, json=PROMPT, headers=HEADERS) as response:
            assert response.status_code == 200, await response.aread()
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
        results = [line["result"] for line in lines]
        assert [int(r["seq"]) for r in results] == list(range(1, len(results) + 1))
        assert len(results) >= 3 and "".join(r["text"] for r in results).strip()
        assert results[0]["served_model_id"] == model_id
        assert results[-1]["finish_reason"] in ("FINISH_REASON_LENGTH", "FINISH_REASON_STOP")
        assert 0 < results[-1]["usage"]["completion_tokens"] <= 8

        async with http.stream(
            "POST", url, json=PROMPT, headers={**HEADERS, "accept": "text/event-stream"}
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            body = (await response.aread()).decode()
    events = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    ids = [int(line[3:]) for line in body.splitlines() if line.startswith("id:")]
    assert ids == list(range(1, len(events) + 1))
    assert "".join(e["text"] for e in events) == "".join(r["text"] for r in results)  # temperature 0: same answer


async def test_openai_sdk_streams_a_completion_and_gets_embeddings(app):
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{app.http_port}/openai/v1", api_key=ADMIN_KEY)
    stream = await client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["length"],
        ["stop"],
    )
    assert chunks[-1].usage.completion_tokens <= 8 and chunks[-1].usage.prompt_tokens > 0

    result = await client.embeddings.create(
        model="all-minilm-l6-v2", input=["a cat sits on the mat", "a kitten on a rug", "stock prices fell"]
    )
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > 0

    models = await client.models.list()
    assert {m.id for m in models.data} == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    await client.close()


async def test_local_generation_honours_stop_and_max_tokens(app):
    llm = app.servicers["LLMService"]
    model_id = (await _defaults(app)).chat_model_id

    async def answer(**config) -> tuple[str, llm_pb2.GenerateResponse]:
        request = llm_pb2.GenerateRequest(
            model_id=model_id,
            config=llm_pb2.GenerationConfig(temperature=0, **config),
            messages=[
                llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="Write a sentence about the sea.")
            ],
        )
        messages = [m async for m in llm.generate(request)]
        return "".join(m.text for m in messages), messages[-1]

    full, final = await answer(max_tokens=12)
    assert final.finish_reason == common_pb2.FINISH_REASON_LENGTH and final.usage.completion_tokens == 12
    stop = full.strip().split()[2]  # a word from the middle of the answer
    cut, final = await answer(max_tokens=12, stop=[stop])
    assert cut == full[: full.index(stop)] and final.finish_reason == common_pb2.FINISH_REASON_STOP


async def test_local_generation_continues_a_trailing_assistant_message(app):
    """A prefill (what a replica continuing a dead replica's turn sends) is continued, not answered afresh."""
    llm = app.servicers["LLMService"]
    model_id = (await _defaults(app)).chat_model_id
    question = llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="Write a sentence about the sea.")

    async def answer(*messages: llm_pb2.ChatMessage, max_tokens: int) -> str:
        request = llm_pb2.GenerateRequest(
            model_id=model_id, messages=messages, config=llm_pb2.GenerationConfig(temperature=0, max_tokens=max_tokens)
        )
        return "".join([m.text async for m in llm.generate(request)])

    full = await answer(question, max_tokens=24)
    words = full.split(" ")
    assert len(words) > 6, full
    prefix = " ".join(words[:4])  # cut at a word's end, as the tokens were
    rest = await answer(
        question, llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_ASSISTANT, content=prefix), max_tokens=6
    )
    assert rest and full.startswith(prefix + rest), (full, prefix, rest)


async def test_cancelling_local_generation_stops_the_model(app, monkeypatch):
    """A consumer that leaves stops the model's thread at its next token, so the next request does not queue behind
    the ~490 tokens the first would still produce. Seen on the generation itself (it returns without finishing),
    not by timing: on a loaded machine the pace measured before the cancel says little about the wait after it."""
    generations: list[list] = []
    generate = LocalAdapter._generate

    def recorded(self, call, emit, cancelled):
        emitted: list = []
        generations.append(emitted)

        def emit_and_record(item):
            emitted.append(item)
            emit(item)

        generate(self, call, emit_and_record, cancelled)

    monkeypatch.setattr(LocalAdapter, "_generate", recorded)
    llm = app.servicers["LLMService"]
    model_id = (await _defaults(app)).chat_model_id
    messages = [llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="Count to one thousand.")]
    long = llm.generate(
        llm_pb2.GenerateRequest(model_id=model_id, messages=messages, config=llm_pb2.GenerationConfig(max_tokens=500))
    )
    for _ in range(6):
        await anext(long)
    await long.aclose()
    short = llm.generate(
        llm_pb2.GenerateRequest(model_id=model_id, messages=messages, config=llm_pb2.GenerationConfig(max_tokens=2))
    )
    await anext(short)  # served: the chat thread is free again
    await short.aclose()
    cut, served = generations
    assert not any(delta.finish_reason for delta in cut), "the cancelled generation ran to its end"
    assert len(cut) < 500 and served


async def test_embed_texts_python_api_and_grpc(app, llm):
    service = app.servicers["LLMService"]
    vectors = await service.embed_texts(["one", "two", "three"])
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-3)  # normalised
    assert await service.embedding_dimensions() == 384
    reply = await llm.stub.Embed(llm_pb2.EmbedRequest(model_id="all-minilm-l6-v2", inputs=["one"]), metadata=ADMIN)
    assert list(reply.embeddings[0].values) == vectors[0] or math.isclose(
        _cosine(reply.embeddings[0].values, vectors[0]), 1.0, rel_tol=1e-5
    )
    assert reply.usage.prompt_tokens > 0


def _cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
