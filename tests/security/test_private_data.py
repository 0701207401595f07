"""Issue 18: credentials never reach a log (stderr, the log history file, ListLogs/StreamLogs), and the data dir is
private to the server's user. Against a real `typecase serve`."""

from __future__ import annotations

import json
import os
import stat
import time

import httpx
import pytest
import websockets

from tests.conftest import ADMIN_KEY
from typecase.server.redact import redact

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize(
    "text, secret",
    [
        (
            '127.0.0.1:5 - "WebSocket /v1/admin/logs%3Astream?access_token=tc_SeCrEt0123456789abcdef" [accepted]',
            "SeCrEt0123456789",
        ),
        ("GET /v1/models?tag=a&access_token=opaque-token-value&b=1", "opaque-token-value"),
        ("POST https://generativelanguage.googleapis.com/v1/models/x:generate?key=AIzaSyD-SeCrEt-123", "SeCrEt-123"),
        ("https://bucket.s3.amazonaws.com/o?X-Amz-Credential=AKIA123&X-Amz-Signature=deadbeefcafe", "deadbeefcafe"),
        ("headers: authorization: Bearer sk-live-9f8e7d6c5b4a39281706", "9f8e7d6c5b4a"),
        ("Authorization: Basic YWxpY2U6aHVudGVyMg==", "YWxpY2U6aHVudGVyMg"),
        ("x-api-key: sk-ant-api03-SeCrEtSeCrEt", "SeCrEtSeCrEt"),
        ('{"api_key": "not-shaped-like-a-key", "max_tokens": 64}', "not-shaped-like-a-key"),
        ('{"refresh_token": "Yq3-refresh-value"}', "Yq3-refresh-value"),
        ("redis://default:hunter2@cache:6379/0", "hunter2"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("a key pasted in a message: tc_AbCdE0123456789xyzXYZ", "0123456789xyz"),
        ("login failed: password=hunter22 for bob", "hunter22"),
    ],
)
def test_credential_shapes_are_masked_in_any_log_text(text, secret):
    masked = redact(text)
    assert secret not in masked and "[REDACTED]" in masked


@pytest.mark.parametrize(
    "text",
    [
        "authentication failed for /typecase.v1.AuthService/GetMe from 127.0.0.1 (key tc_AbCdE…): unknown API key",
        "refresh token already used (another tab or client refreshed first)",
        "user.password: must be 8 to 1024 characters",
        "authorization must be 'Bearer <API key or access token>'",
        '{"model": "m", "max_tokens": 64, "prompt_tokens": 3}',
    ],
)
def test_ordinary_log_text_is_left_alone(text):
    assert redact(text) == text


def not_private(root) -> list[str]:
    """Everything under `root` (itself included) that group or others may use."""
    found = []
    for directory, dirnames, filenames in os.walk(root):
        for path in (directory, *(os.path.join(directory, n) for n in (*dirnames, *filenames))):
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                found.append(f"{oct(stat.S_IMODE(st.st_mode))} {os.path.relpath(path, root)}")
    return sorted(set(found))


def history(server) -> str:
    return httpx.get(server.http_url + "/v1/admin/logs", params={"page_size": 500}, headers=ADMIN, timeout=10).text


async def test_credentials_in_urls_never_reach_a_log(server_factory):
    server = server_factory(env={"TYPECASE_LOG_LEVEL": "INFO", "TYPECASE_PROXY_LOG_FLUSH_SECONDS": "0.1"}).start()
    server.wait_ready()
    secret = httpx.post(server.http_url + "/v1/api-keys", headers=ADMIN, json={"name": "browser"}).json()["secret"]
    wrong = "tc_WrongButSecretLooking0123456789"
    ws = f"ws://127.0.0.1:{server.http_port}/v1/admin/logs:stream"
    for credential in (secret, wrong):  # browsers cannot set headers on a WebSocket: the token rides in the URL
        try:
            async with websockets.connect(f"{ws}?access_token={credential}") as socket:
                await socket.send(json.dumps({"tail": 1}))
                await socket.recv()
        except websockets.WebSocketException:  # the wrong key's call fails, after the access line
            pass
    assert httpx.get(server.http_url + "/v1/auth/me", params={"access_token": secret}).status_code == 200

    deadline = time.monotonic() + 20
    while "WebSocket" not in (lines := history(server)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "access_token=[REDACTED]" in lines  # the access line is there, without the key
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream(
            "GET", server.http_url + "/v1/admin/logs:stream", params={"tail": 200}, headers=ADMIN
        ) as stream:
            streamed = ""
            async for line in stream.aiter_lines():
                streamed += line
                if "WebSocket" in line:
                    break
    server.stop()
    on_disk = "".join(p.read_text() for p in (server.log_path.parent / "logs").glob("server.jsonl*"))
    for where, text in (
        ("ListLogs", lines),
        ("StreamLogs", streamed),
        ("history file", on_disk),
        ("stderr", server.output()),
    ):
        for credential in (secret, wrong):
            assert credential[8:] not in text, where


def upload_a_document(server) -> None:
    kb = httpx.post(server.http_url + "/v1/knowledge-bases", headers=ADMIN, json={"name": "private"}, timeout=30)
    assert kb.status_code == 200, kb.text
    reply = httpx.post(
        f"{server.http_url}/v1/knowledge-bases/{kb.json()['knowledge_base']['id']}/files",
        headers=ADMIN,
        files={"file": ("salaries.txt", b"Everyone's salary, in plain text.", "text/plain")},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text


def test_the_data_dir_and_everything_in_it_are_private(server_factory):
    server = server_factory().start()
    server.wait_ready()
    upload_a_document(server)
    data_dir = server.log_path.parent
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert {p.name for p in data_dir.glob("typecase.db*")} >= {"typecase.db", "typecase.db-wal"}
    assert list((data_dir / "storage" / "objects").rglob("*")), "the upload is stored"
    assert not_private(data_dir) == []  # while running: SQLite's -wal and -shm, milvus-lite, uploads, logs
    server.stop()
    assert not_private(data_dir) == []


def test_an_existing_open_data_dir_is_made_private_at_start(server_factory):
    server = server_factory().start()
    server.wait_ready()
    server.stop()
    data_dir = server.log_path.parent
    (data_dir / "notes.txt").write_text("left here by an operator")
    for directory, _dirnames, filenames in os.walk(data_dir):  # as an earlier version left it
        os.chmod(directory, 0o755)
        for name in filenames:
            os.chmod(os.path.join(directory, name), 0o644)
    assert not_private(data_dir)
    again = server_factory(data_dir=data_dir, name="again").start()
    again.wait_ready()
    assert not_private(data_dir) == []
    assert stat.S_IMODE((data_dir / "typecase.db").stat().st_mode) == 0o600
    again.stop()


async def test_log_history_written_before_redaction_is_redacted_at_start(app_factory, tmp_path):
    leaked = "tc_LeakedBeforeTheFix0123456789abcdef"
    logs = tmp_path / "data" / "logs"
    logs.mkdir(parents=True)
    old_line = {
        "seq": 7,
        "time": time.time(),
        "level": 2,
        "logger": "uvicorn.error",
        "trace_id": "",
        "fields": {},
        "message": f'127.0.0.1:5 - "WebSocket /v1/admin/logs%3Astream?access_token={leaked}" [accepted]',
    }
    (logs / "server.jsonl").write_text(json.dumps(old_line) + "\n")
    app = await app_factory()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        listed = (await client.get("/v1/admin/logs", headers=ADMIN)).text
    assert "WebSocket" in listed and leaked[8:] not in listed
    assert leaked[8:] not in (logs / "server.jsonl").read_text()
