"""Issue 24 item 7: the traffic stats count every surface: gRPC and its transcoded REST routes as API, the
OpenAI-compatible routes as OPENAI, beside the proxy; the traffic page's own polling is not counted."""

from __future__ import annotations

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def http(running_app):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{running_app.http_port}", headers=AUTH, timeout=30
    ) as client:
        client.app = running_app
        yield client


async def stats(http, source: str) -> dict:
    r = await http.get("/v1/admin/stats", params={"source": source, "recent_limit": 100})
    assert r.status_code == 200, r.text
    return r.json()


def proxy_requests() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "typecase_proxy_requests"
        for sample in metric.samples
        if sample.name == "typecase_proxy_requests_total"
    )


async def test_api_and_openai_calls_are_counted_by_source(http):
    proxied = proxy_requests()
    assert (await http.get("/v1/models")).status_code == 200
    assert (await http.get("/v1/auth/me", headers={"authorization": "Bearer wrong"})).status_code == 401
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{http.app.grpc_port}")
    async with channel:
        await auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), metadata=tuple(AUTH.items()))
    assert (await http.get("/openai/v1/models")).status_code == 200
    assert (await http.post("/openai/v1/chat/completions", json={"model": "x", "messagez": []})).status_code == 400

    api = await stats(http, "REQUEST_SOURCE_API")
    assert api["total_requests"] == "3" and api["failure_count"] == "1", api
    assert api["by_path"] == {"/typecase.v1.LLMService/ListModels": "1", "/typecase.v1.AuthService/GetMe": "2"}
    assert api["by_status"] == {"200": "2", "401": "1"}
    openai = await stats(http, "REQUEST_SOURCE_OPENAI")
    assert openai["total_requests"] == "2" and openai["by_status"] == {"200": "1", "400": "1"}, openai
    assert set(openai["by_path"]) == {"/openai/v1/models", "/openai/v1/chat/completions"}
    assert (await stats(http, "REQUEST_SOURCE_PROXY"))["total_requests"] == "0"
    assert proxy_requests() == proxied  # the proxy's own metrics stay the proxy's

    errors = (await http.get("/v1/admin/errors")).json()
    reasons = {(e["path"], e["reason"]) for e in errors["errors"]}
    assert ("/typecase.v1.AuthService/GetMe", "UNAUTHENTICATED") in reasons
