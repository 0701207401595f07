"""Cross-origin access: which browser origins may call the API, over plain requests, streams and WebSockets.

Plain HTTP (preflight included) is Starlette's CORSMiddleware. WebSockets get no CORS from browsers (any page may
open one to any host), so the Origin header is checked here: a browser's WebSocket from another origin is refused
with 403 before the handshake unless that origin is allowed. Clients that send no Origin (SDKs, curl) and pages
served by this server itself (the console: Origin matches Host) are not affected.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# Headers a browser script may read from our responses (trace id, timing, stream resumption, retry hints).
EXPOSED_HEADERS = (
    "x-trace-id",
    "x-process-time",
    "retry-after",
    "grpc-status",
    "grpc-message",
    "content-disposition",
    "content-range",  # ranged downloads (httpbody.py): a script reads which bytes it got and the file's size
    "accept-ranges",
    "x-file-size",
)


def with_cors(
    app: ASGIApp, origins: Sequence[str], methods: Sequence[str], headers: Sequence[str], max_age: int
) -> ASGIApp:
    guarded = WebSocketOriginGuard(app, origins)
    if not origins:
        return guarded
    return CORSMiddleware(
        guarded,
        allow_origins=list(origins),
        allow_methods=list(methods),
        allow_headers=list(headers),
        expose_headers=list(EXPOSED_HEADERS),
        max_age=max_age,
        allow_credentials=False,
    )


class WebSocketOriginGuard:
    def __init__(self, app: ASGIApp, origins: Sequence[str]):
        self.app = app
        self.any_origin = "*" in origins
        self.origins = {o.rstrip("/").lower() for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self._allowed(scope):
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or ())
        origin = headers.get(b"origin")
        if origin is None or self.any_origin:
            return True
        origin_text = origin.decode("latin-1").rstrip("/").lower()
        if origin_text in self.origins:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        return bool(host) and urlsplit(origin_text).netloc == host
