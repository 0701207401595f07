"""`typecase serve --workers N`: refused in embedded mode with the settings to set; on shared stores (PostgreSQL, a
Redis and a Milvus server of the test's own) two workers serve the same ports, /metrics sums them, a killed worker
is restarted while the other serves every new call meanwhile, and SIGTERM drains them all; the admin traffic stats
on either worker count both."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cluster.rig import MilvusServer, RedisServer, wait_for
from tests.conftest import ADMIN_KEY, free_port

TYPECASE = str(Path(sys.executable).with_name("typecase"))
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPECASE_")}
    return {**env, "HF_HUB_OFFLINE": "1", **settings}


def test_embedded_mode_refuses_several_workers(tmp_path):
    env = clean_env(
        TYPECASE_DATA_DIR=str(tmp_path / "data"),
        TYPECASE_GRPC_PORT=str(free_port()),
        TYPECASE_HTTP_PORT=str(free_port()),
    )
    done = subprocess.run([TYPECASE, "serve", "--workers", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    for setting in ("TYPECASE_REDIS_URL", "TYPECASE_DATABASE_URL", "TYPECASE_MILVUS_URI"):
        assert setting in done.stderr
    assert not (tmp_path / "data").exists()


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in found)


def serving_process(url: str) -> str:
    """Which process answered, on a connection of its own: its start time from /metrics."""
    with httpx.Client(timeout=10) as http:  # a new connection: the kernel picks the worker
        metrics = http.get(f"{url}/metrics").text
        assert http.get(f"{url}/v1/auth/me", headers=AUTH).status_code == 200
    return re.search(r"^process_start_time_seconds (\S+)$", metrics, re.M).group(1)


def get_me_calls(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    found = re.findall(r'^grpc_server_handled_total\{[^}]*grpc_method="GetMe"[^}]*\} (\S+)$', metrics, re.M)
    return sum(float(v) for v in found)


def admin_get_me_counts(url: str) -> set[float]:
    """GetMe calls in /v1/admin/stats as each of several new connections (so: workers) sees them."""
    seen = set()
    for _ in range(8):
        with httpx.Client(timeout=10) as http:
            by_path = http.get(f"{url}/v1/admin/stats", headers=AUTH).json()["by_path"]
        seen.add(float(by_path.get("/typecase.v1.AuthService/GetMe", 0)))
    return seen


def test_workers_share_the_ports_are_restarted_and_drain_together(tmp_path, pg_database_url):
    redis, milvus = RedisServer(tmp_path).start(), MilvusServer(tmp_path).start()
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    env = clean_env(
        TYPECASE_DATA_DIR=str(tmp_path / "data"),
        TYPECASE_GRPC_PORT=str(free_port()),
        TYPECASE_HTTP_PORT=str(http_port),
        TYPECASE_DATABASE_URL=pg_database_url,
        TYPECASE_REDIS_URL=redis.url,
        TYPECASE_MILVUS_URI=milvus.uri,
        TYPECASE_ADMIN_API_KEY=ADMIN_KEY,
        TYPECASE_LLM_LOCAL_ENABLED="false",
        TYPECASE_SHUTDOWN_GRACE_SECONDS="2",
    )
    log = (tmp_path / "supervisor.log").open("w")
    supervisor = subprocess.Popen([TYPECASE, "serve", "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: len(children(supervisor.pid)) == 2, 120, "two workers", supervisor, tmp_path / "supervisor.log"
        )
        wait_for(
            lambda: httpx.get(f"{url}/readyz").status_code == 200, 120, "ready", supervisor, tmp_path / "supervisor.log"
        )
        first = children(supervisor.pid)
        wait_for(
            lambda: len({serving_process(url) for _ in range(12)}) == 2,
            120,
            "both workers serving",
            supervisor,
            tmp_path / "supervisor.log",
        )
        # Metrics are summed over the workers, whichever one answers the scrape.
        before = get_me_calls(url)
        for _ in range(20):
            serving_process(url)
        assert get_me_calls(url) == before + 20
        # So is the admin traffic view: each worker publishes its stats to Redis, either one merges them all.
        calls = get_me_calls(url)
        wait_for(
            lambda: admin_get_me_counts(url) == {calls},
            15,
            "both workers' calls in either's stats",
            supervisor,
            tmp_path / "supervisor.log",
        )

        os.kill(first[0], signal.SIGKILL)
        # Connections the kernel had queued on the dead worker's socket are reset; once the supervisor has
        # reaped it, the other worker answers every new call while its replacement starts.
        wait_for(
            lambda: first[0] not in children(supervisor.pid),
            10,
            "the killed worker reaped",
            supervisor,
            tmp_path / "supervisor.log",
        )
        for _ in range(20):
            serving_process(url)
        wait_for(
            lambda: len(children(supervisor.pid)) == 2 and first[0] not in children(supervisor.pid),
            60,
            "a restarted worker",
            supervisor,
        )
        assert first[1] in children(supervisor.pid)
        wait_for(
            lambda: len({serving_process(url) for _ in range(12)}) == 2,
            120,
            "both serving again",
            supervisor,
            tmp_path / "supervisor.log",
        )

        workers = children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "restarting it" in (tmp_path / "supervisor.log").read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in children(supervisor.pid):
            os.kill(pid, signal.SIGKILL)
        redis.stop()
        milvus.stop()
        log.close()
