"""`typecase serve` as a real subprocess: health, reflection, trace ids, metrics, graceful shutdown, production
resources and concurrent migration."""

from __future__ import annotations

import re
import signal
import threading
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc

PUBLIC_SERVICES = {f"typecase.v1.{name}Service" for name in ("Auth", "LLM", "Chat", "Knowledge", "Flow", "Admin")}


@pytest.fixture
def embedded(server_factory):
    server = server_factory().start()
    seconds = server.wait_ready()
    server.startup_seconds = seconds
    yield server
    server.stop()


def test_embedded_default_is_healthy_fast(embedded):
    assert embedded.startup_seconds < 30, embedded.output()  # generous: a loaded 2-core CI machine
    assert httpx.get(embedded.http_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(embedded.http_url + "/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["resources"]) == {"sql/sqlite", "cache/memory", "storage/local", "vectors/embedded"}
    assert all(r["ok"] for r in ready["resources"].values()), ready
    with grpc.insecure_channel(embedded.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="typecase.v1.ChatService"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_every_public_service(embedded):
    with grpc.insecure_channel(embedded.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in replies[0].list_services_response.service}
    assert PUBLIC_SERVICES <= names
    assert "grpc.health.v1.Health" in names


def test_trace_id_echoed_and_counted_over_grpc_and_http(embedded):
    with grpc.insecure_channel(embedded.grpc_target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetMe.with_call(auth_pb2.GetMeRequest(), metadata=(("x-trace-id", "trace-grpc-1"),), timeout=5)
        _, call = stub.GetMe.with_call(
            auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=5
        )
    error = failure.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("x-trace-id", "trace-grpc-1") in tuple(error.initial_metadata())
    assert re.fullmatch(r"[0-9a-f]{32}", dict(call.initial_metadata())["x-trace-id"])  # minted when absent

    # HTTP gets the same treatment through the gateway.
    response = httpx.get(embedded.http_url + "/v1/auth/me", headers={"x-trace-id": "trace-http-1"})
    assert response.status_code == 401
    assert response.headers["x-trace-id"] == "trace-http-1"
    assert float(response.headers["x-process-time"]) >= 0
    assert response.json()["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    ok = httpx.get(embedded.http_url + "/v1/auth/me", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200 and ok.json()["user"]["username"] == "admin"
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["x-trace-id"])

    metrics = httpx.get(embedded.http_url + "/metrics").text

    def handled(code: str) -> int:
        found = re.search(
            rf'grpc_server_handled_total\{{grpc_code="{code}",grpc_method="GetMe",'
            r'grpc_service="typecase.v1.AuthService",grpc_type="unary"\} (\d+)',
            metrics,
        )
        return int(float(found.group(1))) if found else 0

    assert handled("UNAUTHENTICATED") == 2 and handled("OK") == 2, metrics[:3000]
    assert "grpc_server_handling_seconds_bucket" in metrics


def test_sigterm_drains_an_open_stream_then_exits(server_factory):
    grace = 8.0  # long enough for both checks below (up to 3 s each) on a loaded CI machine, inside the grace
    server = server_factory(env={"TYPECASE_SHUTDOWN_GRACE_SECONDS": str(grace)}).start()
    server.wait_ready()
    statuses: list[int] = []
    stream_ended = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            try:
                for reply in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="")):
                    statuses.append(reply.status)
            except grpc.RpcError:
                pass
        stream_ended.set()

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + 15
    while not statuses and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statuses == [health_pb2.HealthCheckResponse.SERVING]

    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    # The open stream is not cut: it is told the server is going away and stays up during the grace period.
    deadline = time.monotonic() + 3
    while len(statuses) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not stream_ended.is_set()
    # New connections are refused while draining (uvicorn closes its listener on its next tick).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            httpx.get(server.http_url + "/healthz", timeout=0.5)
        except (httpx.ConnectError, httpx.ReadError):  # refused, or reset: queued on the listener as it closed
            break
        time.sleep(0.05)
    else:
        raise AssertionError("HTTP still accepting connections 3 s after SIGTERM")
    assert not stream_ended.is_set()
    assert server.proc.wait(timeout=grace + 10) == 0
    assert time.monotonic() - sent >= grace * 0.9
    assert stream_ended.wait(5)
    assert "shutting down" in server.output()


def test_serves_on_postgresql_and_redis(server_factory, pg_database_url):
    server = server_factory(
        env={"TYPECASE_DATABASE_URL": pg_database_url, "TYPECASE_REDIS_URL": "redis://127.0.0.1:6379/5"}
    ).start()
    server.wait_ready()
    ready = httpx.get(server.http_url + "/readyz").json()
    assert ready["resources"]["sql/postgresql"]["ok"] and ready["resources"]["cache/redis"]["ok"], ready
    assert server.stop() == 0


def test_two_replicas_starting_together_migrate_once(server_factory, pg_database_url):
    env = {"TYPECASE_DATABASE_URL": pg_database_url}
    replicas = [server_factory(env=env, name=f"replica{i}") for i in range(2)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.wait_ready()
    outputs = [replica.output() for replica in replicas]
    applied = [o.count("applied migrations") for o in outputs]
    assert sorted(applied) == [0, 1], outputs
    assert any("schema up to date" in o for o in outputs), outputs
    for replica in replicas:
        assert replica.stop() == 0
