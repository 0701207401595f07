"""Issue 24 item 1: a busy port is a clear start-up error found before anything is touched, a port is never shared
by accident, and a stopped server exits promptly even with an executor thread still busy."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import grpc
import httpx
import pytest

from tests.conftest import ADMIN_KEY, ServerProcess
from typecase.v1 import auth_pb2, auth_pb2_grpc


def _run_second(tmp_path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, ServerProcess]:
    """Start `typecase serve` on the given ports with a data dir that does not exist yet; wait for it to exit."""
    data_dir = tmp_path / "second" / "data"
    second = ServerProcess(tmp_path, {**env, "TYPECASE_DATA_DIR": str(data_dir)}, name="second")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "typecase.server", "serve"], env=second.env, capture_output=True, text=True, timeout=60
    )
    return result, time.monotonic() - started, second


def test_a_second_server_on_the_same_ports_exits_naming_them_and_the_first_keeps_serving(server_factory, tmp_path):
    first = server_factory(name="first").start()
    first.wait_ready()
    result, seconds, _ = _run_second(
        tmp_path, {"TYPECASE_GRPC_PORT": str(first.grpc_port), "TYPECASE_HTTP_PORT": str(first.http_port)}
    )
    assert result.returncode != 0
    # Refused before anything starts (no data dir below proves it); the bound is loose for a loaded CI machine.
    assert seconds < 20, seconds
    assert f"port {first.grpc_port} is in use: set TYPECASE_GRPC_PORT" in result.stderr
    assert f"port {first.http_port} is in use: set TYPECASE_HTTP_PORT" in result.stderr
    assert not (tmp_path / "second").exists()  # no data dir, hence no admin key printed
    assert "admin API key" not in result.stdout + result.stderr

    # Every call with the first server's key reaches the first server (nothing else listens on its ports).
    with grpc.insecure_channel(first.grpc_target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for _ in range(12):  # new connections each time would be split between two SO_REUSEPORT listeners
            reply = stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=5)
            assert reply.user.username == "admin"
    for _ in range(12):
        with grpc.insecure_channel(first.grpc_target) as channel:
            auth_pb2_grpc.AuthServiceStub(channel).GetMe(
                auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=5
            )
        response = httpx.get(first.http_url + "/v1/auth/me", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 200
    assert first.proc.poll() is None


@pytest.mark.parametrize("busy", ["TYPECASE_HTTP_PORT", "TYPECASE_PROXY_PORT"])
def test_one_busy_port_is_named_with_its_setting(tmp_path, busy):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"TYPECASE_PROXY_ENABLED": "true", "TYPECASE_PROXY_PORT": "0", busy: str(port)}
        result, seconds, _ = _run_second(tmp_path, env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"port {port} is in use: set {busy}"
    assert seconds < 20  # loose for a loaded CI machine: no data dir (below) shows nothing started
    assert not (tmp_path / "second").exists()


async def test_a_port_taken_after_the_check_fails_the_start_cleanly(app_factory):
    """The real bind is the last word (the check can race): the App raises the same message, releases what it
    bound, and gRPC does not share the port (SO_REUSEPORT off)."""
    from typecase.server.ports import PortsUnavailable

    first = await app_factory()
    with pytest.raises(PortsUnavailable, match=f"port {first.grpc_port} is in use: set TYPECASE_GRPC_PORT"):
        await app_factory(grpc_port=first.grpc_port, data_dir=first.settings.data_dir.parent / "other")


def test_a_stopped_server_does_not_wait_for_a_busy_executor_thread(tmp_path):
    """A thread still loading a model when the server has stopped would hold the process until it finished."""
    script = textwrap.dedent("""
        import asyncio, atexit, time
        from concurrent.futures import ThreadPoolExecutor
        from typecase.server.cli import exit_when_done

        atexit.register(lambda: print("atexit ran", flush=True))

        async def main():
            pool = ThreadPoolExecutor(1)
            asyncio.get_running_loop().run_in_executor(pool, time.sleep, 60)
            asyncio.get_running_loop().run_in_executor(None, time.sleep, 60)
            await asyncio.sleep(0.2)

        asyncio.run(exit_when_done(main()))
    """)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert "atexit ran" in result.stdout
