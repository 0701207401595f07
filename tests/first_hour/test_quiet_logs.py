"""Issue 24 item 8: a clean start plus one upload (parsed, embedded, searchable) logs no line at WARNING or above,
and nothing that reads as a failure (tracebacks, ModuleNotFoundError, deprecation warnings, GOAWAY)."""

from __future__ import annotations

import re
import time

import httpx

from tests.conftest import ADMIN_KEY

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
ALARMING = re.compile(
    r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Error\(|Error:|Warning:|GOAWAY|too_many_pings|"
    r"not implemented",
    re.IGNORECASE,
)


def alarming_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if ALARMING.search(line)]


def test_a_clean_start_and_one_upload_log_nothing_alarming(server_factory, tmp_path):
    server = server_factory(env={"TYPECASE_DATA_DIR": str(tmp_path / "new" / "data")})  # created by the server
    server.start()
    server.wait_ready()
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=60) as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "notes"}).json()["knowledge_base"]["id"]
        text = "Typecase keeps its vectors in milvus-lite when no Milvus server is configured.\n" * 20
        r = http.post(f"/v1/knowledge-bases/{kb}/files", files={"file": ("notes.txt", text.encode(), "text/plain")})
        assert r.status_code == 200, r.text
        file_id = r.json()["file"]["id"]
        deadline = time.monotonic() + 120
        while (status := http.get(f"/v1/files/{file_id}").json()["file"]["status"]) not in (
            "FILE_STATUS_DONE",
            "FILE_STATUS_FAILED",
        ) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == "FILE_STATUS_DONE", server.output()[-3000:]
        hits = http.post("/v1/knowledge-bases:search", json={"kb_ids": [kb], "query": "where are vectors kept?"})
        assert hits.status_code == 200 and hits.json()["hits"], hits.text
    assert server.stop() == 0
    assert alarming_lines(server.output()) == [], "\n".join(alarming_lines(server.output()))
