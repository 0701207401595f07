"""Embeddings (batched upstream calls, any number through the Python API) and reranking against the fake upstream."""

from __future__ import annotations

import grpc
import pytest

from tests.llm.conftest import ADMIN, error_details
from typecase.v1 import llm_pb2


async def test_embed_texts_are_batched_in_order(make_app, upstream):
    app = await make_app(llm_embed_batch_size=2)
    service = app.servicers["LLMService"]
    from tests.llm.conftest import Client
    from typecase.v1 import llm_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        llm = Client(llm_pb2_grpc.LLMServiceStub(channel), app)
        model = await llm.fake_model(upstream, name="embedder", model_type=llm_pb2.MODEL_TYPE_EMBEDDING)
        texts = ["a", "bb", "ccc", "dddd", "eeeee"]
        vectors = await service.embed_texts(texts, model.id)
        assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]  # the fake puts len(text) first
        assert [len(s.body["input"]) for s in upstream.seen] == [2, 2, 1]
        assert await service.embedding_dimensions(model.id) == 8  # learned from the first answer

        many = [f"t{i}" for i in range(300)]
        assert len(await service.embed_texts(many, model.id)) == 300  # the Python API takes any number
        with pytest.raises(grpc.aio.AioRpcError) as failure:  # the RPC keeps its documented 256
            await llm.stub.Embed(llm_pb2.EmbedRequest(model_id=model.id, inputs=many), metadata=ADMIN)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        reply = await llm.stub.Embed(
            llm_pb2.EmbedRequest(model_id="embedder", inputs=["xy"], dimensions=4), metadata=ADMIN
        )
        assert list(reply.embeddings[0].values) == [2.0, 0.0, 0.5, 0.5] and reply.usage.prompt_tokens == 3
        assert reply.served_model_id == model.id


async def test_embedding_retries_and_falls_back_only_to_the_same_vector_size(llm, upstream):
    same = await llm.fake_model(
        upstream, name="same-size", model_type=llm_pb2.MODEL_TYPE_EMBEDDING, embedding_dimensions=8
    )
    other = await llm.fake_model(
        upstream, name="other-size", model_type=llm_pb2.MODEL_TYPE_EMBEDDING, embedding_dimensions=16
    )
    primary = await llm.fake_model(
        upstream,
        name="primary",
        model_type=llm_pb2.MODEL_TYPE_EMBEDDING,
        embedding_dimensions=8,
        provider=dict(max_retries=1),
        fallback_model_ids=[other.id, same.id],
    )
    upstream.faults("status:503", "ok")
    reply = await llm.stub.Embed(llm_pb2.EmbedRequest(model_id=primary.id, inputs=["x"]), metadata=ADMIN)
    assert reply.served_model_id == primary.id and upstream.hits() == 2  # retried
    upstream.faults("status:503", "status:503")
    reply = await llm.stub.Embed(llm_pb2.EmbedRequest(model_id=primary.id, inputs=["x"]), metadata=ADMIN)
    assert reply.served_model_id == same.id  # never the 16-dim model: that would corrupt a vector index


async def test_rerank(llm, upstream):
    model = await llm.fake_model(upstream, name="reranker", model_type=llm_pb2.MODEL_TYPE_RERANK)
    reply = await llm.stub.Rerank(
        llm_pb2.RerankRequest(
            model_id=model.id,
            query="red apple",
            documents=["green pear", "red apple pie", "an apple"],
            top_n=2,
            return_documents=True,
        ),
        metadata=ADMIN,
    )
    assert [(r.index, r.document) for r in reply.results] == [(1, "red apple pie"), (2, "an apple")]
    assert reply.results[0].relevance_score > reply.results[1].relevance_score

    provider = await llm.provider(upstream.base_url, name="anthropic", kind=llm_pb2.PROVIDER_TYPE_ANTHROPIC)
    unsupported = await llm.model(provider.id, "claude-rerank", model_type=llm_pb2.MODEL_TYPE_RERANK)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await llm.stub.Rerank(
            llm_pb2.RerankRequest(model_id=unsupported.id, query="q", documents=["d"]), metadata=ADMIN
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rerank" in error_details(failure.value)[0].metadata["model"]
