"""Decompression and expansion bombs (issue 18) uploaded by an ordinary user over REST to a real `typecase serve`:
a 370 KB docx that unpacks to 300 MB, an xlsx that does too, a docx whose zip headers understate its size, a
billion-laughs DTD, and a 5 KB xlsx whose declared dimension pads rows to 16,384 columns. Each file ends FAILED
with a reason naming the limit it broke; the server's memory stays within a stated bound (before the fix these
files grew it by ~1.05 GiB, which stayed, and two of them were still parsing 150 s later), /healthz keeps answering
fast meanwhile, and the server keeps working.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.knowledge import files, hostile

MiB = 1024 * 1024
# The server's resident memory may grow by at most this much, now and at its peak, while it takes in all the
# bombs below (measured: 2-3 MiB now; +1,052 MiB now and +1,064 MiB at the peak before the fix).
RSS_GROWTH_BOUND_BYTES = 64 * MiB
HEALTHZ_P99_BOUND_SECONDS = 0.100  # over the idle server's p99 measured in the same run
PASSWORD = "correct horse battery"

BOMBS = [  # (file name, builder, the setting the failure must name, or the words it must contain)
    ("bomb.docx", hostile.docx_bomb, "knowledge_zip_max_unpacked_bytes"),
    ("bomb.xlsx", hostile.xlsx_bomb, "knowledge_zip_max_unpacked_bytes"),
    ("lying.docx", hostile.lying_docx, "knowledge_zip_max_unpacked_bytes"),
    ("laughs.docx", hostile.entity_docx, "DTD"),
    ("padded.xlsx", hostile.padded_xlsx, "knowledge_xlsx_max_cells"),
]


def memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class HealthProbe(threading.Thread):
    """GET /healthz back to back on the server's HTTP port, recording each latency, until stopped."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url + "/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - started)
                self.failures += not ok
                time.sleep(0.005)

    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98]


PAST_PARSING = {"FILE_STATUS_FAILED", "FILE_STATUS_DONE", "FILE_STATUS_EMBEDDING", "FILE_STATUS_INDEXING"}


def wait_past_parsing(client: httpx.Client, file_ids: list[str], timeout: float = 150) -> dict[str, dict]:
    """The files once each is FAILED or DONE or (the unfixed server) at least through parsing, or as they are at
    the deadline; a server too busy to answer a poll in time is simply polled again."""
    latest: dict[str, dict] = {file_id: {"status": "never answered"} for file_id in file_ids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for file_id in file_ids:
            if latest[file_id]["status"] not in PAST_PARSING:
                try:
                    latest[file_id] = client.get(f"/v1/files/{file_id}", timeout=10).raise_for_status().json()["file"]
                except httpx.TimeoutException:
                    pass
        if all(f["status"] in PAST_PARSING for f in latest.values()):
            break
        time.sleep(0.2)
    return latest


def error_info(file: dict) -> dict:
    for detail in (file.get("error") or {}).get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail
    return {}


@pytest.fixture
def server(server_factory):
    server = server_factory(env={"TYPECASE_JOBS_POLL_SECONDS": "0.2"}).start()
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture
def user(server):
    """An ordinary user's HTTP client and a knowledge base of theirs."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.http_url, timeout=60) as anonymous:
        anonymous.post(
            "/v1/users", headers=admin, json={"username": "mallory", "password": PASSWORD, "role": "USER_ROLE_USER"}
        ).raise_for_status()
        token = (
            anonymous.post("/v1/auth:login", json={"username": "mallory", "password": PASSWORD})
            .raise_for_status()
            .json()["access_token"]
        )
    with httpx.Client(base_url=server.http_url, timeout=60, headers={"authorization": f"Bearer {token}"}) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "bombs"}).raise_for_status().json()["knowledge_base"]
        yield client, kb["id"]


def upload(client: httpx.Client, kb_id: str, name: str, data: bytes) -> str:
    reply = client.post(f"/v1/knowledge-bases/{kb_id}/files", files={"file": (name, data)})
    assert reply.status_code == 200, reply.text
    return reply.json()["file"]["id"]


@pytest.mark.timeout(600)
def test_bombs_fail_their_files_with_the_limit_named_and_the_server_stays_small_and_responsive(server, user):
    client, kb_id = user
    bombs = [(name, build(), expected) for name, build, expected in BOMBS]
    # Warm the path first (upload, job, a parse process) with a broken docx, so the baseline includes them.
    warm = upload(client, kb_id, "warm.docx", b"PK\x03\x04 not really a zip")
    assert wait_past_parsing(client, [warm])[warm]["status"] == "FILE_STATUS_FAILED"
    pid = server.proc.pid
    before = memory(pid)
    idle = HealthProbe(server.http_url)  # the same probe on the idle server: what this machine gives today
    idle.start()
    time.sleep(3)
    idle.stopping.set()
    idle.join()

    probe = HealthProbe(server.http_url)
    probe.start()
    try:
        uploaded = [(name, upload(client, kb_id, name, data), expected) for name, data, expected in bombs]
        files_now = wait_past_parsing(client, [file_id for _, file_id, _ in uploaded])
        results = [(name, files_now[file_id], expected) for name, file_id, expected in uploaded]
    finally:
        probe.stopping.set()
        probe.join()
    after = memory(pid)

    growth = {"now": after["VmRSS"] - before["VmRSS"], "peak": after["VmHWM"] - before["VmHWM"]}
    print(
        f"server RSS {before['VmRSS'] / MiB:.0f} -> {after['VmRSS'] / MiB:.0f} MiB, peak "
        f"{before['VmHWM'] / MiB:.0f} -> {after['VmHWM'] / MiB:.0f} MiB; /healthz: {len(probe.latencies)} calls, "
        f"p99 {probe.p99() * 1000:.1f} ms, max {max(probe.latencies) * 1000:.1f} ms; "
        f"idle server: p99 {idle.p99() * 1000:.1f} ms"
    )
    for name, file, _ in results:
        print(f"  {name}: {file['status']} {(file.get('error') or {}).get('message', '')[:160]}")
    assert growth["now"] < RSS_GROWTH_BOUND_BYTES and growth["peak"] < RSS_GROWTH_BOUND_BYTES, growth
    assert probe.failures == 0
    # The bound is over what this (shared, 2-core) machine gives the idle server: ~3-16 ms p99 while measuring.
    assert probe.p99() < HEALTHZ_P99_BOUND_SECONDS + idle.p99(), f"/healthz p99 {probe.p99() * 1000:.1f} ms"
    for name, file, expected in results:
        assert file["status"] == "FILE_STATUS_FAILED", (name, file["status"])
        assert error_info(file).get("reason") == "PARSE_FAILED", (name, file["error"])
        assert expected in file["error"]["message"], (name, file["error"]["message"])
        if expected.startswith("knowledge_"):
            assert error_info(file)["metadata"]["limit"] == expected, (name, file["error"])
        assert file["chunk_count"] == 0

    # A preview of a stored bomb goes through the same parse processes and fails the same way.
    bomb_docx = next(file for name, file, _ in results if name == "bomb.docx")
    preview = client.post(f"/v1/knowledge-bases/{kb_id}:preview-chunks", json={"file_id": bomb_docx["id"]})
    assert preview.status_code == 400 and "knowledge_zip_max_unpacked_bytes" in preview.json()["message"], preview.text
    assert memory(pid)["VmHWM"] - before["VmHWM"] < RSS_GROWTH_BOUND_BYTES

    # The server keeps serving: a normal document uploaded now is parsed, embedded and searchable.
    assert httpx.get(server.http_url + "/healthz", timeout=5).status_code == 200
    normal = upload(
        client,
        kb_id,
        "handbook.docx",
        files.docx_bytes(
            [("h1", "Handbook"), ("p", "The spare key to the greenhouse is under the blue ceramic frog.")]
        ),
    )
    deadline = time.monotonic() + 180
    while (file := client.get(f"/v1/files/{normal}").json()["file"])["status"] != "FILE_STATUS_DONE":
        assert file["status"] != "FILE_STATUS_FAILED" and time.monotonic() < deadline, file
        time.sleep(0.2)
    hits = client.post("/v1/knowledge-bases:search", json={"kb_ids": [kb_id], "query": "greenhouse key"}).json()
    assert "ceramic frog" in hits["hits"][0]["text"], hits
