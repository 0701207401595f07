"""Client streaming from HTTP: multipart uploads and NDJSON request streams. Both targets."""

from __future__ import annotations

import hashlib
import json

import pytest
from support import Harness


def multipart(parts: list[tuple[str, str | None, str | None, bytes]], boundary: str = "XyZ") -> tuple[bytes, str]:
    out = b""
    for name, filename, ctype, data in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"Content-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


async def test_multipart_upload_streams_chunks(gw):
    data = bytes(range(256)) * 2400  # 614,400 bytes
    body, ctype = multipart(
        [
            ("description", None, None, b"a report"),
            ("labels[team]", None, None, b"core"),
            ("parent", None, None, b"shelves/evil"),
            ("file", "report.pdf", "application/pdf", data),
        ]
    )
    r = await gw.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "parent": "shelves/s1",
        "file_name": "report.pdf",
        "content_type": "application/pdf",
        "description": "a report",
        "size": str(len(data)),
        "messages": 3,
        "sha256": hashlib.sha256(data).hexdigest(),
        "labels": {"team": "core"},
    }
    assert gw.state.uploads[-1] == [262144, 262144, len(data) - 2 * 262144]


async def test_multipart_chunk_size_option_and_form_override(pb):
    async with Harness(pb, "inprocess", upload_chunk_bytes=1000) as h:
        body, ctype = multipart([("file_name", None, None, b"given.txt"), ("f", "x.bin", None, b"a" * 2500)])
        r = await h.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": ctype})
        assert r.json()["file_name"] == "given.txt" and r.json()["content_type"] == ""
        assert h.state.uploads[-1] == [1000, 1000, 500]


async def test_multipart_without_file_and_empty_file(gw):
    body, ctype = multipart([("description", None, None, b"d")])
    r = await gw.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": ctype})
    assert r.json()["messages"] == 1 and r.json()["size"] == "0" and r.json()["description"] == "d"
    body, ctype = multipart([("file", "empty.txt", "text/plain", b"")])
    r = await gw.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": ctype})
    assert r.json()["messages"] == 1 and r.json()["file_name"] == "empty.txt"


@pytest.mark.parametrize(
    "parts, needle",
    [
        ([("file", "a", None, b"x"), ("description", None, None, b"late")], "before the file part"),
        ([("file", "a", None, b"x"), ("file2", "b", None, b"y")], "only one file part"),
        ([("messages", None, None, b"x")], None),  # not a request field: ignored
    ],
)
async def test_multipart_rejections(gw, parts, needle):
    body, ctype = multipart(parts)
    r = await gw.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": ctype})
    if needle is None:
        assert r.status_code == 200
    else:
        assert r.status_code == 400 and needle in r.json()["message"]


async def test_multipart_total_limit(pb):
    async with Harness(pb, "channel", max_upload_bytes=10_000) as h:
        body, ctype = multipart([("file", "big", None, b"z" * 20_000)])
        r = await h.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": ctype})
        assert r.status_code == 413


async def test_ndjson_client_stream(gw):
    lines = [{"file_name": "n.txt", "data": "aGVsbG8g", "parent": "x"}, {"data": "d29ybGQ="}, {"data": ""}]
    body = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    r = await gw.client.post("/v1/shelves/s1/files", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200
    out = r.json()
    assert (
        out["parent"] == "shelves/s1" and out["file_name"] == "n.txt" and out["size"] == "11" and out["messages"] == 3
    )
    assert out["sha256"] == hashlib.sha256(b"hello world").hexdigest()


async def test_concatenated_json_client_stream_and_errors(gw):
    r = await gw.client.post(
        "/v1/shelves/s1/files",
        content=b'{"data": "YQ=="}\n{\n "data": "Yg=="\n}',
        headers={"content-type": "application/json"},
    )
    assert r.json()["size"] == "2" and r.json()["messages"] == 2
    r = await gw.client.post(
        "/v1/shelves/s1/files",
        content=b'{"data": "YQ=="}\n{"data": 5}\n',
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 400 and '"data"' in r.json()["message"]
    r = await gw.client.post(
        "/v1/shelves/s1/files", content=b'{"data": "YQ=="}\n{oops}\n', headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = await gw.client.post("/v1/shelves/s1/files", content=b"", headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["messages"] == 0
