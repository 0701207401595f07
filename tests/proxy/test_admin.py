"""AdminService over real gRPC against the real App: stats, errors, config, logs, audit, restart and who may call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from tests.conftest import ADMIN_KEY
from tests.proxy.conftest import ADMIN, bearer, error_details, reason, update, user_token
from typecase.v1 import admin_pb2, admin_pb2_grpc


async def proxied(proxy_url: str, n: int = 1, **kw) -> list[httpx.Response]:
    async with httpx.AsyncClient() as client:
        return [await client.post(proxy_url + "/v1/messages", **kw) for _ in range(n)]


async def test_stats_count_time_and_attribute_requests(proxy_url, upstream, admin):
    body = {"model": "claude-stats", "max_tokens": 4, "stream": True, "messages": []}
    await proxied(proxy_url, 3, json=body, headers={"x-fake-delay-ms": "20"})
    await proxied(proxy_url, 1, json={"model": "claude-stats"}, headers={"x-fake-status": "500"})
    async with httpx.AsyncClient() as client:
        await client.get(proxy_url + "/v1/models", headers={"x-trace-id": "trace-models-1"})
    stats = await admin.GetStats(admin_pb2.GetStatsRequest(recent_limit=10), metadata=ADMIN)
    assert (stats.total_requests, stats.success_count, stats.failure_count) == (5, 4, 1)
    assert dict(stats.by_status) == {"200": 4, "500": 1}
    assert dict(stats.by_path) == {"/v1/messages": 4, "/v1/models": 1}
    model = stats.by_model["claude-stats"]
    assert (model.request_count, model.failure_count) == (4, 1)
    assert model.prompt_tokens == 33 and model.completion_tokens == 9  # usage seen in the 3 streamed responses
    assert model.avg_ttft.ToNanoseconds() > 0
    assert stats.in_flight == 0
    assert stats.response_bytes > 0 and stats.request_bytes > 0
    newest = stats.recent_requests[0]
    assert (newest.path, newest.trace_id, newest.status_code, newest.source) == (
        "/v1/models",
        "trace-models-1",
        200,
        admin_pb2.REQUEST_SOURCE_PROXY,
    )
    streamed = stats.recent_requests[2]
    assert streamed.stream and streamed.model == "claude-stats"
    # the first token waited for the upstream's first event (20 ms), the total for all of them
    assert 0.015 < streamed.ttfb.ToNanoseconds() / 1e9 < streamed.latency.ToNanoseconds() / 1e9
    assert stats.p95_latency.ToNanoseconds() > 0
    only_api = await admin.GetStats(admin_pb2.GetStatsRequest(source=admin_pb2.REQUEST_SOURCE_API), metadata=ADMIN)
    assert only_api.total_requests == 0 and not only_api.recent_requests
    windowed = await admin.GetStats(admin_pb2.GetStatsRequest(window=duration_pb2.Duration(seconds=60)), metadata=ADMIN)
    assert windowed.total_requests == 5


async def test_prometheus_metrics_exposed(proxy_app, proxy_url, upstream):
    await proxied(proxy_url, 2, json={"model": "m"})
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{proxy_app.http_port}/metrics")).text
    assert 'typecase_proxy_requests_total{route="/v1/messages",status="200"}' in text
    assert "typecase_proxy_time_to_first_byte_seconds_bucket" in text
    assert "typecase_proxy_in_flight_requests" in text


async def test_errors_listed_newest_first_with_redacted_upstream_body(proxy_url, upstream, admin):
    for status in ("429", "500", "529"):
        await proxied(proxy_url, json={"model": "claude-err"}, headers={"x-fake-status": status})
    page = await admin.ListErrors(admin_pb2.ListErrorsRequest(page_size=2), metadata=ADMIN)
    assert page.total_size == 3
    assert [e.status_code for e in page.errors] == [529, 500]
    assert [e.reason for e in page.errors] == ["UPSTREAM_UNAVAILABLE", "UPSTREAM_ERROR"]
    assert page.errors[0].upstream_status_code == 529
    assert "fake failure" in page.errors[0].upstream_body
    assert "sk-secret0123456789" not in page.errors[0].upstream_body  # secrets redacted
    rest = await admin.ListErrors(
        admin_pb2.ListErrorsRequest(page_size=2, page_token=page.next_page_token), metadata=ADMIN
    )
    assert [e.reason for e in rest.errors] == ["UPSTREAM_RATE_LIMITED"] and not rest.next_page_token
    only = await admin.ListErrors(admin_pb2.ListErrorsRequest(reason="UPSTREAM_ERROR"), metadata=ADMIN)
    assert [e.status_code for e in only.errors] == [500]


async def test_bounded_recent_requests_and_errors(app_factory, upstream):
    app = await app_factory(
        proxy_enabled=True,
        proxy_port=0,
        proxy_target_base_url=upstream.url,
        proxy_recent_requests=5,
        proxy_recent_errors=2,
        proxy_stats_max_keys=3,
    )
    url = f"http://127.0.0.1:{app.servicers['AdminService'].proxy_port}"
    async with httpx.AsyncClient() as client:
        for i in range(8):
            await client.get(f"{url}/p{i}", headers={"x-fake-status": "500" if i % 2 else "200"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        stats = await admin.GetStats(admin_pb2.GetStatsRequest(recent_limit=1000), metadata=ADMIN)
        errors = await admin.ListErrors(admin_pb2.ListErrorsRequest(), metadata=ADMIN)
    assert stats.total_requests == 8
    assert [r.path for r in stats.recent_requests] == ["/p7", "/p6", "/p5", "/p4", "/p3"]
    assert [e.path for e in errors.errors] == ["/p7", "/p5"]
    assert dict(stats.by_path) == {"/p0": 1, "/p1": 1, "/p2": 1, "(other)": 5}


# -- who may call --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "metadata, expected",
    [
        ((), "UNAUTHENTICATED"),
        (bearer("tc_wrong-key-0000000000000000"), "UNAUTHENTICATED"),
        (bearer("k" * 1025), "UNAUTHENTICATED"),  # oversized: refused before any lookup
        ((("authorization", f"Basic {ADMIN_KEY}"),), "UNAUTHENTICATED"),
    ],
)
async def test_wrong_missing_and_oversized_keys_are_refused(admin, metadata, expected):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await admin.UpdateConfig(
            admin_pb2.UpdateConfigRequest(values={"proxy_preserve_host": "true"}), metadata=metadata
        )
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(failure.value) == expected
    config = await admin.GetConfig(admin_pb2.GetConfigRequest(category="proxy"), metadata=ADMIN)
    assert next(e.value for e in config.entries if e.key == "proxy_preserve_host") == "false"


async def test_ordinary_users_may_not_change_config_or_read_logs(admin, channel):
    token = await user_token(channel)
    calls = [
        admin.UpdateConfig(
            admin_pb2.UpdateConfigRequest(values={"proxy_preserve_host": "true"}), metadata=bearer(token)
        ),
        admin.RestartServer(admin_pb2.RestartServerRequest(), metadata=bearer(token)),
        admin.ListLogs(admin_pb2.ListLogsRequest(), metadata=bearer(token)),
        admin.ClearLogs(admin_pb2.ClearLogsRequest(), metadata=bearer(token)),
        admin.GetConfig(admin_pb2.GetConfigRequest(), metadata=bearer(token)),
        admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(), metadata=bearer(token)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stream = admin.StreamLogs(admin_pb2.StreamLogsRequest(), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stream.read()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


# -- config --------------------------------------------------------------------------------------------------
async def test_config_entries_are_typed_described_and_secrets_masked(app_factory, monkeypatch):
    monkeypatch.setenv("TYPECASE_PROXY_HOST", "127.0.0.1")  # an environment variable makes its entry read-only
    app = await app_factory(proxy_upstream_api_key="sk-very-secret-upstream-key-0000-9876")  # 37 characters
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        reply = await admin.GetConfig(admin_pb2.GetConfigRequest(), metadata=ADMIN)
    entries = {e.key: e for e in reply.entries}
    key = entries["proxy_upstream_api_key"]
    assert key.secret and key.value == "****9876" and key.source == admin_pb2.CONFIG_SOURCE_FILE
    assert "sk-very-secret" not in str(reply)
    assert entries["admin_api_key"].secret and ADMIN_KEY not in str(reply)
    assert entries["admin_api_key"].editable is False and entries["admin_api_key"].category == "security"
    headers = entries["proxy_custom_headers"]
    assert (headers.type, headers.value, headers.editable, headers.requires_restart, headers.category) == (
        admin_pb2.CONFIG_VALUE_TYPE_JSON,
        "{}",
        True,
        False,
        "proxy",
    )
    assert headers.description and headers.example and json.loads(headers.example)
    assert entries["proxy_port"].requires_restart and entries["proxy_port"].type == admin_pb2.CONFIG_VALUE_TYPE_NUMBER
    assert entries["proxy_enabled"].type == admin_pb2.CONFIG_VALUE_TYPE_BOOLEAN
    assert entries["proxy_host"].source == admin_pb2.CONFIG_SOURCE_ENV and not entries["proxy_host"].editable
    assert entries["proxy_read_timeout_seconds"].source == admin_pb2.CONFIG_SOURCE_DEFAULT
    assert [(e.category, e.key) for e in reply.entries] == sorted((e.category, e.key) for e in reply.entries)
    assert not reply.read_only and not reply.restart_required


async def test_invalid_updates_apply_nothing_and_name_every_bad_key(admin):
    bad = {
        "proxy_read_timeout_seconds": "soon",
        "proxy_preserve_host": "yes",
        "proxy_custom_headers": '{"bad header": "x"}',
        "proxy_target_base_url": "ftp://example.com",
        "proxy_max_request_bytes": "0",
        "proxy_system_prompt_mode": "append",
        "proxy_nonexistent": "1",
        "database_url": "sqlite:///elsewhere.db",
        "proxy_write_timeout_seconds": "5",  # valid, but must not be applied alone
    }
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await admin.UpdateConfig(admin_pb2.UpdateConfigRequest(values=bad), metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(failure.value) == "CONFIG_INVALID"
    violations = next(d for d in error_details(failure.value) if isinstance(d, error_details_pb2.BadRequest))
    assert {v.field for v in violations.field_violations} == {f"values[{k}]" for k in bad} - {
        "values[proxy_write_timeout_seconds]"
    }
    config = await admin.GetConfig(admin_pb2.GetConfigRequest(category="proxy"), metadata=ADMIN)
    assert next(e.value for e in config.entries if e.key == "proxy_write_timeout_seconds") == "60"
    for header in ("connection", "host", "transfer-encoding"):
        with pytest.raises(grpc.aio.AioRpcError):
            await update(admin, proxy_custom_headers={header: "x"})


async def test_updates_persist_atomically_with_backup_audit_and_encrypted_secrets(app_factory, tmp_path):
    from cryptography.fernet import Fernet

    app = await app_factory(secret_key=Fernet.generate_key().decode())
    path = tmp_path / "data" / "proxy_config.json"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        dry = await admin.UpdateConfig(
            admin_pb2.UpdateConfigRequest(values={"proxy_port": "9999"}, validate_only=True), metadata=ADMIN
        )
        assert dry.applied[0].value == "9999" and dry.restart_required and not path.exists()
        await update(admin, proxy_custom_headers={"x-team": "a"})
        first = path.read_bytes()
        reply = await update(
            admin, proxy_custom_headers={"x-team": "b"}, proxy_upstream_api_key="sk-up-secret-4321", proxy_port=9999
        )
        assert reply.restart_required and not reply.restart_scheduled
        assert {e.key: e.value for e in reply.applied}["proxy_upstream_api_key"] == "****"  # too short to show any
        config = await admin.GetConfig(admin_pb2.GetConfigRequest(), metadata=ADMIN)
        assert config.restart_required
        audit = await admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(action="config.*"), metadata=ADMIN)
    assert (tmp_path / "data" / "proxy_config.json.bak").read_bytes() == first
    stored = json.loads(path.read_bytes())["values"]
    assert stored["proxy_custom_headers"] == {"x-team": "b"} and stored["proxy_port"] == 9999
    assert stored["proxy_upstream_api_key"].startswith("enc:")  # encrypted at rest with TYPECASE_SECRET_KEY
    assert "sk-up-secret" not in path.read_text()
    assert os.stat(path).st_mode & 0o077 == 0
    assert not list(path.parent.glob(".proxy_config.json.*.tmp"))
    events = {(e.resource_id, e.actor_name) for e in audit.events}
    assert ("proxy_custom_headers", "admin") in events and ("proxy_upstream_api_key", "admin") in events
    assert audit.total_size == 4
    secret_event = next(e for e in audit.events if e.resource_id == "proxy_upstream_api_key")
    assert "sk-up-secret" not in str(secret_event) and "****" not in str(secret_event)
    header_event = next(e for e in audit.events if e.resource_id == "proxy_custom_headers")
    assert header_event.detail["old"] == '{"x-team":"a"}' and header_event.detail["new"] == '{"x-team":"b"}'

    # Reset to the default with an empty value.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        reply = await update(admin, proxy_port="")
        assert reply.applied[0].value == "8088" and reply.applied[0].source == admin_pb2.CONFIG_SOURCE_DEFAULT
    assert "proxy_port" not in json.loads(path.read_bytes())["values"]


async def test_file_lock_falls_back_where_locks_are_unsupported(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from typecase.server.admin.config_store import ConfigFile

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    store = ConfigFile(tmp_path / "c.json")
    with caplog.at_level(logging.WARNING):
        store.update(lambda values: values.update(a=1))
        store.update(lambda values: values.update(b=2))
    assert store.locking == "none"
    assert json.loads((tmp_path / "c.json").read_text())["values"] == {"a": 1, "b": 2}
    assert sum("not supported" in r.message for r in caplog.records) == 1


async def test_restart_is_scheduled_through_the_app(proxy_app, admin):
    reply = await admin.RestartServer(
        admin_pb2.RestartServerRequest(delay=duration_pb2.Duration(nanos=200_000_000), reason="apply the new port"),
        metadata=ADMIN,
    )
    assert reply.restart_time.ToNanoseconds() / 1e9 == pytest.approx(time.time() + 0.2, abs=0.5)
    assert not proxy_app.restart_requested
    await asyncio.sleep(0.4)
    assert proxy_app.restart_requested  # the App now drains and re-execs (see test_restart for a real process)
    audit = await admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(action="server.restart"), metadata=ADMIN)
    assert audit.events[0].detail["reason"] == "apply the new port"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await admin.RestartServer(
            admin_pb2.RestartServerRequest(delay=duration_pb2.Duration(seconds=-1)), metadata=ADMIN
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- logs ----------------------------------------------------------------------------------------------------
async def test_stream_logs_live_with_replay_and_filters(proxy_url, upstream, admin):
    await proxied(proxy_url, json={"model": "before-stream"})
    stream = admin.StreamLogs(admin_pb2.StreamLogsRequest(tail=1, query="/v1/messages"), metadata=ADMIN)
    first = await asyncio.wait_for(stream.read(), 5)
    assert "before-stream" in first.line.message and first.seq == first.line.seq
    await proxied(proxy_url, json={"model": "during-stream"}, headers={"x-trace-id": "live-1"})
    live = await asyncio.wait_for(stream.read(), 5)
    assert live.seq > first.seq and live.line.trace_id == "live-1"
    assert live.line.fields["status"] == 200 and live.line.fields["model"] == "during-stream"
    assert live.line.level == admin_pb2.LOG_LEVEL_INFO and live.dropped_count == 0
    stream.cancel()
    # resume after the last seq seen: the missed line is replayed first
    await proxied(proxy_url, json={"model": "while-away"}, headers={"x-fake-status": "503"})
    resumed = admin.StreamLogs(
        admin_pb2.StreamLogsRequest(after_seq=live.seq, query="/v1/messages", min_level=admin_pb2.LOG_LEVEL_ERROR),
        metadata=ADMIN,
    )
    missed = await asyncio.wait_for(resumed.read(), 5)
    assert "while-away" in missed.line.message and missed.line.level == admin_pb2.LOG_LEVEL_ERROR
    resumed.cancel()


async def test_slow_log_reader_is_told_what_it_missed_and_never_slows_the_proxy(app_factory, upstream):
    app = await app_factory(
        proxy_enabled=True, proxy_port=0, proxy_target_base_url=upstream.url, proxy_log_subscriber_queue=10
    )
    url = f"http://127.0.0.1:{app.servicers['AdminService'].proxy_port}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        logger = logging.getLogger("typecase.test.flood")
        logger.warning("flood-line start")  # replayed (tail=1): once it arrives, the stream is subscribed
        stream = admin.StreamLogs(admin_pb2.StreamLogsRequest(query="flood-line", tail=1), metadata=ADMIN)
        assert "start" in (await asyncio.wait_for(stream.read(), 5)).line.message
        total = 3000
        started = time.perf_counter()
        for i in range(total):  # ~300 KB: more than gRPC's flow-control window, and we are not reading
            logger.warning("flood-line %05d %s", i, "x" * 64)
        publish_seconds = time.perf_counter() - started
        await asyncio.sleep(0.3)  # the stream writes what it can, then blocks on the unread client
        async with httpx.AsyncClient() as client:  # the proxy does not wait for the stalled reader
            t0 = time.perf_counter()
            assert (await client.get(url + "/v1/models")).status_code == 200
            assert time.perf_counter() - t0 < 5  # loose for a loaded CI machine: a blocked proxy never answers
        received, dropped = 0, 0
        while True:
            message = await asyncio.wait_for(stream.read(), 5)
            received += 1
            dropped += message.dropped_count
            if message.line.message.startswith(f"flood-line {total - 1:05d}"):
                break
        stream.cancel()
    assert dropped > 0
    assert received + dropped == total
    assert publish_seconds < 10  # not held up by the stalled reader (loose for a loaded CI machine)


async def test_log_history_query_pages_rotation_and_clear(app_factory, upstream):
    app = await app_factory(
        proxy_enabled=True,
        proxy_port=0,
        proxy_target_base_url=upstream.url,
        proxy_log_file_max_bytes=4096,
        proxy_log_file_count=2,
        proxy_log_flush_seconds=0.05,
    )
    url = f"http://127.0.0.1:{app.servicers['AdminService'].proxy_port}"
    async with httpx.AsyncClient() as client:
        for i in range(40):
            await client.get(f"{url}/v1/models", headers={"x-trace-id": f"hist-{i}"})
    logs_dir = app.settings.data_dir / "logs"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        page = await admin.ListLogs(admin_pb2.ListLogsRequest(page_size=5, query="/v1/models"), metadata=ADMIN)
        assert [line.trace_id for line in page.lines] == [f"hist-{i}" for i in range(39, 34, -1)]
        older = await admin.ListLogs(
            admin_pb2.ListLogsRequest(page_size=5, query="/v1/models", page_token=page.next_page_token), metadata=ADMIN
        )
        assert older.lines[0].trace_id == "hist-34"
        one = await admin.ListLogs(admin_pb2.ListLogsRequest(trace_id="hist-38"), metadata=ADMIN)
        assert len(one.lines) == 1 and not one.next_page_token
        # rotation kept the current file plus 2 rotated ones, each near the size limit; the oldest lines are gone
        files = sorted(p.name for p in logs_dir.iterdir())
        assert files == ["server.jsonl", "server.jsonl.1", "server.jsonl.2"]
        assert all(p.stat().st_size <= 4096 for p in logs_dir.iterdir())
        everything = await admin.ListLogs(admin_pb2.ListLogsRequest(page_size=1000, query="/v1/models"), metadata=ADMIN)
        assert 0 < len(everything.lines) < 40
        cutoff = timestamp_pb2.Timestamp()
        cutoff.FromNanoseconds(everything.lines[4].time.ToNanoseconds())
        cleared = await admin.ClearLogs(admin_pb2.ClearLogsRequest(before_time=cutoff), metadata=ADMIN)
        assert cleared.deleted_count > 0
        left = await admin.ListLogs(admin_pb2.ListLogsRequest(page_size=1000, query="/v1/models"), metadata=ADMIN)
        assert [line.trace_id for line in left.lines][:5] == [line.trace_id for line in everything.lines][:5]
        assert len(left.lines) == 5
        await admin.ClearLogs(admin_pb2.ClearLogsRequest(), metadata=ADMIN)
        assert not (await admin.ListLogs(admin_pb2.ListLogsRequest(query="/v1/models"), metadata=ADMIN)).lines
        # seq keeps increasing after a clear
        async with httpx.AsyncClient() as client:
            await client.get(f"{url}/v1/models", headers={"x-trace-id": "after-clear"})
        newest = await admin.ListLogs(admin_pb2.ListLogsRequest(trace_id="after-clear"), metadata=ADMIN)
        assert newest.lines[0].seq > everything.lines[0].seq


async def test_log_stream_over_sse_through_the_gateway(proxy_app, proxy_url, upstream):
    await proxied(proxy_url, json={"model": "sse-model"})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy_app.http_port}") as client:
        async with client.stream(
            "GET",
            "/v1/admin/logs:stream",
            params={"tail": 1, "query": "sse-model"},
            headers={"accept": "text/event-stream", "authorization": f"Bearer {ADMIN_KEY}"},
            timeout=5,
        ) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            event = {}
            async for line in reply.aiter_lines():
                if line.startswith("id:"):
                    event["id"] = line[3:].strip()
                elif line.startswith("data:"):
                    event["data"] = json.loads(line[5:])
                    break
    assert "sse-model" in event["data"]["line"]["message"]
    assert event["id"] == str(event["data"]["seq"])


async def test_failed_key_attempts_are_rate_limited_per_address_and_logged_without_the_key(app_factory, caplog):
    app = await app_factory(credential_failures_limit="3/minute")
    wrong = "tc_guessed-key-SHOULD-NOT-BE-LOGGED-1234"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        with caplog.at_level(logging.WARNING, logger="typecase.auth"):
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await admin.GetStats(admin_pb2.GetStatsRequest(), metadata=bearer(wrong))
                assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as failure:  # this address is over its budget now
                await admin.GetStats(admin_pb2.GetStatsRequest(), metadata=bearer(wrong))
            assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason(failure.value) == "RATE_LIMITED"
            await admin.GetStats(admin_pb2.GetStatsRequest(), metadata=ADMIN)  # a valid key is never refused for it
    failures = [r for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == 4 and "AdminService/GetStats" in failures[0].getMessage()
    assert all(wrong not in r.getMessage() and "SHOULD-NOT" not in r.getMessage() for r in caplog.records)
