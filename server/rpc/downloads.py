"""Stored objects served as a stream of google.api.HttpBody, the way HTTP serves a file: one byte range, an RFC 6266
Content-Disposition, and (when the storage can sign URLs and the caller allows it) a presigned redirect.

Response headers travel twice: in the first message's extensions (a Struct, HttpBody's own place for a stream's
response metadata, which the HTTP gateway turns into headers and a 206/307 status, see gateway/httpbody.py) and
in the trailing metadata for gRPC clients (initial metadata is already sent by the trace interceptor). Any domain
that stores files (knowledge originals, chat attachments) serves them through `object_body`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import quote

import grpc
from google.api import httpbody_pb2
from google.protobuf import any_pb2, struct_pb2

from typecase.server.rpc.errors import TypecaseError, invalid_argument


def content_disposition(name: str, inline: bool) -> str:
    """RFC 6266: an ASCII fallback `filename` for old clients beside the exact UTF-8 `filename*`."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name) or "download"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def byte_range(spec: str, size: int) -> tuple[int, int]:
    """[start, end) of one HTTP byte range ("bytes=a-b", "bytes=a-", "bytes=-n") of a `size`-byte file."""
    if not spec:
        return 0, size
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", spec)
    if m is None or not (m.group(1) or m.group(2)):
        raise invalid_argument("range", 'one byte range such as "bytes=0-99", "bytes=100-" or "bytes=-50"')
    if not m.group(1):  # the last n bytes
        return max(size - int(m.group(2)), 0), size
    start = int(m.group(1))
    end = min(int(m.group(2)) + 1, size) if m.group(2) else size
    if start >= size or end <= start:
        raise TypecaseError(
            grpc.StatusCode.OUT_OF_RANGE,
            "INVALID_ARGUMENT",
            f"range: {spec!r} is not satisfiable for a file of {size} bytes",
            {"field": "range", "size_bytes": str(size), "content_range": f"bytes */{size}"},
        )
    return start, end


async def object_body(
    storage,
    key: str,
    *,
    size: int,
    mime_type: str,
    name: str,
    range_spec: str = "",
    inline: bool = False,
    context=None,
    redirect_seconds: int = 0,
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """The object's bytes (or the asked range) as HttpBody messages; with redirect_seconds > 0 and a storage that
    signs URLs, one message without data whose `location` is a presigned URL (the storage then serves ranges)."""
    start, end = byte_range(range_spec, size)
    disposition = content_disposition(name, inline)
    headers = [("content-disposition", disposition), ("x-file-size", str(size)), ("accept-ranges", "bytes")]
    if range_spec:
        headers.append(("content-range", f"bytes {start}-{end - 1}/{size}"))
    location = None
    if redirect_seconds > 0:
        location = await storage.presigned_get(
            key, redirect_seconds, {"content-type": mime_type, "content-disposition": disposition}
        )
    if location:
        headers = [("location", location), ("content-disposition", disposition)]
    if context is not None:
        context.set_trailing_metadata(headers)
    values = struct_pb2.Struct()
    values.update(dict(headers))
    extension = any_pb2.Any()
    extension.Pack(values)
    if location:
        yield httpbody_pb2.HttpBody(content_type=mime_type, extensions=[extension])
        return
    position, first = 0, True
    async for piece in await storage.get(key):
        lo, hi = max(start - position, 0), min(end - position, len(piece))
        position += len(piece)
        if hi > lo:
            if first:
                yield httpbody_pb2.HttpBody(content_type=mime_type, data=piece[lo:hi], extensions=[extension])
            else:
                yield httpbody_pb2.HttpBody(data=piece[lo:hi])
            first = False
        if position >= end:
            break
    if first:  # an empty range of an empty file still says what it is
        yield httpbody_pb2.HttpBody(content_type=mime_type, extensions=[extension])
