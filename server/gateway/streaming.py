"""Server streams over HTTP: NDJSON (default), Server-Sent Events, raw HttpBody, and WebSocket frames.

NDJSON (``application/x-ndjson``, grpc-gateway's stream format): one ``{"result": <message>}`` line
per message, flushed as it is produced; a failure after the first message ends the body with an
``{"error": <google.rpc.Status>}`` line. A failure before anything was sent is an ordinary HTTP error
(mapped status, Status JSON body), so every non-2xx response of the gateway has the same body shape.

SSE (``Accept: text/event-stream``): per message ``id: <seq>`` (when the response message has an
integer ``seq`` field) and ``data: <message JSON>``; ``event: error`` with the Status JSON on failure;
a ``: keep-alive`` comment every ``sse_keepalive_seconds`` of silence (the first one also sends the
headers, so a client waiting on a slow first message sees the stream open).

A response that is ``google.api.HttpBody`` streams raw: the first message's ``content_type`` is the
response Content-Type, its ``extensions`` may carry headers and the status (httpbody.py), and each message's
``data`` is written as is.

WebSocket: see ``WebSocketSession``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
from starlette.types import Receive, Send

from .errors import RpcFailure, status_dict
from .httpbody import response_headers
from .jsontext import compact, compact_bytes
from .metadata import metadata_headers

_json_encode = compact

NDJSON = "ndjson"
SSE = "sse"


def dumps(value: Any) -> bytes:
    return compact_bytes(value)


class HttpStreamWriter:
    """Writes one server stream as NDJSON, SSE or raw HttpBody chunks (see module docstring)."""

    __slots__ = (
        "send",
        "mode",
        "encode",
        "seq_field",
        "raw",
        "base_headers",
        "started",
        "count",
        "start_time",
        "closed",
        "initial_metadata",
    )

    def __init__(
        self,
        send: Send,
        mode: str,
        encode: Callable[[Any], Any],
        seq_field: str | None,
        raw: bool,
        base_headers: list[tuple[bytes, bytes]],
        start_time: float,
    ) -> None:
        self.send = send
        self.mode = mode
        self.encode = encode
        self.seq_field = seq_field if mode == SSE else None
        self.raw = raw
        self.base_headers = base_headers
        self.started = False
        self.count = 0
        self.start_time = start_time
        self.closed = False
        self.initial_metadata: Any = ()

    async def on_initial_metadata(self, metadata: Any) -> None:
        """Kept for the HTTP headers, which wait for the first message (or keep-alive), as in grpc-gateway: a call
        that fails before its first message then gets its real HTTP status, not an in-band error after a 200."""
        self.initial_metadata = metadata

    async def _start(self, first: Any) -> None:
        if self.started:
            return
        self.started = True
        if self.raw:
            ct = (getattr(first, "content_type", "") if first is not None else "") or "application/octet-stream"
            content_type = ct.encode("latin-1")
        else:
            content_type = b"text/event-stream; charset=utf-8" if self.mode == SSE else b"application/x-ndjson"
        headers = [(b"content-type", content_type), *self.base_headers]
        status = 200
        if self.raw and first is not None:
            status, extra = response_headers(first)
            headers.extend(extra)
        if self.mode == SSE:
            headers.append((b"cache-control", b"no-cache"))
            headers.append((b"x-accel-buffering", b"no"))
        headers.extend(metadata_headers(self.initial_metadata))
        headers.append((b"x-process-time", f"{time.perf_counter() - self.start_time:.6f}".encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def message(self, msg: Any) -> None:
        if not self.started:
            await self._start(msg)
        if self.raw:
            chunk = msg.data
        elif self.mode == SSE:
            data = compact_bytes(self.encode(msg))
            if self.seq_field is not None:
                chunk = b"id: %d\ndata: %b\n\n" % (getattr(msg, self.seq_field), data)
            else:
                chunk = b"data: " + data + b"\n\n"
        else:
            chunk = b'{"result":' + compact_bytes(self.encode(msg)) + b"}\n"
        self.count += 1
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def keepalive(self) -> None:
        if self.closed:
            return
        if not self.started:
            await self._start(None)
        await self.send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})

    async def fail(self, failure: RpcFailure) -> bool:
        """Write the error in-band; returns False when nothing was sent yet (caller sends an HTTP error)."""
        if not self.started:
            return False
        if self.mode == SSE:
            chunk = b"event: error\ndata: " + dumps(status_dict(failure)) + b"\n\n"
        elif self.raw:
            chunk = b""
        else:
            chunk = b'{"error":' + dumps(status_dict(failure)) + b"}\n"
        self.closed = True
        await self.send({"type": "http.response.body", "body": chunk, "more_body": False})
        return True

    async def finish(self) -> None:
        self.closed = True
        if not self.started:
            await self._start(None)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


class KeepAlive:
    """Sends a comment when nothing was written for ``interval`` seconds. A timer that starts a task only to write
    one, not a task per stream: that task's creation and first step came right after the upstream request, on the
    time to first token of every SSE stream. ``cancel()`` when the stream ends."""

    __slots__ = ("writer", "interval", "loop", "last", "timer", "task")

    def __init__(self, writer: HttpStreamWriter, interval: float) -> None:
        self.writer = writer
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.last = writer.count
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(interval, self._due)

    def _due(self) -> None:
        self.timer = None
        if self.writer.closed:
            return
        if self.writer.count == self.last:
            self.task = self.loop.create_task(self._send())
        else:
            self._again()

    async def _send(self) -> None:
        try:
            await self.writer.keepalive()
        except OSError:
            return
        self._again()

    def _again(self) -> None:
        self.last = self.writer.count
        if not self.writer.closed:
            self.timer = self.loop.call_later(self.interval, self._due)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()


async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Wait for ``http.disconnect`` (the request body has been read already) and report it."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


# -- WebSocket ----------------------------------------------------------------------------------

# Close codes after a failed call; anything else closes 1000 after the {"error": ...} frame.
WS_CLOSE_CODES = {
    grpc.StatusCode.UNAUTHENTICATED: 1008,
    grpc.StatusCode.PERMISSION_DENIED: 1008,
    grpc.StatusCode.UNKNOWN: 1011,
    grpc.StatusCode.INTERNAL: 1011,
    grpc.StatusCode.DATA_LOSS: 1011,
    grpc.StatusCode.UNAVAILABLE: 1013,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 1013,
}


def ws_close_code(code: grpc.StatusCode) -> int:
    return WS_CLOSE_CODES.get(code, 1000)


class WebSocketWriter:
    """Each response message is one text frame with the message JSON (HttpBody: a binary frame)."""

    __slots__ = ("send", "encode", "raw", "closed")

    def __init__(self, send: Send, encode: Callable[[Any], Any], raw: bool) -> None:
        self.send = send
        self.encode = encode
        self.raw = raw
        self.closed = False

    async def message(self, msg: Any) -> None:
        if self.closed:
            return
        if self.raw:
            await self.send({"type": "websocket.send", "bytes": msg.data})
        else:
            await self.send({"type": "websocket.send", "text": _json_encode(self.encode(msg))})

    async def fail(self, failure: RpcFailure) -> None:
        if self.closed:
            return
        self.closed = True
        await self.send({"type": "websocket.send", "text": _json_encode({"error": status_dict(failure)})})
        await self.send(
            {"type": "websocket.close", "code": ws_close_code(failure.code), "reason": failure.message[:120]}
        )

    async def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.send({"type": "websocket.close", "code": 1000})


async def watch_websocket(receive: Receive, on_cancel: Callable[[bool], None]) -> None:
    """After the first frame: ``{"cancel": true}`` or the client closing (``on_cancel(True)``) cancels."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            on_cancel(True)
            return
        if kind == "websocket.receive":
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            try:
                value = json.loads(text) if text else None
            except (ValueError, RecursionError):  # not a cancel request
                continue
            if isinstance(value, dict) and value.get("cancel") is True:
                on_cancel(False)
                return
