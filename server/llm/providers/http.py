"""HTTP plumbing shared by the HTTP adapters: the clients, status/exception mapping, and SSE reading.

Streams go through a lean HTTP/1.1 client of our own (typecase.server.infra.h1): it halves aiohttp's time from
request to first body bytes, which is on the time to first token of every stream.

SSE is parsed per network read rather than per event (EventParser): every event that arrived in one read is
handed over as one batch, so a fast upstream's burst becomes one downstream message instead of many (no added
latency: a batch is released as soon as its read completes). Until the first token, though, events are handed
out one at a time: the adapter would otherwise decode a whole burst (a fast upstream, or a loop that was busy)
before the first token could go out, ~170 us for 50 chunks (bench/llm/relay.py).
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from typecase.server.infra.h1 import Body, StreamClient
from typecase.server.infra.http import AiohttpTransport, RawResponse

from . import CONTEXT, ERROR, RATE_LIMITED, TIMEOUT, UNAVAILABLE, Timeouts, UpstreamError

MAX_ERROR_BODY = 4096
USER_AGENT = "typecase"
# httpx logs every request at INFO: one line per LLM call is noise (and cost) at relay rates; keep its warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """A provider's connection pool and the most one upstream answer may hold (Settings.llm_*)."""

    max_connections: int
    keepalive_expiry: float  # seconds an idle connection is kept
    max_event_chars: int  # one server-sent event of a stream
    max_response_bytes: int  # the body of a unary answer


class ClientPool:
    """The provider's HTTP clients: an httpx client on the aiohttp-based transport for unary calls
    (typecase.server.infra.http: half the CPU of httpx's own transport, see bench/llm), and for streams the lean
    HTTP/1.1 client (typecase.server.infra.h1), because its first body bytes arrive ~0.17 ms sooner: time to
    first token."""

    def __init__(self, limits: PoolLimits, headers: dict[str, str]):
        self.limits = limits
        self.headers = {"accept-encoding": "identity", **headers}  # SSE is read raw (see SSEReader)
        self.transport = AiohttpTransport(
            max_connections=limits.max_connections, keepalive_expiry=limits.keepalive_expiry
        )
        self.streams = StreamClient(max_connections=limits.max_connections, keepalive_expiry=limits.keepalive_expiry)
        self.http = httpx.AsyncClient(
            transport=self.transport,
            headers=self.headers,
            timeout=None,  # per-request timeouts are passed with each call; first-token and idle ones are ours
            follow_redirects=False,
        )
        # One value per name, a provider's own headers (User-Agent, say) over our defaults.
        stream_headers = {
            "user-agent": USER_AGENT,
            "accept": "text/event-stream",
            **{k.lower(): v for k, v in self.headers.items()},
        }
        self.stream_headers = [(k.encode(), v.encode()) for k, v in stream_headers.items()]

    async def aclose(self) -> None:
        try:
            await self.streams.aclose()
        finally:
            await self.http.aclose()  # closes the transport too


def http_timeout(t: Timeouts) -> httpx.Timeout:
    # read=None: reads are bounded by our own first-token / idle deadlines, which know what is being awaited.
    return httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.connect)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    if (ms := headers.get("retry-after-ms")) is not None:  # OpenAI's finer-grained variant
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def error_message(body: bytes) -> tuple[str, str]:
    """(message, code) from an OpenAI- or Anthropic-style error body, or its raw text."""
    text = body[:MAX_ERROR_BODY].decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text or "(empty body)", ""
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or text), str(err.get("code") or err.get("type") or "")
    return str(err), ""


def status_error(status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
    message, code = error_message(body)
    detail = f"upstream answered {status}: {message}"
    if status == 429:
        return UpstreamError(RATE_LIMITED, detail, status=status, retry_after=retry_after_seconds(headers))
    if status in (408, 504):
        return UpstreamError(TIMEOUT, detail, status=status)
    if status >= 500 or status == 529:  # 529: Anthropic "overloaded"
        return UpstreamError(UNAVAILABLE, detail, status=status, retry_after=retry_after_seconds(headers))
    if "context_length" in code or "context length" in message.lower() or "too long" in message.lower():
        return UpstreamError(CONTEXT, detail, status=status)
    return UpstreamError(ERROR, detail, status=status)


def transport_error(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(TIMEOUT, f"upstream timed out: {type(exc).__name__} {exc}".strip())
    return UpstreamError(UNAVAILABLE, f"upstream connection failed: {type(exc).__name__}: {exc}".strip())


def json_body(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; orjson (~3 us less than json.dumps on a small chat request, on every stream's path), the
    standard library for what orjson refuses (keys that are not strings, integers beyond 64 bits)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@asynccontextmanager
async def open_stream(
    pool: ClientPool, url: httpx.URL | str, body: dict[str, Any], t: Timeouts
) -> AsyncIterator[tuple[RawResponse, float]]:
    """POST and yield (response, first-token deadline) once a 2xx status arrived; closing the block closes it."""
    deadline = asyncio.get_running_loop().time() + t.first_token
    content = json_body(body)
    timeouts = {"connect": t.connect, "read": None, "write": t.connect, "pool": t.connect}  # http_timeout's
    try:
        async with asyncio.timeout_at(deadline):
            response = await pool.streams.send("POST", str(url), pool.stream_headers, content, timeouts)
    except TimeoutError:
        raise UpstreamError(TIMEOUT, f"no answer from the upstream within {t.first_token:g}s") from None
    except httpx.HTTPError as exc:
        raise transport_error(exc) from exc
    try:
        if response.status >= 400:
            error_body = b""
            try:
                async with asyncio.timeout_at(deadline):
                    async for chunk in response.body:
                        error_body += chunk
                        if len(error_body) >= MAX_ERROR_BODY:
                            break
            except (TimeoutError, httpx.HTTPError):
                pass
            raise status_error(response.status, error_body, httpx.Headers(response.headers))
        yield response, deadline
    finally:
        await response.body.aclose()


async def post_json(pool: ClientPool, url: str | httpx.URL, body: dict[str, Any], t: Timeouts) -> dict[str, Any]:
    """A unary POST whose whole answer must arrive within the first-token timeout."""
    try:
        async with asyncio.timeout(t.first_token):
            request = pool.http.build_request("POST", url, content=json_body(body), timeout=http_timeout(t))
            response = await pool.http.send(request, stream=True)
            try:
                content = await _read_capped(response, pool.limits.max_response_bytes)
            finally:
                await response.aclose()
    except TimeoutError:
        raise UpstreamError(TIMEOUT, f"no answer from the upstream within {t.first_token:g}s") from None
    except httpx.HTTPError as exc:
        raise transport_error(exc) from exc
    if response.status_code >= 400:
        raise status_error(response.status_code, content, response.headers)
    try:
        data = json.loads(content)
    except ValueError:
        raise UpstreamError(UNAVAILABLE, "the upstream answered with malformed JSON") from None
    if not isinstance(data, dict):
        raise UpstreamError(UNAVAILABLE, "the upstream answered with an unexpected JSON document")
    return data


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The (decoded) body, failing as soon as it passes `limit` bytes; an error answer's is cut at MAX_ERROR_BODY."""
    declared = response.headers.get("content-length", "")
    if response.status_code >= 400:
        limit = MAX_ERROR_BODY
    elif declared.isdigit() and int(declared) > limit:
        raise too_large(f"the upstream's answer ({declared} bytes)", limit)
    parts, size = [], 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            if response.status_code >= 400:
                break
            raise too_large("the upstream's answer", limit)
    return b"".join(parts)


def too_large(what: str, limit: int) -> UpstreamError:
    return UpstreamError(UNAVAILABLE, f"{what} is over the limit of {limit} bytes (TYPECASE_LLM_MAX_RESPONSE_BYTES)")


class Event:
    """One server-sent event: its type ("message" unless named) and its data lines joined by newlines."""

    __slots__ = ("event", "data")

    def __init__(self, event: str, data: str):
        self.event = event
        self.data = data


class EventParser:
    """Server-sent events (the WHATWG event-stream format) from text as it arrives, a read at a time.

    A read is split on blank lines at once; an event that is one `data: ` line (every event of an OpenAI-style
    stream) costs one slice. It replaced httpx-sse's line and event decoders, a Python call per line of every
    event. Events are dispatched as httpx-sse did: at a blank line, when the event had any field (an event without
    data has data ""). Comments, `id` and `retry` are read and dropped (nothing here reconnects).

    An event may grow to `max_event_chars`: past that the stream fails, as an upstream that never ends an event
    would otherwise fill memory. One still arriving is prepended to the next read while short; once longer than
    LONG_EVENT its reads are kept in a list and joined when a blank line comes, not re-copied on every read.
    """

    LONG_EVENT = 65536

    def __init__(self, max_event_chars: int) -> None:
        self._rest = ""  # after the last blank line: an event still arriving
        self._long: list[str] = []  # or, when it is long, its reads (none empty)
        self._long_size = 0  # their characters
        self._max = max_event_chars
        self._long_at = min(self.LONG_EVENT, max_event_chars)
        self._cr = False  # the read ended in "\r", which may be half of a "\r\n"

    def feed(self, text: str, final: bool = False) -> list[Event]:
        if self._cr:
            text, self._cr = "\r" + text, False
        if "\r" in text:
            if text[-1] == "\r" and not final:
                text, self._cr = text[:-1], True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if self._long:
            if not final and "\n\n" not in text and not (text[:1] == "\n" and self._long[-1][-1] == "\n"):
                self._grow(text)  # still no blank line
                return []
            text = "".join(self._long) + text
            self._long, self._long_size = [], 0
        elif self._rest:
            text = self._rest + text
        blocks = text.split("\n\n")
        self._rest = blocks.pop()
        if len(self._rest) > self._long_at:
            self._grow(self._rest)
            self._rest = ""
        events = []
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                events.append(Event("message", block[6:]))
            elif block:
                self._parse(block, events)
        return events

    def _grow(self, text: str) -> None:
        if text:
            self._long.append(text)
            self._long_size += len(text)
        if self._long_size > self._max:
            raise UpstreamError(
                UNAVAILABLE,
                f"the upstream sent an event longer than {self._max} characters (TYPECASE_LLM_MAX_STREAM_EVENT_CHARS)",
            )

    @staticmethod
    def _parse(block: str, events: list[Event]) -> None:
        """The general case: every field, and the blank lines a block starts with (a run of three or more)."""
        data: list[str] = []
        kind, fields = "", False
        for line in (*block.split("\n"), ""):
            if not line:  # a blank line ends the event
                if fields:
                    events.append(Event(kind or "message", "\n".join(data)))
                kind, data, fields = "", [], False
                continue
            if line[0] == ":":
                continue  # a comment
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
            elif name not in ("id", "retry"):
                continue  # an unknown field is ignored, and makes no event
            fields = True


class SSEReader:
    """Reads a streamed response as batches of SSE events, one batch per network read.

    Until `started` is set (by the adapter, on the first token) reads share the first-token deadline, and events
    are handed out one per batch; after that each read may take at most `idle` seconds, and a batch is everything
    a read completed.
    """

    def __init__(self, response: RawResponse, deadline: float, idle: float, max_event_chars: int):
        body: AsyncIterable[bytes] = response.body
        if response.header(b"content-encoding") not in (None, b"identity"):
            # compressed although we asked for identity: httpx decodes it
            body = httpx.Response(response.status, headers=response.headers, stream=response.body).aiter_bytes()
        self._read = body.read if isinstance(body, Body) else _Reads(body).read
        self._text = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._events = EventParser(max_event_chars)
        self._deadline = deadline
        self._idle = idle
        self._loop = asyncio.get_running_loop()
        self._done = False
        self._pending: list[Event] = []  # parsed, not handed out yet: a burst that came before the first token
        self.started = False

    async def next_batch(self) -> list[Event] | None:
        """The next non-empty batch, or None at the end of the body. Until `started`, one event per batch."""
        while True:
            if self._pending:
                if not self.started:
                    return [self._pending.pop(0)]
                batch, self._pending = self._pending, []
                return batch
            if self._done:
                return None
            deadline = self._loop.time() + self._idle if self.started else self._deadline
            try:
                data = await self._read(deadline)
            except TimeoutError:
                if self.started:
                    raise UpstreamError(
                        TIMEOUT, f"the upstream stalled for more than {self._idle:g}s mid-stream"
                    ) from None
                raise UpstreamError(TIMEOUT, "the upstream sent no token before the first-token timeout") from None
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            if data:
                self._pending = self._events.feed(self._text(data))
            else:
                self._done = True
                self._pending = self._events.feed(self._text(b"", True), final=True)

    async def drain(self, timeout: float = 1.0) -> None:
        """Read what is left of the body after the end-of-stream event (normally just the chunked terminator,
        already buffered) so the connection goes back to the pool instead of being closed."""
        if self._done:
            return
        self._done = True
        deadline = self._loop.time() + timeout
        try:
            while await self._read(deadline):
                pass
        except (TimeoutError, httpx.HTTPError):
            pass


class _Reads:
    """Any async iterable of bytes read like h1.Body (a test's stream, httpx's decoded one)."""

    def __init__(self, raw: AsyncIterable[bytes]):
        self._chunks = aiter(raw)

    async def read(self, deadline: float) -> bytes:
        async with asyncio.timeout_at(deadline):
            while (chunk := await anext(self._chunks, None)) is not None:
                if chunk:
                    return chunk
            return b""
