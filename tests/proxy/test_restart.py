"""Real `typecase serve` processes: runtime config survives a restart (RestartServer re-execs the process), and a
crash in the middle of a config write leaves the previous file intact."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from tests.conftest import ADMIN_KEY, free_port
from tests.proxy.fake_upstream import FakeUpstream
from typecase.server.admin.config_store import ConfigFile
from typecase.v1 import admin_pb2, admin_pb2_grpc

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


@pytest.fixture
def upstream():
    server = FakeUpstream().start()
    yield server
    server.stop()


def proxy_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "TYPECASE_ADMIN_API_KEY": ADMIN_KEY,
        "TYPECASE_PROXY_ENABLED": "true",
        "TYPECASE_PROXY_PORT": str(free_port()),
        "TYPECASE_PROXY_TARGET_BASE_URL": upstream.url,
        "TYPECASE_LLM_LOCAL_ENABLED": "false",
        "TYPECASE_SHUTDOWN_GRACE_SECONDS": "1",
        "TYPECASE_KNOWLEDGE_WORKER_IN_PROCESS": "false",
        **extra,
    }


def start_time(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stats = admin_pb2_grpc.AdminServiceStub(channel).GetStats(
            admin_pb2.GetStatsRequest(), metadata=ADMIN, timeout=5
        )
    return stats.start_time.ToNanoseconds()


def config_value(target: str, key: str) -> str:
    with grpc.insecure_channel(target) as channel:
        reply = admin_pb2_grpc.AdminServiceStub(channel).GetConfig(
            admin_pb2.GetConfigRequest(category="proxy"), metadata=ADMIN, timeout=5
        )
    return next(e.value for e in reply.entries if e.key == key)


def update(target: str, timeout: float = 10, **values: str) -> admin_pb2.UpdateConfigResponse:
    with grpc.insecure_channel(target) as channel:
        return admin_pb2_grpc.AdminServiceStub(channel).UpdateConfig(
            admin_pb2.UpdateConfigRequest(values=values), metadata=ADMIN, timeout=timeout
        )


def test_config_survives_a_restart_and_the_restart_reexecs(server_factory, upstream, tmp_path):
    env = proxy_env(upstream)
    server = server_factory(env=env, name="restart").start()
    server.wait_ready()
    pid = server.proc.pid
    before = start_time(server.grpc_target)
    update(server.grpc_target, proxy_custom_headers='{"x-team": "survivor"}', proxy_system_prompt_text="Be kind.")
    with grpc.insecure_channel(server.grpc_target) as channel:
        admin_pb2_grpc.AdminServiceStub(channel).RestartServer(
            admin_pb2.RestartServerRequest(reason="test"), metadata=ADMIN, timeout=5
        )
    deadline = time.monotonic() + 30
    while True:  # down, then up again as the same process (re-exec) with a new start time
        assert time.monotonic() < deadline, server.output()
        try:
            if start_time(server.grpc_target) != before:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    assert server.proc.pid == pid and server.proc.poll() is None
    assert config_value(server.grpc_target, "proxy_custom_headers") == '{"x-team":"survivor"}'
    assert config_value(server.grpc_target, "proxy_system_prompt_text") == "Be kind."
    httpx.get(f"http://127.0.0.1:{env['TYPECASE_PROXY_PORT']}/v1/models", timeout=5)
    assert upstream.last("/v1/models").header("x-team") == "survivor"  # applied by the new process
    assert "restarting: re-executing" in server.output()


CRASHING_WRITER = """
import sys
from pathlib import Path
from typecase.server.config import Settings
from typecase.server.admin.config_store import RuntimeConfig

settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), proxy_config_write_delay_seconds=60)
runtime = RuntimeConfig(settings, environ={})
runtime.load(first=True)
runtime.save(runtime.validate({"proxy_custom_headers": '{"x-team": "new"}'}))
"""


async def test_crash_in_the_middle_of_a_write_leaves_the_old_file_intact(app_factory, tmp_path):
    data_dir = tmp_path / "crash"
    path = data_dir / "proxy_config.json"
    ConfigFile(path).update(lambda values: values.update(proxy_custom_headers={"x-team": "old"}))  # the old file
    old = path.read_bytes()
    # A process writing the config the way the server does, killed while the new document is half written.
    writer = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(data_dir)])
    try:
        deadline = time.monotonic() + 30
        while not list(data_dir.glob(".proxy_config.json.*.tmp")):
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert path.read_bytes() == old
    assert json.loads(old)["values"]["proxy_custom_headers"] == {"x-team": "old"}
    torn = list(data_dir.glob(".proxy_config.json.*.tmp"))
    assert torn and torn[0].read_bytes() != old  # the torn temp file, never renamed over the config

    app = await app_factory(data_dir=data_dir)  # the server starts on the old config and cleans up
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        reply = await admin_pb2_grpc.AdminServiceStub(channel).GetConfig(
            admin_pb2.GetConfigRequest(category="proxy"), metadata=ADMIN
        )
    assert next(e.value for e in reply.entries if e.key == "proxy_custom_headers") == '{"x-team":"old"}'
    assert not list(data_dir.glob(".proxy_config.json.*.tmp"))
