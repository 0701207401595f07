"""HTTP plumbing shared by the HTTP adapters: the clients, status/exception mapping, and SSE reading.

Streams go through a lean HTTP/1.1 client of our own (typecase.server.infra.h1): it halves aiohttp's time from
request to first body bytes, which is on the time to first token of every stream.

SSE is parsed with httpx-sse's decoders, but per network read rather than per event: every event that arrived in
one read is handed over as one batch, so a fast upstream's burst becomes one downstream message instead of many
(no added latency: a batch is released as soon as its read completes). Until the first token, though, events are
decoded one at a time: a read holding a whole burst (a fast upstream, or a loop that was busy) would otherwise be
parsed to its end before the first token could go out, ~170 us for 50 chunks (bench/llm/relay.py).
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
from typing import Any

import httpx
import orjson
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from typecase.server.infra.h1 import StreamClient
from typecase.server.infra.http import AiohttpTransport, RawResponse

from . import CONTEXT, ERROR, RATE_LIMITED, TIMEOUT, UNAVAILABLE, Timeouts, UpstreamError

MAX_ERROR_BODY = 4096
USER_AGENT = "typecase"
# httpx logs every request at INFO: one line per LLM call is noise (and cost) at relay rates; keep its warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)


class ClientPool:
    """The provider's HTTP clients: an httpx client on the aiohttp-based transport for unary calls
    (typecase.server.infra.http: half the CPU of httpx's own transport, see bench/llm), and for streams the lean
    HTTP/1.1 client (typecase.server.infra.h1), because its first body bytes arrive ~0.17 ms sooner: time to
    first token."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float, headers: dict[str, str]):
        self.headers = {"accept-encoding": "identity", **headers}  # SSE is read raw (see SSEReader)
        self.transport = AiohttpTransport(max_connections=max_connections, keepalive_expiry=keepalive_expiry)
        self.streams = StreamClient(max_connections=max_connections, keepalive_expiry=keepalive_expiry)
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
            response = await pool.http.post(url, json=body, timeout=http_timeout(t))
    except TimeoutError:
        raise UpstreamError(TIMEOUT, f"no answer from the upstream within {t.first_token:g}s") from None
    except httpx.HTTPError as exc:
        raise transport_error(exc) from exc
    if response.status_code >= 400:
        raise status_error(response.status_code, response.content, response.headers)
    try:
        data = response.json()
    except ValueError:
        raise UpstreamError(UNAVAILABLE, "the upstream answered with malformed JSON") from None
    if not isinstance(data, dict):
        raise UpstreamError(UNAVAILABLE, "the upstream answered with an unexpected JSON document")
    return data


async def _text(raw: AsyncIterable[bytes]) -> AsyncIterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    async for chunk in raw:
        if text := decoder.decode(chunk):
            yield text


class SSEReader:
    """Reads a streamed response as batches of SSE events, one batch per network read.

    Until `started` is set (by the adapter, on the first token) reads share the first-token deadline; after that
    each read may take at most `idle` seconds.
    """

    def __init__(self, response: RawResponse, deadline: float, idle: float):
        if response.header(b"content-encoding") in (None, b"identity"):
            self._chunks = _text(response.body)
        else:  # compressed although we asked for identity: httpx decodes it
            decoded = httpx.Response(response.status, headers=response.headers, stream=response.body)
            self._chunks = decoded.aiter_text()
        self._lines = SSELineDecoder()
        self._decoder = SSEDecoder()
        self._deadline = deadline
        self._idle = idle
        self._loop = asyncio.get_running_loop()
        self._done = False
        self._pending = ""  # read, not decoded yet: the events after the first of a read, before the first token
        self.started = False

    async def next_batch(self) -> list[ServerSentEvent] | None:
        """The next non-empty batch, or None at the end of the body. Until `started`, one event per batch."""
        while not self._done:
            if self._pending:
                text, self._pending = self._pending, ""
                if not self.started:
                    text, self._pending = _first_event(text)
                if batch := self._decode(self._lines.decode(text)):
                    return batch
                continue
            deadline = self._loop.time() + self._idle if self.started else self._deadline
            try:
                async with asyncio.timeout_at(deadline):
                    text = await anext(self._chunks)
            except StopAsyncIteration:
                self._done = True
                return self._decode(self._lines.flush()) or None
            except TimeoutError:
                if self.started:
                    raise UpstreamError(
                        TIMEOUT, f"the upstream stalled for more than {self._idle:g}s mid-stream"
                    ) from None
                raise UpstreamError(TIMEOUT, "the upstream sent no token before the first-token timeout") from None
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            if not self.started:
                text, self._pending = _first_event(text)
            batch = self._decode(self._lines.decode(text))
            if batch:
                return batch
        return None

    async def drain(self, timeout: float = 1.0) -> None:
        """Read what is left of the body after the end-of-stream event (normally just the chunked terminator,
        already buffered) so the connection goes back to the pool instead of being closed."""
        if self._done:
            return
        self._done = True
        try:
            async with asyncio.timeout(timeout):
                async for _ in self._chunks:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass

    def _decode(self, lines: list[str]) -> list[ServerSentEvent]:
        batch = []
        for line in lines:
            event = self._decoder.decode(line)
            if event is not None:
                batch.append(event)
        return batch


def _first_event(text: str) -> tuple[str, str]:
    """`text` cut after its first blank line ("\\n\\n", what OpenAI-style servers send): (first event, the rest).
    A text without one stays whole; either way the line decoder sees every byte once, in order."""
    end = text.find("\n\n")
    if end < 0 or end + 2 == len(text):
        return text, ""
    return text[: end + 2], text[end + 2 :]
