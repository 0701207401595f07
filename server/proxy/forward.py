"""The pass-through ASGI app: every path and method forwarded to the upstream base URL, streaming both ways.

Per request: the body is streamed to the upstream as the client sends it (a body that arrived whole is sent as is;
only a body a system prompt rule must rewrite is read in full first, within the size limit); the response is
streamed back chunk by chunk as the upstream produces it (as received: compressed bytes stay compressed, and an SSE
event reaches the client the moment it leaves the upstream). Hop-by-hop headers are removed both ways; all others
pass, but for the caller's dealings with Typecase (headers.py). Before anything is read or sent, the request must
carry an access key when one is required (access.py: 401/403/429) and its path must not climb out of the upstream
base URL's path (a `.` or `..` segment, also percent-encoded or behind a backslash: 400, as the upstream would
otherwise resolve `/v1/../admin` against its own tree). Failures before the response starts become JSON errors:
413 (body too large), 502 (upstream unreachable or broken), 504 (upstream timeout). A client that disconnects
closes the upstream request at once, so an abandoned stream stops costing tokens.

Requests go straight to one shared transport (infra/http.py, on aiohttp, raising httpx's exceptions) as byte
header pairs, rather than through an httpx.AsyncClient: a client keeps a cookie jar, which in a proxy would carry
one caller's cookies into another caller's requests, merges default headers the caller never sent (User-Agent,
Accept-Encoding), and logs a line per request; and httpx's Request/Response objects cost ~0.1 ms a request.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from typecase.server.admin.logstream import ERROR, INFO, WARNING, LogHub
from typecase.server.infra.http import AiohttpTransport, RawResponse
from typecase.server.proxy import access
from typecase.server.proxy import headers as hop
from typecase.server.proxy.stats import RequestRecord, RequestStats, UsageScanner
from typecase.server.proxy.system_prompt import SystemPromptRule

SOURCE_PROXY = 3  # typecase.v1.RequestSource.REQUEST_SOURCE_PROXY
LOGGER = "typecase.proxy.access"
_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,256})"')
_SEGMENT_SEPARATORS = re.compile(r"[/\\]")
_SECRETS = re.compile(
    rb"(sk-[A-Za-z0-9_\-]{8,}|tc_[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._\-~+/=]{8,}|"
    rb'"(?:api[_-]?key|x-api-key|authorization|token|secret)"\s*:\s*"[^"]*")'
)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What one request needs, as one immutable snapshot: a config update swaps the whole object."""

    base_url: str
    preserve_host: bool
    forward_credentials: bool
    upstream_api_key: bytes | None
    custom_headers: list[tuple[bytes, bytes]]
    rule: SystemPromptRule
    max_request_bytes: int
    timeout: dict[str, float | None]  # httpx.Timeout.as_dict(): None is no limit
    error_body_bytes: int
    access_required: bool
    forward_client_address: bool

    @property
    def credentials_pass_upstream(self) -> bool:
        """The client's own x-api-key / authorization go upstream (so they cannot carry the access key)."""
        return self.upstream_api_key is None and self.forward_credentials

    @classmethod
    def from_values(cls, v: dict, listen_host: str) -> ProxyConfig:
        """`listen_host`: where the listener is bound now (proxy_host in `v` may be a change pending a restart)."""
        key = v["proxy_upstream_api_key"]
        return cls(
            base_url=str(v["proxy_target_base_url"]).rstrip("/"),
            preserve_host=bool(v["proxy_preserve_host"]),
            forward_credentials=bool(v["proxy_forward_client_credentials"]),
            upstream_api_key=key.encode() if key else None,
            custom_headers=[(k.lower().encode(), str(val).encode()) for k, val in v["proxy_custom_headers"].items()],
            rule=SystemPromptRule(
                enabled=bool(v["proxy_system_prompt_enabled"]),
                mode=v["proxy_system_prompt_mode"],
                text=v["proxy_system_prompt_text"],
                marker=v["proxy_system_prompt_marker"],
            ),
            max_request_bytes=int(v["proxy_max_request_bytes"]),
            timeout=httpx.Timeout(
                connect=v["proxy_connect_timeout_seconds"],
                read=v["proxy_read_timeout_seconds"],
                write=v["proxy_write_timeout_seconds"],
                pool=v["proxy_pool_timeout_seconds"],
            ).as_dict(),
            error_body_bytes=int(v["proxy_error_body_bytes"]),
            access_required=access.access_required(v["proxy_access_keys"], bool(key), listen_host),
            forward_client_address=bool(v["proxy_forward_client_address"]),
        )


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def climbs_out(path: str) -> bool:
    """True when the (percent-decoded) path has a `.` or `..` segment, with / or \\ as separators."""
    return any(segment in (".", "..") for segment in _SEGMENT_SEPARATORS.split(path))


def redact(body: bytes) -> str:
    return _SECRETS.sub(b"[redacted]", body).decode("utf-8", "replace")


def _find_model(data: bytes) -> str:
    match = _MODEL.search(data)
    if match is None:
        return ""
    try:
        return json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return match.group(1).decode("utf-8", "replace")


class ProxyApp:
    def __init__(
        self,
        config: ProxyConfig,
        transport: AiohttpTransport,
        stats: RequestStats,
        logs: LogHub,
        verifier: access.KeyVerifier | None = None,
    ):
        self.config = config
        self.transport = transport
        self.stats = stats
        self.logs = logs
        self.verifier = verifier
        self._own_credential = verifier.is_own_credential if verifier is not None else _typecase_key

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:  # WebSocket: not proxied
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        cfg = self.config
        method: str = scope["method"]
        path: str = scope["path"]
        raw_headers = scope["headers"]
        trace_id = ""
        declared: int | None = None
        for name, value in raw_headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif name == b"x-trace-id":
                trace_id = value.decode("latin-1")[:128]
        record = RequestRecord(trace_id or secrets.token_hex(8), time.time(), SOURCE_PROXY, method, path)
        self.stats.begin()
        error: tuple[str, int, str] | None = None
        message = ""
        response: RawResponse | None = None
        disconnect: _Disconnect | None = None
        note = None
        try:
            if cfg.access_required:
                denial = await access.check(
                    self.verifier, raw_headers, cfg.credentials_pass_upstream, scope.get("client")
                )
                if denial is not None:
                    error, message, record.status = (denial.reason, 0, ""), denial.message, denial.status
                    await _json_error(
                        send, denial.status, denial.reason, denial.message, "authentication_error", denial.retry_after
                    )
                    return
            if climbs_out(path):
                error, record.status = ("INVALID_ARGUMENT", 0, ""), 400
                message = "the path must not have '.' or '..' segments (plain or percent-encoded)"
                await _json_error(send, 400, "INVALID_ARGUMENT", message, "invalid_request_error")
                return
            if declared is not None and (declared < 0 or declared > cfg.max_request_bytes):
                raise BodyTooLarge
            content, content_length, note = await self._request_body(cfg, method, path, receive, record)
            if isinstance(content, bytes):  # the body is in: watch the client while the upstream thinks
                disconnect = _Disconnect(receive)
            query = scope.get("query_string", b"")
            url = cfg.base_url + scope.get("raw_path", path.encode()).decode("latin-1")
            if query:
                url += "?" + query.decode("latin-1")
            headers = hop.request_headers(
                raw_headers,
                preserve_host=cfg.preserve_host,
                forward_credentials=cfg.forward_credentials,
                upstream_api_key=cfg.upstream_api_key,
                custom=cfg.custom_headers,
                content_length=content_length,
                own_credential=self._own_credential,
                client_address=scope["client"][0].encode()
                if cfg.forward_client_address and scope.get("client")
                else None,
            )
            try:
                response = await self.transport.send(method, url, headers, content, cfg.timeout)
            except httpx.TimeoutException as exc:
                error = ("UPSTREAM_TIMEOUT", 0, "")
                message = f"upstream timed out ({type(exc).__name__})"
                record.status = 504
                await _json_error(send, 504, "UPSTREAM_TIMEOUT", message)
                return
            except (httpx.HTTPError, OSError) as exc:
                error = ("UPSTREAM_UNAVAILABLE", 0, "")
                message = f"upstream unreachable: {type(exc).__name__}: {exc}"[:500]
                record.status = 502
                await _json_error(send, 502, "UPSTREAM_UNAVAILABLE", message)
                return
            status = response.status
            record.status = status
            record.stream = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
            await send(
                {"type": "http.response.start", "status": status, "headers": hop.response_headers(response.headers)}
            )
            if disconnect is None:
                disconnect = _Disconnect(receive)
            error_head = bytearray() if status >= 400 and cfg.error_body_bytes else None
            usage = UsageScanner()
            sent = 0
            try:
                async for chunk in response.body:
                    if record.ttfb is None:
                        record.ttfb = time.perf_counter() - started
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    sent += len(chunk)
                    usage.feed(chunk)
                    if error_head is not None and len(error_head) < cfg.error_body_bytes:
                        error_head += chunk[: cfg.error_body_bytes - len(error_head)]
            except httpx.HTTPError as exc:  # the upstream broke mid-body: the client sees a truncated response
                error = ("UPSTREAM_ERROR", status, "")
                message = f"upstream response broken after {sent} bytes: {type(exc).__name__}"
                return  # without the final empty chunk: the client must not take it for a complete body
            finally:
                record.response_bytes = sent
                record.prompt_tokens, record.completion_tokens = usage.prompt, usage.completion
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if record.ttfb is None:
                record.ttfb = time.perf_counter() - started
            if status >= 400:
                error = (_reason_for(status), status, redact(bytes(error_head or b"")))
                message = f"upstream answered {status}"
        except BodyTooLarge:
            error = ("PAYLOAD_TOO_LARGE", 0, "")
            message = f"request body over the {cfg.max_request_bytes}-byte limit"
            record.status = 413
            await _json_error(send, 413, "PAYLOAD_TOO_LARGE", message)
        except ClientGone:
            error, message, record.status = ("CLIENT_CLOSED", 0, ""), "client disconnected", 499
        except asyncio.CancelledError:
            if disconnect is None or not disconnect.gone:
                raise  # a shutdown, not the client leaving
            _this_task().uncancel()
            error, message, record.status = ("CLIENT_CLOSED", 0, ""), "client disconnected", 499
        finally:
            if disconnect is not None:
                disconnect.close()
            if response is not None:
                await response.body.aclose()
            if note is not None:
                note()
            record.latency = time.perf_counter() - started
            if record.status == 0:
                record.status = 500
            self.stats.finish(record, error, message)
            self._access_line(record, error, message)

    async def _request_body(self, cfg: ProxyConfig, method: str, path: str, receive, record: RequestRecord):
        """(content to send, replacement Content-Length or None, callback noting size and model in the record)."""
        limit = cfg.max_request_bytes
        first = await receive()
        if first["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = first.get("body", b"")
        more = first.get("more_body", False)
        rewrite = cfg.rule.applies_to(method, path)
        if more and rewrite:  # the rule needs the whole document
            parts = [body]
            size = len(body)
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                parts.append(chunk)
                more = message.get("more_body", False)
            body, more = b"".join(parts), False
        if not more:
            if len(body) > limit:
                raise BodyTooLarge
            new = cfg.rule.rewrite(path, body) if rewrite else None
            sent = new if new is not None else body
            model = _find_model(sent) if sent else ""

            def note_whole() -> None:
                record.request_bytes = len(sent)
                record.model = model

            return sent, (len(new) if new is not None else None), note_whole
        # Streamed: forwarded chunk by chunk as it arrives, counted against the limit, sniffed for the model.
        size, model = 0, ""

        async def stream() -> AsyncIterator[bytes]:
            nonlocal size, model
            chunk = body
            tail = b""
            more_body = True
            while True:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                if not model and chunk:
                    model = _find_model(tail + chunk)
                    tail = chunk[-300:]
                if chunk:
                    yield chunk
                if not more_body:
                    return
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                more_body = message.get("more_body", False)

        def note_streamed() -> None:
            record.request_bytes = size
            record.model = model

        return stream(), None, note_streamed

    def _access_line(self, r: RequestRecord, error: tuple[str, int, str] | None, message: str) -> None:
        level = INFO if r.status < 400 else ERROR if r.status >= 500 else WARNING
        fields = {
            "source": "proxy",
            "method": r.method,
            "path": r.path,
            "status": r.status,
            "model": r.model,
            "ttfb_ms": round(r.ttfb * 1000, 3) if r.ttfb is not None else None,
            "latency_ms": round(r.latency * 1000, 3),
            "request_bytes": r.request_bytes,
            "response_bytes": r.response_bytes,
            "stream": r.stream,
        }
        if error is not None:
            fields["reason"] = error[0]
            if error[1]:
                fields["upstream_status"] = error[1]
        text = f"{r.method} {r.path} {r.status}"
        if r.model:
            text += f" {r.model}"
        text += f" {r.latency * 1000:.1f}ms"
        if error is not None:
            text += f" {error[0]}: {message}"
        self.logs.publish(level, LOGGER, text, r.trace_id, fields)


class _Disconnect:
    """Watches for the client going away once its body is in; while armed, that cancels the request task, so a
    wait on a silent upstream ends at once and the upstream connection is closed."""

    __slots__ = ("task", "watcher", "armed", "gone")

    def __init__(self, receive):
        self.task = _this_task()
        self.armed = True
        self.gone = False
        self.watcher = asyncio.ensure_future(receive())
        self.watcher.add_done_callback(self._done)

    def _done(self, watcher: asyncio.Future) -> None:
        if watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result()["type"] == "http.disconnect":
            self.gone = True
            if self.armed:
                self.task.cancel()

    def close(self) -> None:
        self.armed = False
        if not self.watcher.done():
            self.watcher.cancel()


def _this_task() -> asyncio.Task:
    """The task running this request (an ASGI request always runs in one)."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("the proxy handles a request outside a task")
    return task


def _reason_for(status: int) -> str:
    if status == 429:
        return "UPSTREAM_RATE_LIMITED"
    if status in (502, 503, 529):
        return "UPSTREAM_UNAVAILABLE"
    if status == 504:
        return "UPSTREAM_TIMEOUT"
    return "UPSTREAM_ERROR"


def _typecase_key(value: str) -> bool:
    return value.startswith("tc_")


async def _json_error(
    send, status: int, reason: str, message: str, kind: str = "proxy_error", retry_after: float | None = None
) -> None:
    body = json.dumps({"type": "error", "error": {"type": kind, "code": reason, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, int(retry_after + 0.999))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
