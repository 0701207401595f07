"""The local models served by a model host over its Unix socket (what `serve --workers` workers use): the real App
with TYPECASE_LLM_LOCAL_HOST_SOCKET streams, embeds, stops a cancelled generation and reports errors as the
in-process models do. The host runs in this process here (a real gRPC server on a real socket); tests/server's
workers test runs it as its own process."""

from __future__ import annotations

import time

import pytest

from tests.llm.test_local import _cosine, _defaults
from typecase.server.config import Settings
from typecase.server.llm.modelhost import ModelHost, socket_path
from typecase.server.llm.providers import CONTEXT, ChatCall, Message, Timeouts, UpstreamError
from typecase.server.llm.providers.local import LocalAdapter
from typecase.server.llm.providers.remote_local import RemoteLocalAdapter
from typecase.v1 import common_pb2, llm_pb2


@pytest.fixture
async def host(tmp_path):
    settings = Settings(data_dir=tmp_path / "host", _env_file=None)
    served = ModelHost(settings, socket_path(settings.data_dir))
    await served.start()
    yield served
    await served.stop(0)


@pytest.fixture
async def app(make_app, host):
    return await make_app(llm_local_host_socket=str(host.path))


def _user(text: str) -> list[llm_pb2.ChatMessage]:
    return [llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=text)]


async def test_workers_generate_and_embed_through_the_host(app, host):
    llm = app.servicers["LLMService"]
    model_id = (await _defaults(app)).chat_model_id
    request = llm_pb2.GenerateRequest(
        model_id=model_id,
        messages=_user("Name three colours."),
        config=llm_pb2.GenerationConfig(max_tokens=6, temperature=0),
    )
    chunks = [c async for c in llm.generate(request)]
    assert "".join(c.text for c in chunks).strip()
    assert chunks[-1].finish_reason in (common_pb2.FINISH_REASON_LENGTH, common_pb2.FINISH_REASON_STOP)
    assert 0 < chunks[-1].usage.completion_tokens <= 6 and chunks[-1].usage.prompt_tokens > 0
    # the same answer as the model run here (temperature 0)
    direct = LocalAdapter.from_settings(Settings(_env_file=None))
    call = ChatCall("SmolLM2-135M-Instruct", [Message("user", "Name three colours.")], max_tokens=6, temperature=0)
    expected = await direct.chat(call, Timeouts(5, 120, 60))
    assert "".join(c.text for c in chunks) == expected.text
    vectors = await llm.embed_texts(["one", "two"])
    here = await direct.embed("all-MiniLM-L6-v2", ["one", "two"], Timeouts(5, 120, 60))
    assert len(vectors) == 2 and _cosine(vectors[0], here.vectors[0]) > 0.99999
    await direct.aclose()
    assert isinstance(llm.inference._shared["local"], RemoteLocalAdapter)  # not a model of its own


async def test_a_cancelled_generation_stops_on_the_host(app):
    llm = app.servicers["LLMService"]
    model_id = (await _defaults(app)).chat_model_id
    long = llm.generate(
        llm_pb2.GenerateRequest(
            model_id=model_id, messages=_user("Count to one thousand."), config=llm_pb2.GenerationConfig(max_tokens=400)
        )
    )
    began = time.perf_counter()
    await anext(long)
    first = time.perf_counter() - began  # the prompt's evaluation: slow on a busy machine, the same for `short`
    began = time.perf_counter()
    for _ in range(5):
        await anext(long)
    per_chunk = (time.perf_counter() - began) / 5  # this machine's pace right now, whatever its load
    await long.aclose()  # ~390 more chunks would follow on the host; the next request must not wait for them
    started = time.perf_counter()
    short = llm.generate(
        llm_pb2.GenerateRequest(
            model_id=model_id, messages=_user("Count to one thousand."), config=llm_pb2.GenerationConfig(max_tokens=2)
        )
    )
    await anext(short)
    waited = time.perf_counter() - started
    assert waited < 3 * first + 100 * per_chunk, (waited, first, per_chunk)
    await short.aclose()


async def test_host_errors_cross_as_the_upstream_error_they_were(host):
    remote = RemoteLocalAdapter(str(host.path))
    too_long = ChatCall("SmolLM2-135M-Instruct", [Message("user", "word " * 5000)], max_tokens=2)
    with pytest.raises(UpstreamError) as caught:
        await remote.chat(too_long, Timeouts(5, 60, 30))
    assert caught.value.kind == CONTEXT and "the local model's context is" in caught.value.message
    await host.stop(0)
    with pytest.raises(UpstreamError) as caught:  # the host is gone: retryable, as an unreachable upstream is
        await remote.embed("all-MiniLM-L6-v2", ["one"], Timeouts(1, 1, 1))
    assert caught.value.retryable
    await remote.aclose()
