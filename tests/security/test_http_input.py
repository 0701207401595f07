"""Hostile input on the HTTP surfaces (issue 18): each was a 500 or worse before, and must be a clear 4xx now.

Request heads (both listeners, raw sockets: an HTTP client refuses to send these), JSON nesting, malformed and
truncated multipart bodies, attachment names, and NUL characters in text (PostgreSQL, where they were 500s).
Everything goes through the real App or a real `typecase serve` process, as an ordinary caller would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_KEY, free_port
from typecase.v1 import chat_pb2, chat_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {ADMIN_KEY}"),)
MiB = 1024 * 1024


def deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


def http(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", headers=AUTH, timeout=30)


def error_message(reply: httpx.Response) -> str:
    return reply.json()["message"]


# -- request heads --------------------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def send_head(port: int, head: bytes, *, chunk: int = 256 * 1024, timeout: float = 20.0) -> bytes:
    """Send `head` (however long) on a raw socket, reading whatever the server answers meanwhile; returns what
    arrived before the server closed (b"" if it reset the connection before its answer could be read)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setblocking(False)
        view, deadline = memoryview(head), time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
                if not data:
                    return received
                received += data
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return received
            if view:
                try:
                    view = view[sock.send(view[:chunk]) :]
                except BlockingIOError:
                    time.sleep(0.001)
                except (BrokenPipeError, ConnectionResetError):
                    view = view[:0]
            else:
                time.sleep(0.005)
    raise AssertionError(f"no answer within {timeout}s; got {received[:200]!r}")


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    """One real `typecase serve` with the LLM API proxy on (loopback, no upstream key: open), for the head tests."""
    from tests.conftest import ServerProcess

    proxy_port = free_port()
    server = ServerProcess(
        tmp_path_factory.mktemp("heads"),
        {
            "TYPECASE_PROXY_ENABLED": "true",
            "TYPECASE_PROXY_PORT": str(proxy_port),
            "TYPECASE_PROXY_TARGET_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: 502 if reached
            "TYPECASE_LLM_LOCAL_ENABLED": "false",
        },
    )
    server.start()
    try:
        server.wait_ready()
        yield server, {"gateway": server.http_port, "proxy": proxy_port}
    finally:
        server.stop()


@pytest.mark.parametrize("listener", ["gateway", "proxy"])
def test_a_50_mb_header_gets_431_and_leaves_memory_flat(serving, listener):
    server, ports = serving
    before = rss_kib(server.proc.pid)
    answer = send_head(ports[listener], b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (50 * MiB))
    grown = rss_kib(server.proc.pid) - before
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB while a 50 MB header arrived"  # was +73 MB
    assert server.proc.poll() is None


@pytest.mark.parametrize("listener", ["gateway", "proxy"])
def test_too_many_headers_or_too_long_a_head_gets_431(serving, listener):
    server, ports = serving
    port = ports[listener]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    answer = send_head(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"more than 100 request headers" in answer, answer[:300]
    # A complete head over 64 KiB in one read is measured exactly, not only while it arrives.
    answer = send_head(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: " + b"b" * (70 * 1024) + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431 ") and b"exceed 65536 bytes" in answer, answer[:300]
    # Ordinary requests still work on the same listener.
    answer = send_head(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 502 ")), answer[:300]


# -- JSON nesting -----------------------------------------------------------------------------------------------
async def test_json_nested_100000_levels_is_a_400_on_every_json_surface(kb_app):
    app, kb_id = kb_app
    async with http(app) as client:
        reply = await client.post(
            "/v1/sessions", content=deep_json(100_000), headers={"content-type": "application/json"}
        )
        assert reply.status_code == 400, reply.text
        assert "nests JSON more than 100 levels deep" in error_message(reply)
        # An NDJSON request stream (UploadFile's messages) ...
        reply = await client.post(
            f"/v1/knowledge-bases/{kb_id}/files",
            content=deep_json(100_000),
            headers={"content-type": "application/x-ndjson"},
        )
        assert reply.status_code == 400 and "nests JSON more than 100 levels deep" in error_message(reply)
        # ... and a JSON value bound from text: a Struct form field of a multipart upload (as a query value).
        deep_form = (
            b'--XyZ\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
            + b'{"a":' * 2000
            + b"1"
            + b"}" * 2000
            + b"\r\n"
            + form("a.txt", b"x")
        )
        reply = await client.post(
            f"/v1/knowledge-bases/{kb_id}/files",
            content=deep_form,
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        assert reply.status_code == 400 and "at most 100 levels deep" in error_message(reply), reply.text
        assert await files_in(client, kb_id) == []
    # A WebSocket's first frame (the request of a server stream) answers with an error frame, not a crash.
    url = f"ws://127.0.0.1:{app.http_port}/v1/admin/logs:stream"
    async with connect(url, subprotocols=["bearer", ADMIN_KEY]) as ws:
        await ws.send(json.dumps({"tail": 1})[:-1] + ', "x": ' + deep_json(100_000) + "}")
        frame = json.loads(await ws.recv())
    assert frame["error"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0], frame
    assert "nests JSON more than 100 levels deep" in frame["error"]["message"]


async def test_json_at_the_nesting_cap_passes_and_one_level_more_is_refused(app_factory):
    app = await app_factory(http_max_json_depth=4)
    async with http(app) as client:
        at_cap = {"title": "ok", "metadata": {"a": {"b": {"c": 1}}}}  # 4 levels: body, metadata, a, b
        reply = await client.post("/v1/sessions", json=at_cap)
        assert reply.status_code == 200, reply.text
        over = {"title": "ok", "metadata": {"a": {"b": {"c": [1]}}}}
        reply = await client.post("/v1/sessions", json=over)
        assert reply.status_code == 400 and "more than 4 levels deep" in error_message(reply), reply.text
        # Brackets inside strings are text, not nesting.
        reply = await client.post("/v1/sessions", json={"title": "[[[[[[{{{{{{", "metadata": {"a": 1}})
        assert reply.status_code == 200, reply.text


# -- multipart -----------------------------------------------------------------------------------------------
def form(file_name: str, data: bytes, boundary: str = "XyZ", close: bool = True) -> bytes:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: text/plain\r\n\r\n"
    ).encode() + data
    return body + (f"\r\n--{boundary}--\r\n".encode() if close else b"")


@pytest.fixture
async def kb_app(app_factory):
    """The App with a knowledge base to upload to (ingestion not run in-process: nothing here should get that far)."""
    app = await app_factory(knowledge_worker_in_process=False)
    async with http(app) as client:
        reply = await client.post("/v1/knowledge-bases", json={"name": "uploads"})
        assert reply.status_code == 200, reply.text
    return app, reply.json()["knowledge_base"]["id"]


async def files_in(client: httpx.AsyncClient, kb_id: str) -> list[str]:
    reply = await client.get(f"/v1/knowledge-bases/{kb_id}/files")
    return [f["name"] for f in reply.json()["files"]]


@pytest.mark.parametrize("case", ["boundary mismatch", "random bytes", "60 MB part header"])
async def test_malformed_multipart_is_a_400(kb_app, case):
    app, kb_id = kb_app
    body = {
        "boundary mismatch": form("a.txt", b"hello", boundary="Other"),
        "random bytes": os.urandom(4096),
        "60 MB part header": b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + b"n" * (60 * MiB),
    }[case]
    async with http(app) as client:
        reply = await client.post(
            f"/v1/knowledge-bases/{kb_id}/files",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        assert reply.status_code == 400, (case, reply.status_code, reply.text[:300])
        assert error_message(reply).startswith("malformed multipart body"), reply.text
        assert await files_in(client, kb_id) == []


async def test_a_truncated_multipart_upload_is_refused_and_nothing_is_stored(kb_app):
    app, kb_id = kb_app
    async with http(app) as client:
        cut = form("cut.txt", b"x" * 600_000, close=False)  # three 256 KiB request messages, the last held back
        reply = await client.post(
            f"/v1/knowledge-bases/{kb_id}/files",
            content=cut,
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        assert reply.status_code == 400, reply.text
        assert "ended before its closing boundary" in error_message(reply)
        assert await files_in(client, kb_id) == []
    stored = app.settings.data_dir / "storage"
    assert not stored.exists() or not [p for p in stored.rglob("*") if p.is_file()]  # no object left behind


@pytest.mark.parametrize("name", [".", ".."])
async def test_attachment_names_dot_and_dotdot_are_400_naming_the_field(app_factory, name):
    app = await app_factory()
    async with http(app) as client:
        session = (await client.post("/v1/sessions", json={"title": "t"})).json()["session"]
        reply = await client.post(
            f"/v1/sessions/{session['id']}:chat",
            json={"content": "hi", "attachments": [{"name": name, "data": base64.b64encode(b"x").decode()}]},
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["details"][0]["metadata"]["field"] == "attachments[0].name", reply.text


@pytest.mark.parametrize("name", [".", ".."])
async def test_upload_file_names_dot_and_dotdot_are_400_naming_the_field(kb_app, name):
    app, kb_id = kb_app
    async with http(app) as client:
        reply = await client.post(
            f"/v1/knowledge-bases/{kb_id}/files",
            content=form(name, b"x"),
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["details"][0]["metadata"]["field"] == "file_name", reply.text


# -- NUL characters ----------------------------------------------------------------------------------------------
async def test_nul_in_stored_text_is_invalid_argument_naming_the_field(app_factory, pg_database_url):
    """On PostgreSQL, which refuses U+0000 in text and JSON: every one of these was a 500."""
    app = await app_factory(database_url=pg_database_url, knowledge_worker_in_process=False)
    async with http(app) as client:
        session = (await client.post("/v1/sessions", json={"title": "fine"})).json()["session"]
        rest_cases = [
            ("POST", "/v1/sessions", {"title": "a\u0000b"}, "session.title"),
            ("POST", "/v1/sessions", {"title": "t", "metadata": {"k": ["ok", "x\u0000"]}}, "session.metadata.k[1]"),
            (
                "POST",
                f"/v1/sessions/{session['id']}/messages",
                {"pairs": [{"question": "q", "answer": "a"}, {"question": "q", "answer": "\u0000"}]},
                "pairs[1].answer",
            ),
            ("POST", "/v1/knowledge-bases", {"name": "kb\u0000"}, "knowledge_base.name"),
        ]
        for method, path, body, field in rest_cases:
            reply = await client.request(method, path, json=body)
            assert reply.status_code == 400, (path, reply.text)
            assert reply.json()["details"][0]["metadata"]["field"] == field, reply.text
            assert "NUL" in error_message(reply)
        # A form field and a file name in a multipart upload, and a path variable.
        kb = (await client.post("/v1/knowledge-bases", json={"name": "kb"})).json()["knowledge_base"]
        reply = await client.post(
            f"/v1/knowledge-bases/{kb['id']}/files",
            content=form("a\x00.txt", b"x"),
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        assert reply.status_code == 400 and reply.json()["details"][0]["metadata"]["field"] == "file_name", reply.text
        reply = await client.get("/v1/sessions/abc%00def")
        assert reply.status_code == 400 and reply.json()["details"][0]["metadata"]["field"] == "session_id"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await chat_pb2_grpc.ChatServiceStub(channel).UpdateSession(
                chat_pb2.UpdateSessionRequest(session=chat_pb2.Session(id=session["id"], title="x\x00")),
                metadata=GRPC_AUTH,
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.value.details() == "session.title: must not contain NUL (\\u0000) characters"
        # Each message of a client stream is checked too.
        requests = [
            knowledge_pb2.UploadFileRequest(kb_id=kb["id"], file_name="ok.txt", chunk=b"\x00 bytes are fine"),
            knowledge_pb2.UploadFileRequest(chunk=b"more", file_name="late\x00"),
        ]

        async def stream():
            for request in requests:
                yield request
                await asyncio.sleep(0)

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await knowledge_pb2_grpc.KnowledgeServiceStub(channel).UploadFile(stream(), metadata=GRPC_AUTH)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "file_name" in failure.value.details()
