"""HTTP request: {"method", "url", "headers", "query", "body", "timeout_ms"}; every string may be a template.
`query` is merged into the URL's own query string (a name in both takes the node's value). Outputs
`status_code`, `headers`, `body` (text) and `json` (parsed when the body is JSON).

SSRF guard (typecase.server.infra.ssrf): the host is resolved first and every address it resolves to must be
public unless the host or the address is in the `flow_http_allowed_hosts` setting (hostnames, `*.suffix` patterns,
IPs or CIDRs). The request then goes to the checked address itself (Host header and TLS SNI keep the name), so a
second DNS answer cannot redirect it; redirects are followed by hand, each hop checked the same way, and a hop to
another origin (scheme, host, port) drops the credential headers, as browsers and httpx do: a redirect must not
hand the node's API key to whoever the first server points at."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from typecase.server.flow.nodes.base import (
    NodeContext,
    NodeResult,
    NodeSpec,
    Problem,
    as_int,
    node_error,
    required,
    text_params,
)
from typecase.server.infra.ssrf import AddressPolicy, Blocked
from typecase.v1 import flow_pb2

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REDIRECTS = (301, 302, 303, 307, 308)
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})
DEFAULT_PORTS = {"http": 80, "https": 443}

__all__ = ["Blocked", "HttpGuard", "HttpRequest"]


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes
    encoding: str | None


def origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0)


def keeps_credentials(before: httpx.URL, after: httpx.URL) -> bool:
    """A redirect keeps credentials on the same origin, and on the upgrade of http to https on the same host
    (default ports), like httpx."""
    if origin(before) == origin(after):
        return True
    return (
        (before.scheme, after.scheme) == ("http", "https")
        and before.host == after.host
        and before.port in (None, 80)
        and after.port in (None, 443)
    )


class HttpGuard:
    """The policy and the shared client of http nodes."""

    def __init__(self, settings):
        self.settings = settings
        self.policy = AddressPolicy(settings.flow_http_allowed_hosts, "flow_http_allowed_hosts")
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to; raises Blocked when the host may not be reached."""
        return await self.policy.resolve(host, port)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        params: dict[str, str],
        content: bytes | None,
        json_body: Any,
        timeout: float,
        max_bytes: int,
    ) -> Reply:
        target = httpx.URL(url)
        if params:
            target = target.copy_merge_params(params)
        sent = {k: v for k, v in headers.items() if k.lower() != "host"}
        for _ in range(self.settings.flow_http_max_redirects + 1):
            if target.scheme not in ("http", "https") or not target.host:
                raise ValueError(f"not an http(s) URL: {str(target)[:200]}")
            port = target.port or DEFAULT_PORTS[target.scheme]
            address = await self.resolve(target.host, port)
            pinned = target.copy_with(host=address)
            host_header = target.host if target.port is None else f"{target.host}:{target.port}"
            extensions: dict[str, Any] = {
                "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
            }
            if target.scheme == "https":
                extensions["sni_hostname"] = target.host
            request = self.client.build_request(
                method,
                pinned,
                headers={**sent, "host": host_header},
                content=content,
                json=json_body if content is None else None,
                extensions=extensions,
            )
            response = await self.client.send(request, stream=True)
            try:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    following = target.join(response.headers["location"])
                    if not keeps_credentials(target, following):
                        sent = {k: v for k, v in sent.items() if k.lower() not in CREDENTIAL_HEADERS}
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method, content, json_body = "GET", None, None
                        sent = {k: v for k, v in sent.items() if k.lower() not in BODY_HEADERS}
                    target = following
                    continue
                body = bytearray()
                async for piece in response.aiter_raw():
                    body += piece
                    if len(body) > max_bytes:
                        raise ValueError(f"the response is larger than {max_bytes} bytes")
                return Reply(response.status_code, dict(response.headers), bytes(body), response.charset_encoding)
            finally:
                await response.aclose()
        raise ValueError(f"more than {self.settings.flow_http_max_redirects} redirects")


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


class HttpRequest(NodeSpec):
    type = flow_pb2.NODE_TYPE_HTTP_REQUEST
    kind = "http_request"
    secret_params = ("headers",)

    def validate(self, params):
        problems = required(params, "url")
        method = str(params.get("method") or "GET").upper()
        if method not in METHODS:
            problems.append(Problem("INVALID_PARAM", f"method must be one of {', '.join(METHODS)}", "method"))
        for key in ("headers", "query"):
            if params.get(key) is not None and not isinstance(params.get(key), dict):
                problems.append(Problem("INVALID_PARAM", f"{key} must be an object", key))
        return problems

    def outputs(self, params):
        return {"status_code", "headers", "body", "json"}

    def template_params(self, params):
        return text_params(params, "url", "headers", "query", "body")

    async def run(self, ctx: NodeContext) -> NodeResult:
        guard: HttpGuard = ctx.services.http
        settings = ctx.services.settings
        method = str(ctx.params.get("method") or "GET").upper()
        url = (await ctx.render_async(ctx.params.get("url"))).strip()
        headers = _strings(await ctx.resolve_async(ctx.params.get("headers") or {}))
        query = _strings(await ctx.resolve_async(ctx.params.get("query") or {}))
        body = await ctx.resolve_async(ctx.params.get("body")) if ctx.params.get("body") not in (None, "") else None
        content, json_body = None, None
        if isinstance(body, (dict, list)):
            json_body = body
        elif body is not None:
            content = str(body).encode()
        timeout = min(
            as_int(ctx.params.get("timeout_ms"), int(settings.flow_http_timeout_seconds * 1000)) / 1000,
            settings.flow_http_timeout_seconds,
        )
        inputs = {"method": method, "url": url, "query": query, "headers": headers}  # redacted by the engine
        try:
            response = await guard.request(
                method,
                url,
                headers=headers,
                params=query,
                content=content,
                json_body=json_body,
                timeout=max(timeout, 0.001),
                max_bytes=settings.flow_http_max_response_bytes,
            )
        except Blocked as exc:
            raise node_error(
                f"http request refused: {exc}",
                ctx.node_id,
                "PERMISSION_DENIED",
                grpc.StatusCode.PERMISSION_DENIED,
                url=url[:500],
            ) from None
        except httpx.TimeoutException:
            raise node_error(
                f"http request to {url[:200]} timed out after {timeout:g}s",
                ctx.node_id,
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
            ) from None
        except (httpx.HTTPError, ConnectionError, ValueError) as exc:
            raise node_error(f"http request failed: {exc}", ctx.node_id, code=grpc.StatusCode.UNAVAILABLE) from None
        try:
            text = response.content.decode(response.encoding or "utf-8", errors="replace")
        except LookupError:
            text = response.content.decode("utf-8", errors="replace")
        parsed = None
        if "json" in response.headers.get("content-type", "") or text[:1] in ("{", "["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        return NodeResult(
            outputs={"status_code": response.status_code, "headers": response.headers, "body": text, "json": parsed},
            inputs=inputs,
        )
