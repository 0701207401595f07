"""An httpx transport on aiohttp's client: httpx's API (requests, responses, exceptions) for callers, aiohttp's C
HTTP parser and connection pool underneath.

Measured here (bench/llm, bench/proxy): httpx's own transport (httpcore + h11, pure Python, through anyio) spent
about twice the CPU per streamed response and added ~0.6 ms to the first byte. This transport is faithful, as a
proxy needs: headers go out as given (duplicates and order kept, nothing added: no User-Agent, Accept or
Accept-Encoding of aiohttp's own, no cookies), bodies are neither compressed nor decompressed, request bodies
stream, response bytes are handed over as they arrive, and aiohttp's errors become the httpx exception that says
what happened (a refused connection is ConnectError, a stall ReadTimeout, a body cut short ReadError).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

# Headers aiohttp would otherwise add on its own.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@contextmanager
def _mapped(connecting: bool):
    """aiohttp's exceptions as httpx's; `connecting` while no response head has arrived yet."""
    try:
        yield
    except httpx.HTTPError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
    except TimeoutError as exc:  # aiohttp's sock_read timeout: the upstream went silent (head or body)
        raise httpx.ReadTimeout(str(exc) or "no data from the upstream within the read timeout") from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS handshake failed
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:  # the body broke off (reset, bad chunking)
        raise httpx.ReadError(str(exc) or "response body broken off") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientResponseError as exc:  # a malformed response
        raise httpx.RemoteProtocolError(exc.message or str(exc)) from exc
    except aiohttp.ClientOSError as exc:  # reset while sending or receiving
        raise (httpx.WriteError if connecting else httpx.ReadError)(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives; aclose() ends the exchange (the connection is reused if it was read
    whole)."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(False):
            async for chunk in self._response.content.iter_any():  # whatever arrived, at once
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end returns the connection to the pool; one abandoned midway closes it.
        self._response.release()


class _Upload:
    """A streamed request body that remembers how it failed: aiohttp writes it from a task of its own and reports
    any failure as a broken connection."""

    def __init__(self, stream: AsyncIterable[bytes]):
        self._stream = stream
        self.error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


@dataclass(slots=True)
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    body: httpx.AsyncByteStream  # this module's _Body, or infra/h1.py's for the streaming client

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`max_connections` open connections at most (None: unbounded); idle ones are kept `keepalive_expiry`
    seconds. TLS verification follows httpx's defaults (certifi, SSL_CERT_FILE / SSL_CERT_DIR)."""

    def __init__(self, *, max_connections: int | None = 100, keepalive_expiry: float | None = 5.0, verify: bool = True):
        self._max_connections = max_connections or 0
        self._keepalive = keepalive_expiry if keepalive_expiry is not None else 15.0
        self._ssl = httpx.create_ssl_context(verify=verify)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use, inside the running loop (aiohttp binds to it)
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, keepalive_timeout=self._keepalive, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] | None,
        timeout: dict[str, float | None],
        sni_hostname: str | None = None,
    ) -> RawResponse:
        """One exchange without httpx's Request and Response objects (~0.1 ms a request, which the proxy's
        per-request budget notices): headers as ASGI-style byte pairs both ways. Raises httpx's exceptions."""
        connect, pool = timeout.get("connect"), timeout.get("pool")
        sent = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
        upload: _Upload | None = None
        if content is not None and not isinstance(content, bytes):
            content = upload = _Upload(content)
            sent.popall("transfer-encoding", None)  # aiohttp chunks a body of unknown length itself
        try:
            with _mapped(True):
                response = await self._client().request(
                    method,
                    URL(url, encoded=True),  # sent as given: yarl would requote %2F and the like
                    headers=sent,
                    data=content or None,
                    allow_redirects=False,
                    server_hostname=sni_hostname,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        sock_connect=connect,
                        sock_read=timeout.get("read"),
                        connect=None if connect is None and pool is None else (connect or 0) + (pool or 0),
                    ),
                )
        except httpx.HTTPError:
            if upload is not None and upload.error is not None:
                raise upload.error from None  # the caller's own body failed (aiohttp reports a broken connection)
            raise
        return RawResponse(response.status, response.reason or "", list(response.raw_headers), _Body(response))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            content: bytes | AsyncIterable[bytes] = request.content
        except httpx.RequestNotRead:
            content = request.stream  # type: ignore[assignment]  # an AsyncClient always has an async stream
        raw = await self.send(
            request.method,
            str(request.url),
            request.headers.raw,
            content,
            request.extensions.get("timeout") or {},
            request.extensions.get("sni_hostname"),
        )
        return httpx.Response(
            status_code=raw.status,
            headers=raw.headers,
            stream=raw.body,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": raw.reason.encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            await asyncio.sleep(0)  # lets aiohttp finish closing its transports
