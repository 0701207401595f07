"""`typecase serve --workers 2` with the built-in local models: the supervisor starts one model host beside the
workers, both workers answer a local chat and an embedding through it (also after the host is killed and
restarted), and only the host holds the models (the one process that maps the GGUF file; /metrics counts one loaded instance of each model, summed over every process).
The two workers keep one log history in the data dir: in seq order, without duplicates, the same on either."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx

from tests.cluster.rig import MilvusServer, RedisServer, wait_for
from tests.conftest import ADMIN_KEY, free_port
from tests.server.test_workers import AUTH, TYPECASE, children, clean_env
from typecase.server.llm.providers.local import default_chat_model_path

GENERATE = {
    "messages": [{"role": "MESSAGE_ROLE_USER", "content": "Say hi."}],
    "config": {"max_tokens": 3, "temperature": 0},
}


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def maps_file(pid: int, path: Path) -> bool:
    return str(path) in Path(f"/proc/{pid}/maps").read_text()


def chat_and_embed(url: str) -> str:
    """On one new connection (so: one worker, the kernel's pick): which process it is, a chat and an embedding."""
    with httpx.Client(timeout=300) as http:
        metrics = http.get(f"{url}/metrics").text
        served = re.search(r"^process_start_time_seconds (\S+)$", metrics, re.M).group(1)
        reply = http.post(f"{url}/v1/models/smollm2-135m-instruct:generate", json=GENERATE, headers=AUTH)
        assert reply.status_code == 200, reply.text
        lines = [json.loads(line)["result"] for line in reply.text.splitlines() if line]
        assert "".join(r["text"] for r in lines).strip() and 0 < int(lines[-1]["usage"]["completion_tokens"]) <= 3
        reply = http.post(f"{url}/v1/models/all-minilm-l6-v2:embed", json={"inputs": ["one", "two"]}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        assert [len(e["values"]) for e in reply.json()["embeddings"]] == [384, 384]
    return served


def answers(url: str) -> bool:
    try:
        chat_and_embed(url)
    except AssertionError:  # e.g. UNAVAILABLE while the host restarts
        return False
    return True


def rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) // 1024


def loaded(url: str) -> dict[str, float]:
    metrics = httpx.get(f"{url}/metrics").text
    found = re.findall(r'^typecase_llm_local_models_loaded\{kind="(\w+)"\} (\S+)$', metrics, re.M)
    return {kind: float(value) for kind, value in found}


def history(url: str) -> list[str]:
    """The retained log messages as one new connection's worker (the kernel's pick) lists them."""
    with httpx.Client(timeout=60) as http:
        reply = http.get(f"{url}/v1/admin/logs", params={"page_size": 1000}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return [line["message"] for line in reply.json()["lines"]]


def history_file_seqs(directory: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in (directory / "server.jsonl").read_bytes().splitlines()]


def test_two_workers_share_one_model_host(tmp_path, pg_database_url):
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
        TYPECASE_SHUTDOWN_GRACE_SECONDS="2",
    )
    log = (tmp_path / "supervisor.log").open("w")
    supervisor = subprocess.Popen([TYPECASE, "serve", "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: len(children(supervisor.pid)) == 3,
            120,
            "two workers and the model host",
            supervisor,
            tmp_path / "supervisor.log",
        )
        wait_for(
            lambda: httpx.get(f"{url}/readyz").status_code == 200, 120, "ready", supervisor, tmp_path / "supervisor.log"
        )
        processes = children(supervisor.pid)
        hosts = [pid for pid in processes if "model-host" in cmdline(pid)]
        assert len(hosts) == 1
        served = set()
        for _ in range(12):  # new connections until both workers have answered (each is a 1 in 2 pick)
            served.add(chat_and_embed(url))
            if len(served) == 2:
                break
        assert len(served) == 2, "one worker answered every connection"
        model_file = default_chat_model_path()
        assert [pid for pid in processes if maps_file(pid, model_file)] == hosts
        assert loaded(url) == {"chat": 1.0, "embedding": 1.0}  # every process's gauge summed: one instance each
        rss = {("host" if pid in hosts else "worker", pid): rss_mb(pid) for pid in processes}
        print(f"resident memory (MB) after a chat and an embedding on each worker: {rss}")

        # A killed model host is restarted, and the workers reach the new one.
        os.kill(hosts[0], signal.SIGKILL)
        wait_for(
            lambda: (
                len([p for p in children(supervisor.pid) if "model-host" in cmdline(p)]) == 1
                and hosts[0] not in children(supervisor.pid)
            ),
            60,
            "a restarted model host",
            supervisor,
        )
        wait_for(lambda: answers(url), 120, "local models answering again", supervisor, tmp_path / "supervisor.log")
        processes = children(supervisor.pid)
        assert loaded(url) == {"chat": 1.0, "embedding": 1.0}  # the dead host's instances are not counted

        # One log history: each worker's start line once, whichever worker answers; the file in seq order.
        for _ in range(6):
            assert sum(m.startswith("typecase serving:") for m in history(url)) == 2
        seqs = history_file_seqs(tmp_path / "data" / "logs")
        assert seqs == sorted(set(seqs))

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in processes)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in children(supervisor.pid):
            os.kill(pid, signal.SIGKILL)
        redis.stop()
        milvus.stop()
        log.close()
