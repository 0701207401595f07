"""Caps on an HTTP/1.1 request head (request target + headers) before anything reads it: 431 beyond.

uvicorn's httptools protocol accumulates header bytes inside the parser with no ceiling: a single 50 MB header was
accepted and cost the server +73 MB of RSS, all before authentication (h11 has a limit, but uvicorn answers it with
400, it cannot cap the header count, and it is the slower parser). No maintained option exists for httptools, so
this subclass of uvicorn's own protocol counts at two points:
- every chunk read while a head is incomplete: past the byte cap (plus `WIRE_SLACK_BYTES` for the request line
  and the framing the precise count leaves out) the connection gets 431 and is closed, so memory stays within
  the cap plus one socket read however large the header is;
- each header as the parser completes it (the count cap) and the completed head (the byte cap, counted as the
  request target plus every header's name and value plus 4 bytes of framing each), so a head that arrived whole
  in one read is measured exactly.
Both listeners (the gateway's and the LLM API proxy's) use it through `limited_http_protocol`.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("typecase.http")
WIRE_SLACK_BYTES = 1024
_PER_HEADER_FRAMING = 4  # ": " and CRLF


class _HeadRefused(Exception):
    pass


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `max_head_bytes` and `max_header_count` (set by the factory below)."""

    max_head_bytes = 64 * 1024
    max_header_count = 100

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # between the end of one message and the end of the next head
        self._wire_bytes = 0
        self._head_size = 0
        self._header_count = 0
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._head_open:
            self._wire_bytes += len(data)
        super().data_received(data)  # a refusal raised in a callback ends up in send_400_response below
        if self._refusal is None and self._head_open and self._wire_bytes > self.max_head_bytes + WIRE_SLACK_BYTES:
            self._refuse(f"request headers exceed {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            self._refusal = f"more than {self.max_header_count} request headers"
            raise _HeadRefused
        self._head_size += len(name) + len(value) + _PER_HEADER_FRAMING
        if self._head_size > self.max_head_bytes:
            self._refusal = f"request headers exceed {self.max_head_bytes} bytes"
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_open = True
        self._wire_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # the parser stopped because a callback above refused the head
            self._send_431()
        else:
            super().send_400_response(msg)

    def _refuse(self, reason: str) -> None:
        self._refusal = reason
        self._send_431()

    def _send_431(self) -> None:
        reason = self._refusal or "request headers too large"
        log.warning("refused a request head from %s: %s", self.client[0] if self.client else "?", reason)
        body = reason.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def limited_http_protocol(max_head_bytes: int, max_header_count: int) -> type[HeadLimitedProtocol]:
    """A protocol class for uvicorn.Config(http=...) with these caps."""
    return type(
        "HeadLimitedProtocol",
        (HeadLimitedProtocol,),
        {"max_head_bytes": max_head_bytes, "max_header_count": max_header_count},
    )
