"""Two real `typecase serve` processes on one PostgreSQL database and one Redis: per-model limits and the circuit
breaker hold across them, and registry writes on one are served by the other."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
import redis.asyncio
from cryptography.fernet import Fernet

from tests.conftest import ADMIN_KEY, REDIS_URL
from tests.llm.conftest import ADMIN, error_details, user
from typecase.v1 import llm_pb2, llm_pb2_grpc

REDIS_DB = f"{REDIS_URL}/11"


@pytest.fixture
async def two_servers(server_factory, pg_database_url):
    env = {
        "TYPECASE_DATABASE_URL": pg_database_url,
        "TYPECASE_REDIS_URL": REDIS_DB,
        "TYPECASE_SECRET_KEY": Fernet.generate_key().decode(),
        "TYPECASE_ADMIN_API_KEY": ADMIN_KEY,
        "TYPECASE_RATE_LIMIT_PER_KEY": "100000/minute",
        "TYPECASE_LLM_CONCURRENCY_WAIT_SECONDS": "0.2",
        "TYPECASE_LLM_BREAKER_FAILURE_THRESHOLD": "2",
        "TYPECASE_LLM_BREAKER_COOLDOWN_SECONDS": "30",
        "TYPECASE_LLM_MAX_RETRIES": "0",
    }
    servers = [server_factory(env=env, name="a").start()]
    servers[0].wait_ready()  # the first one migrates; the second finds the schema current
    servers.append(server_factory(env=env, name="b").start())
    servers[1].wait_ready()
    channels = [grpc.aio.insecure_channel(s.grpc_target) for s in servers]
    try:
        yield servers, [llm_pb2_grpc.LLMServiceStub(c) for c in channels]
    finally:
        for channel in channels:
            await channel.close()
        await redis.asyncio.Redis.from_url(REDIS_DB).flushdb()


async def _generate(stub, model_id: str) -> grpc.StatusCode:
    try:
        async for _ in stub.Generate(llm_pb2.GenerateRequest(model_id=model_id, messages=[user("hi")]), metadata=ADMIN):
            pass
    except grpc.aio.AioRpcError as error:
        return error
    return grpc.StatusCode.OK


async def _served_by(server, name: str) -> None:
    """Wait until the server's inference snapshot has the model (it follows writes through the Redis bus)."""
    async with httpx.AsyncClient(base_url=server.http_url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
        for _ in range(100):
            listed = (await http.get("/openai/v1/models")).json()["data"]
            if name in {m["id"] for m in listed}:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached {server.http_url}")


async def test_limits_and_breaker_hold_across_two_processes(two_servers, upstream):
    servers, (a, b) = two_servers
    provider = (
        await a.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name="shared",
                    type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                    base_url=upstream.base_url + "/v1",
                    api_key="sk-shared-key-1234",
                )
            ),
            metadata=ADMIN,
        )
    ).provider

    async def model(name: str, **limits) -> llm_pb2.Model:
        created = (
            await a.CreateModel(
                llm_pb2.CreateModelRequest(
                    model=llm_pb2.Model(
                        provider_id=provider.id,
                        name=name,
                        type=llm_pb2.MODEL_TYPE_LLM,
                        online=True,
                        limits=llm_pb2.ModelLimits(**limits),
                    )
                ),
                metadata=ADMIN,
            )
        ).model
        await _served_by(servers[1], name)
        return created

    # Requests per minute: 3 in total, whichever process takes them.
    rpm = await model("rpm-model", requests_per_minute=3)
    outcomes = [await _generate(stub, rpm.id) for stub in (a, b, a, b, a, b)]
    assert outcomes[:3] == [grpc.StatusCode.OK] * 3
    assert all(error_details(o)[0].metadata["limit"] == "requests per minute" for o in outcomes[3:])

    # Concurrency: one slot in total; a stream held open on A keeps B out.
    upstream.tokens, upstream.token_delay = 40, 0.05
    single = await model("single-slot", max_concurrency=1)
    held = a.Generate(llm_pb2.GenerateRequest(model_id=single.id, messages=[user("slow")]), metadata=ADMIN)
    await anext(held.__aiter__())
    refused = await _generate(b, single.id)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(refused)[0].metadata["limit"] == "concurrency"
    in_flight = (await b.GetModel(llm_pb2.GetModelRequest(model_id=single.id), metadata=ADMIN)).model.status
    assert in_flight.in_flight == 1  # B sees A's request
    held.cancel()
    await asyncio.sleep(0.2)
    upstream.token_delay = 0
    assert await _generate(b, single.id) == grpc.StatusCode.OK

    # Breaker: two failures on A open it for B as well.
    flaky = await model("flaky")
    upstream.faults("status:500", "status:500")
    assert (await _generate(a, flaky.id)).code() == grpc.StatusCode.UNAVAILABLE
    assert (await _generate(a, flaky.id)).code() == grpc.StatusCode.UNAVAILABLE
    hits = upstream.hits()
    opened = await _generate(b, flaky.id)
    assert error_details(opened)[0].reason == "CIRCUIT_OPEN" and upstream.hits() == hits
    status = (await b.GetModel(llm_pb2.GetModelRequest(model_id=flaky.id), metadata=ADMIN)).model.status
    assert status.breaker_state == llm_pb2.BREAKER_STATE_OPEN and "500" in status.last_error.message
