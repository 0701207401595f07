"""Raw ``google.api.HttpBody`` responses as HTTP would serve a file: response headers, ``Range`` and its statuses.

HttpBody's own contract says a streaming method's response metadata belongs in the first message's
``extensions``. A method that wants response headers packs a ``google.protobuf.Struct`` there ({header: string}),
and the gateway sends the headers in ALLOWED_HEADERS (nothing that could break framing or security) as real HTTP
headers: ``content-range`` makes the status 206 Partial Content, ``location`` (with an empty stream) a 307 redirect.
gRPC metadata cannot carry them, because initial metadata is already sent (the trace id) when a method starts.

A request ``Range`` header (RFC 9110 §14.2) fills the request message's top-level string field ``range`` when the
method returns HttpBody and the call did not set it; several ranges are ignored (the whole body, as the RFC
permits). An OUT_OF_RANGE failure of such a call is 416, with the ``content_range`` of its ErrorInfo metadata as
Content-Range. The gateway knows no domain: which field or metadata key a method uses is this convention only.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

ALLOWED_HEADERS = frozenset(
    {
        "content-disposition",
        "content-range",
        "accept-ranges",
        "cache-control",
        "etag",
        "last-modified",
        "location",
        "x-file-size",
    }
)
RANGE_FIELD = "range"


def range_header(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's single byte range ("bytes=a-b"), or "" when absent, not bytes, or several ranges."""
    for name, value in headers:
        if name.lower() == b"range":
            text = value.decode("latin-1").strip()
            if text.lower().startswith("bytes=") and "," not in text:
                return text
            return ""
    return ""


def apply_range(request: Any, header: str) -> bool:
    """Fill request.range from the Range header when the message has that field and it is unset."""
    if not header:
        return False
    field = request.DESCRIPTOR.fields_by_name.get(RANGE_FIELD)
    if field is None or field.type != field.TYPE_STRING or getattr(request, RANGE_FIELD):
        return False
    setattr(request, RANGE_FIELD, header)
    return True


def response_headers(first: Any) -> tuple[int, list[tuple[bytes, bytes]]]:
    """(status, headers) for a raw HttpBody stream from the Struct extensions of its first message."""
    headers: list[tuple[bytes, bytes]] = []
    names: set[str] = set()
    for extension in getattr(first, "extensions", ()) or ():
        values = struct_pb2.Struct()
        if not extension.Unpack(values):
            continue
        for key, value in values.items():
            name = key.lower()
            if name in ALLOWED_HEADERS and isinstance(value, str) and "\r" not in value and "\n" not in value:
                try:
                    headers.append((name.encode("latin-1"), value.encode("latin-1")))
                except UnicodeEncodeError:
                    continue
                names.add(name)
    status = 307 if "location" in names else 206 if "content-range" in names else 200
    return status, headers
