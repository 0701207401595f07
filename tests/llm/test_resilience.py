"""Faults injected in a real upstream: retries, Retry-After, no retry after the first token, the breaker opening and
closing, fallbacks, and the per-model limits (in one process; tests/llm/test_shared_limits.py covers two)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.conftest import free_port
from tests.llm.conftest import ADMIN, error_details, text_of, user
from typecase.v1 import llm_pb2


async def _failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


async def test_retries_succeed_when_the_upstream_recovers(llm, upstream):
    model = await llm.fake_model(upstream)
    upstream.faults("status:503", "status:500")
    messages = await llm.generate(model.id)
    assert text_of(messages) == "tok0 tok1 tok2 tok3 tok4 "
    assert upstream.hits() == 3
    status = await llm.get_model(model.id)
    assert status.status.breaker_state == llm_pb2.BREAKER_STATE_CLOSED and status.status.consecutive_failures == 0


async def test_connect_errors_are_retried_then_reported_unavailable(llm):
    provider = await llm.provider(f"http://127.0.0.1:{free_port()}/v1", name="nowhere")
    model = await llm.model(provider.id, "nowhere-model")
    error = await _failure(llm.generate(model.id))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info, _ = error_details(error)
    assert info.reason == "UPSTREAM_UNAVAILABLE" and info.metadata["model_id"] == model.id
    assert "3 attempts" in error.details() or "connection failed" in error.details()


async def test_429_retry_after_is_honoured(llm, upstream):
    model = await llm.fake_model(upstream)
    upstream.faults("status:429:1")
    started = time.monotonic()
    messages = await llm.generate(model.id)
    assert text_of(messages)
    assert time.monotonic() - started >= 0.95  # waited what the upstream asked, not the 10 ms backoff
    assert upstream.hits() == 2


async def test_429_asking_longer_than_allowed_fails_at_once_with_retry_info(llm, upstream):
    model = await llm.fake_model(upstream)
    upstream.faults("status:429:30")
    started = time.monotonic()
    error = await _failure(llm.generate(model.id))
    assert time.monotonic() - started < 1
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, delay = error_details(error)
    assert info.reason == "UPSTREAM_RATE_LIMITED" and info.metadata["upstream_status"] == "429"
    assert delay == pytest.approx(30, abs=1)
    assert upstream.hits() == 1


async def test_no_retry_after_the_first_token(llm, upstream):
    model = await llm.fake_model(upstream)
    upstream.faults("reset:2")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for message in llm.stub.Generate(
            llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")]), metadata=ADMIN
        ):
            received.append(message)
    assert text_of(received) == "tok0 tok1 "  # the caller keeps what it got...
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(failure.value)[0].reason == "UPSTREAM_UNAVAILABLE"
    assert upstream.hits() == 1  # ...and the upstream was not asked again


async def test_client_errors_are_not_retried(llm, upstream):
    model = await llm.fake_model(upstream)
    upstream.faults("status:400:context")
    error = await _failure(llm.generate(model.id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(error)[0].reason == "CONTEXT_TOO_LONG"
    upstream.faults("status:401")
    error = await _failure(llm.generate(model.id))
    assert error.code() == grpc.StatusCode.UNKNOWN
    info, _ = error_details(error)
    assert info.reason == "UPSTREAM_ERROR" and info.metadata["upstream_status"] == "401"
    assert upstream.hits() == 2


async def test_breaker_opens_after_consecutive_failures_then_a_probe_closes_it(llm, upstream):
    model = await llm.fake_model(upstream, provider=dict(max_retries=0))
    upstream.faults("status:500", "status:500", "status:500")
    for _ in range(3):  # threshold 3 in the test settings
        assert (await _failure(llm.generate(model.id))).code() == grpc.StatusCode.UNAVAILABLE
    status = (await llm.get_model(model.id)).status
    assert status.breaker_state == llm_pb2.BREAKER_STATE_OPEN and status.consecutive_failures == 3
    assert status.last_error.code == grpc.StatusCode.UNAVAILABLE.value[0] and status.HasField("open_until")

    error = await _failure(llm.generate(model.id))  # fails fast, the upstream is left alone
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info, delay = error_details(error)
    assert info.reason == "CIRCUIT_OPEN" and 0 < delay <= 1
    assert upstream.hits() == 3

    await asyncio.sleep(0.7)  # cooldown 0.6 s: the next request is the half-open probe
    assert (await llm.get_model(model.id)).status.breaker_state == llm_pb2.BREAKER_STATE_HALF_OPEN
    assert text_of(await llm.generate(model.id))
    status = (await llm.get_model(model.id)).status
    assert status.breaker_state == llm_pb2.BREAKER_STATE_CLOSED and status.consecutive_failures == 0
    assert upstream.hits() == 4


async def test_failed_probe_reopens_the_breaker(llm, upstream):
    model = await llm.fake_model(upstream, provider=dict(max_retries=0))
    upstream.faults(*["status:503"] * 4)
    for _ in range(3):
        await _failure(llm.generate(model.id))
    await asyncio.sleep(0.7)
    assert error_details(await _failure(llm.generate(model.id)))[0].reason == "UPSTREAM_UNAVAILABLE"  # the probe
    assert error_details(await _failure(llm.generate(model.id)))[0].reason == "CIRCUIT_OPEN"
    assert upstream.hits() == 4


async def test_fallback_model_answers_when_the_primary_is_down(llm, upstream):
    backup = await llm.fake_model(upstream, name="backup")
    dead = await llm.provider(f"http://127.0.0.1:{free_port()}/v1", name="dead", max_retries=0)
    primary = await llm.model(dead.id, "primary", fallback_model_ids=[backup.id])
    messages = await llm.generate(primary.id)
    assert messages[0].served_model_id == backup.id and text_of(messages)
    # With fallbacks disabled the primary's own failure is reported.
    error = await _failure(llm.generate(primary.id, disable_fallback=True))
    assert error_details(error)[0].reason == "UPSTREAM_UNAVAILABLE"


async def test_fallback_when_the_primary_breaker_is_open_and_on_upstream_429(llm, upstream):
    backup = await llm.fake_model(upstream, name="backup")
    primary = await llm.fake_model(
        upstream, name="primary", provider=dict(max_retries=0), fallback_model_ids=[backup.id]
    )
    upstream.faults("status:429:30")
    messages = await llm.generate(primary.id)
    assert messages[0].served_model_id == backup.id
    upstream.faults("status:500", "ok", "status:500", "ok", "status:500", "ok")  # primary fails, backup answers
    for _ in range(3):
        assert (await llm.generate(primary.id))[0].served_model_id == backup.id
    hits = upstream.hits()
    assert (await llm.generate(primary.id))[0].served_model_id == backup.id  # breaker open: straight to backup
    assert upstream.hits() == hits + 1


async def test_concurrency_limit_waits_briefly_then_refuses(llm, upstream):
    upstream.tokens, upstream.token_delay = 20, 0.05
    model = await llm.fake_model(upstream, limits=llm_pb2.ModelLimits(max_concurrency=1))
    first = llm.stub.Generate(llm_pb2.GenerateRequest(model_id=model.id, messages=[user("x")]), metadata=ADMIN)
    await anext(first.__aiter__())  # holds the only slot while it streams
    started = time.monotonic()
    error = await _failure(llm.generate(model.id))
    assert time.monotonic() - started >= 0.18  # waited llm_concurrency_wait_seconds (0.2) for a slot
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = error_details(error)
    assert info.reason == "RATE_LIMITED" and info.metadata["limit"] == "concurrency"
    assert (await llm.get_model(model.id)).status.in_flight == 1
    first.cancel()
    await asyncio.sleep(0.1)
    upstream.token_delay = 0
    assert text_of(await llm.generate(model.id))  # the slot was released on cancel


async def test_requests_per_minute_limit(llm, upstream):
    model = await llm.fake_model(upstream, limits=llm_pb2.ModelLimits(requests_per_minute=2))
    await llm.generate(model.id)
    await llm.generate(model.id)
    error = await _failure(llm.generate(model.id))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, delay = error_details(error)
    assert info.reason == "RATE_LIMITED" and info.metadata["limit"] == "requests per minute" and delay > 0
    assert upstream.hits() == 2


async def test_tokens_per_minute_limit_charges_actual_usage(llm, upstream):
    model = await llm.fake_model(upstream, limits=llm_pb2.ModelLimits(tokens_per_minute=25))
    await llm.generate(model.id)  # charged the 16 tokens the upstream reported
    await llm.generate(model.id)  # admitted: the prompt estimate (5) fits the 9 left; charged 16 more
    error = await _failure(llm.generate(model.id))
    assert error_details(error)[0].metadata["limit"] == "tokens per minute"


async def test_test_model_reports_latency_or_the_upstream_error(llm, upstream):
    model = await llm.fake_model(upstream, online=False)  # works on offline models
    reply = await llm.stub.TestModel(llm_pb2.TestModelRequest(model_id=model.id), metadata=ADMIN)
    assert reply.ok and reply.latency.ToNanoseconds() > 0 and reply.ttft.ToNanoseconds() > 0
    assert reply.output.startswith("tok0")
    upstream.faults("status:503")
    reply = await llm.stub.TestModel(llm_pb2.TestModelRequest(model_id=model.id), metadata=ADMIN)
    assert not reply.ok and reply.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "503" in reply.error.message
    assert upstream.hits() == 2  # no retries for a test call
