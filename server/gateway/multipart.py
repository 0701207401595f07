"""Client-streaming requests from an HTTP body: multipart/form-data uploads and NDJSON message streams.

Upload convention (``Content-Type: multipart/form-data``; the method is client-streaming and its
request message has exactly one top-level, non-repeated ``bytes`` field):

* the first request message gets the path variables and every text form field that comes *before*
  the file part (a field name is a field path like a query parameter: ``a.b``, ``m[k]``, repeated
  names for repeated fields); text fields after the file part are rejected (the first message is
  already on its way by then);
* the file part's bytes stream into the ``bytes`` field, one request message per chunk of
  ``upload_chunk_bytes`` (default 256 KiB; the last one shorter). The first chunk travels in the
  first message, later messages carry only the chunk. An empty or missing file gives one message;
* the file part's filename fills a string field ``file_name`` and its Content-Type a string field
  ``content_type``, when the message has them and the form did not set them;
* only one file part is accepted. Parsing is streaming (python-multipart's ``MultipartParser``):
  at most one chunk plus one network read is held in memory, and the handler's pace drives reading;
* a malformed body (wrong boundary, garbage, a part header line over ``max_part_header_bytes`` or more
  than python-multipart's 8 headers in a part) is a 400, and so is a body that ends before its closing
  boundary: the last message is held back until the boundary is seen, so a truncated upload fails the
  call (the handler's request stream raises) instead of reaching the handler as a complete file.

Any other content type is a stream of JSON request messages (NDJSON, or concatenated JSON values as
grpc-gateway's decoder accepts); path variables go into the first message; each message may be at
most ``max_body_bytes`` and nest at most ``max_json_depth`` levels; an empty body is a stream of no messages.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.types import Receive

from . import jsontext
from .bindings import Binding
from .errors import RpcFailure, invalid_argument
from .query import QueryBinder

_PARSE_ERRORS = {  # python-multipart's messages for its caps, said with the numbers
    "Maximum header size exceeded": "a part header line is longer than {} bytes",
    "Maximum header count exceeded": "a part has more than 8 headers",
}


class ClientGone(Exception):
    """The client disconnected while the request body was being read."""


def too_large(limit: int, what: str = "request body") -> RpcFailure:
    return RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what} exceeds {limit} bytes", http_status=413)


async def body_chunks(receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    """The request body as it arrives, enforcing ``limit`` while reading."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if limit is not None and size > limit:
                raise too_large(limit)
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()  # fast path: most bodies arrive in one message
    if message["type"] == "http.request" and not message.get("more_body", False):
        body = message.get("body", b"")
        if len(body) > limit:
            raise too_large(limit)
        return body
    if message["type"] == "http.disconnect":
        raise ClientGone()
    parts = [message.get("body", b"")]
    size = len(parts[0])
    async for chunk in body_chunks(receive, None):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


class _Part:
    __slots__ = ("name", "filename", "content_type", "data", "is_file")

    def __init__(self) -> None:
        self.name = ""
        self.filename: str | None = None
        self.content_type = ""
        self.data = bytearray()
        self.is_file = False


class _FormEvents:
    """Collects python-multipart callbacks into parts and file bytes between reads."""

    def __init__(self, max_field_bytes: int) -> None:
        self.max_field_bytes = max_field_bytes
        self.part: _Part | None = None
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, bytes] = {}
        self.fields: list[tuple[str, str]] = []  # text fields, in order
        self.file: _Part | None = None
        self.file_started = False  # the file part's headers are complete
        self.file_ended = False
        self.file_parts = 0
        self.fields_after_file = False
        self.error: RpcFailure | None = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()
        self.headers = {}

    def on_header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        part = self.part
        assert part is not None
        _, params = parse_options_header(self.headers.get("content-disposition", b""))
        part.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is not None:
            part.is_file = True
            part.filename = filename.decode("utf-8", "replace")
            part.content_type = self.headers.get("content-type", b"").decode("latin-1").strip()
            self.file_parts += 1
            if self.file_parts > 1:
                self.error = invalid_argument("only one file part is accepted per upload")
            self.file = part
            self.file_started = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        assert part is not None
        part.data.extend(data[start:end])
        if not part.is_file and len(part.data) > self.max_field_bytes:
            self.error = too_large(self.max_field_bytes, f'form field "{part.name}"')

    def on_part_end(self) -> None:
        part = self.part
        assert part is not None
        if part.is_file:
            self.file_ended = True
        else:
            if self.file_started:
                self.fields_after_file = True
            self.fields.append((part.name, part.data.decode("utf-8", "replace")))
        self.part = None


async def multipart_requests(
    receive: Receive,
    content_type: str,
    binding: Binding,
    params: dict[str, str],
    chunk_size: int,
    max_total: int | None,
    max_field_bytes: int,
    max_part_header_bytes: int = 8 << 10,
) -> AsyncIterator[Any]:
    """Request messages for a multipart upload (see the module docstring)."""
    _, options = parse_options_header(content_type.encode("latin-1"))
    boundary = options.get(b"boundary")
    if not boundary:
        raise invalid_argument("multipart/form-data without a boundary")
    upload = binding.upload
    if upload is None:
        raise invalid_argument(f"{binding.method.full_name} does not take file uploads")
    events = _FormEvents(max_field_bytes)
    parser = MultipartParser(boundary, events.callbacks(), max_header_size=max_part_header_bytes)

    def feed(chunk: bytes | None) -> None:
        """Parse a chunk (None: the end of the body); a malformed body is the client's error, never a 500."""
        try:
            if chunk is None:
                parser.finalize()
            else:
                parser.write(chunk)
        except MultipartParseError as e:
            known = _PARSE_ERRORS.get(str(e))
            detail = known.format(max_part_header_bytes) if known else str(e)
            raise invalid_argument(f"malformed multipart body: {detail}") from None

    form = QueryBinder(binding.request_cls.DESCRIPTOR, [fp.names for _, fp in binding.path_fields])
    first: Any = None  # built when the file part starts (or at the end without one)
    data_field = upload.data.name
    sent_first = False

    def build_first() -> Any:
        msg = binding.request_cls()
        form.bind(msg, events.fields, what="form field")
        binding.apply_path(msg, params)
        f = events.file
        if f is not None:
            if upload.file_name is not None and not getattr(msg, upload.file_name.name) and f.filename:
                setattr(msg, upload.file_name.name, f.filename)
            if upload.content_type is not None and not getattr(msg, upload.content_type.name) and f.content_type:
                setattr(msg, upload.content_type.name, f.content_type)
        return msg

    def take(n: int) -> bytes:
        f = events.file
        assert f is not None
        chunk = bytes(f.data[:n])
        del f.data[:n]
        return chunk

    async for chunk in body_chunks(receive, max_total):
        feed(chunk)
        if events.error is not None:
            raise events.error
        if events.fields_after_file:
            raise invalid_argument("form fields must come before the file part")
        if events.file_started and first is None:
            first = build_first()
        f = events.file
        while f is not None and len(f.data) >= chunk_size:
            if not sent_first:
                setattr(first, data_field, take(chunk_size))
                sent_first = True
                yield first
            else:
                msg = binding.request_cls()
                setattr(msg, data_field, take(chunk_size))
                yield msg
    feed(None)
    if events.error is not None:
        raise events.error
    if parser.state != MultipartState.END:
        raise invalid_argument("the multipart body ended before its closing boundary: it was cut short")
    if first is None:
        first = build_first()
    f = events.file
    rest = bytes(f.data) if f is not None else b""
    if not sent_first:
        setattr(first, data_field, rest)
        yield first
    elif rest:
        msg = binding.request_cls()
        setattr(msg, data_field, rest)
        yield msg


async def json_requests(
    receive: Receive,
    binding: Binding,
    params: dict[str, str],
    max_message_bytes: int,
    max_total: int | None,
    max_json_depth: int = jsontext.DEFAULT_MAX_DEPTH,
) -> AsyncIterator[Any]:
    """Request messages from NDJSON (or concatenated JSON values); path variables fill the first."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()
    buf = ""
    first = True
    done = False
    chunks = body_chunks(receive, max_total)
    while True:
        # Take every complete value in the buffer.
        while True:
            pos = 0
            n = len(buf)
            while pos < n and buf[pos] in " \t\r\n":
                pos += 1
            if pos == n:
                buf = ""
                break
            try:
                value, end = decoder.raw_decode(buf, pos)
            except RecursionError:
                raise jsontext.too_deep(max_json_depth, "a request message") from None
            except ValueError as e:
                if not done and n - pos <= max_message_bytes:
                    buf = buf[pos:]
                    break  # maybe incomplete: read more
                raise invalid_argument(f"request message is not valid JSON: {e}") from None
            jsontext.check_depth(buf[pos:end], max_json_depth, "a request message")
            buf = buf[end:]
            msg = binding.request_cls()
            binding.merge_json(msg, value)
            if first:
                binding.apply_path(msg, params)
                first = False
            yield msg
        if done:
            break
        if len(buf) > max_message_bytes:
            raise too_large(max_message_bytes, "request message")
        try:
            chunk = await chunks.__anext__()
            buf += text.decode(chunk)
        except StopAsyncIteration:
            buf += text.decode(b"", final=True)
            done = True
        except UnicodeDecodeError:
            raise invalid_argument("request body is not valid UTF-8") from None
