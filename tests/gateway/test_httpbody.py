"""The gateway's HttpBody conventions (server/gateway/httpbody.py): headers from the first message's Struct
extensions, only allowed ones and never with line breaks; 206/307 from content-range/location; the Range header."""

from __future__ import annotations

from google.api import httpbody_pb2
from google.protobuf import any_pb2, struct_pb2

from typecase.server.gateway.httpbody import apply_range, range_header, response_headers
from typecase.v1 import knowledge_pb2


def body_with(headers: dict) -> httpbody_pb2.HttpBody:
    s = struct_pb2.Struct()
    s.update(headers)
    extension = any_pb2.Any()
    extension.Pack(s)
    return httpbody_pb2.HttpBody(data=b"x", extensions=[extension])


def test_allowed_headers_pass_and_set_the_status_others_are_dropped():
    status, headers = response_headers(
        body_with(
            {
                "Content-Range": "bytes 0-0/10",
                "content-disposition": "inline",
                "set-cookie": "a=b",
                "content-length": "999",
                "etag": "bad\r\nx-injected: 1",
                "cache-control": 5,
            }
        )
    )
    assert status == 206
    assert sorted(headers) == [(b"content-disposition", b"inline"), (b"content-range", b"bytes 0-0/10")]
    assert response_headers(body_with({"location": "https://bucket.example/obj?sig=1"}))[0] == 307
    assert response_headers(httpbody_pb2.HttpBody(data=b"x")) == (200, [])
    other = any_pb2.Any()
    other.Pack(httpbody_pb2.HttpBody(content_type="text/plain"))  # not a Struct: ignored
    assert response_headers(httpbody_pb2.HttpBody(extensions=[other])) == (200, [])


def test_a_single_bytes_range_fills_an_unset_range_field_only():
    assert range_header([(b"Range", b"bytes=5-9")]) == "bytes=5-9"
    assert range_header([(b"range", b"bytes=0-1,4-5")]) == ""  # several ranges: ignored
    assert range_header([(b"range", b"items=0-1")]) == ""
    assert range_header([(b"accept", b"*/*")]) == ""
    request = knowledge_pb2.DownloadFileRequest(file_id="f")
    assert apply_range(request, "bytes=5-9") and request.range == "bytes=5-9"
    request = knowledge_pb2.DownloadFileRequest(file_id="f", range="bytes=0-0")
    assert not apply_range(request, "bytes=5-9") and request.range == "bytes=0-0"  # the query wins
    assert not apply_range(knowledge_pb2.GetFileRequest(file_id="f"), "bytes=5-9")  # no range field
